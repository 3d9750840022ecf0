"""Golden-file comparison shared by every snapshot test (tests/golden/**).

Tests use the `assert_golden` fixture from conftest.py, which calls `check_golden` with the
`--update-goldens` flag. Without the flag a missing golden file fails, and a mismatch fails
with a unified diff; nothing is ever written. With the flag the file is (re)written.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UPDATE_HINT = "run `python -m pytest --update-goldens` to regenerate it, then review the diff"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def check_golden(path: Path, actual: str, *, update: bool) -> None:
    """Compare `actual` with the golden file at `path`; with `update`, (re)write it instead."""
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != actual:
            path.write_text(actual, encoding="utf-8")
        return
    shown = _shown(path)
    if not path.exists():
        pytest.fail(f"golden file {shown} is missing; {UPDATE_HINT}", pytrace=False)
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(_lines(expected), _lines(actual),
                                            fromfile=f"{shown} (golden)",
                                            tofile=f"{shown} (actual)"))
        pytest.fail(f"output differs from golden file {shown}:\n{diff}\n"
                    f"If the change is intended, {UPDATE_HINT}.", pytrace=False)
