"""Hints for diagnostics: the valid names, and the closest one to what was written."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def hint(valid: Iterable[str], got: str | None = None, *, none: str = "nothing is defined") -> str:
    valid = list(valid)
    close = difflib.get_close_matches(got, valid, n=1) if got else []
    listing = "valid: " + ", ".join(valid) if valid else none
    return (f"did you mean {close[0]!r}? " if close else "") + listing
