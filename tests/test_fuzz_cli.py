"""A seeded fuzz of the language commands: mutated example policies never crash gatelang.

Mutants of every example policy in both syntaxes (byte flips, truncation, inserted characters
such as lone surrogates, CR, NUL and their escapes, duplicated or dropped lines) go through
`gatelang.cli.main` for check, fmt --diff, fmt, convert, plan and diff. No exception may escape,
exit codes stay within what each command documents, and every error line carries a
`file:line:col:` location. The cases are fixed by the seed, so a failure reproduces; the longer
run is `python bench/fuzz/run.py --seconds N`.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fuzz.engine import check_output, fuzz, mutate, seeds  # noqa: E402

SEED = 20240611
CASES = 30  # about 3 s; each case runs six commands
TIME_CAP = 10.0  # seconds: a slow CI machine runs fewer of the same cases, never longer


def test_fuzzed_policies_never_crash_the_language_commands(tmp_path: Path) -> None:
    report = fuzz(tmp_path, seed=SEED, cases=CASES, seconds=TIME_CAP)
    assert report.cases >= 5, "the fuzz ran too few cases to mean anything"
    assert not report.failures, "\n\n".join(str(f) for f in report.failures[:3])
    # The mutants reach both outcomes: some still pass, some are rejected with exit 2.
    assert {0, 2} <= set(report.codes["check"])


def test_mutations_are_deterministic_and_cover_both_syntaxes() -> None:
    examples = seeds()
    assert {p.suffix for p in examples} == {".gate", ".yaml"}
    text = examples[0].read_text(encoding="utf-8")
    first = [mutate(random.Random(7), text) for _ in range(3)]
    again = [mutate(random.Random(7), text) for _ in range(3)]
    assert first == again


def test_the_oracle_rejects_what_the_issue_describes() -> None:
    assert check_output("check", None, "") is not None  # an exception escaped
    assert check_output("plan", 1, "") is not None  # exit 1 is not documented for plan
    assert check_output("fmt --diff", 1, "would reformat x.gate\n") is None
    assert check_output("check", 2, "error[G004]: cannot read x.gate\n") is not None
    assert check_output("check", 2, "x.gate:1:1: error[G004]: cannot read x.gate\n") is None
    assert check_output("convert", 1, "x: conversion would change the policy's meaning") \
        is not None
    assert check_output("check", 1, "error: internal error in `gatelang check`") is not None
