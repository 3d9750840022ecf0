"""Artifacts of a run: the patch (safetensors), report.json/.md/.html and gate.lock."""
