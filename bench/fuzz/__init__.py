"""Fuzzing the language commands with mutated example policies (see engine.py and run.py)."""
