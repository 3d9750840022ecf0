"""The typed IR of a policy file and the front half of the compiler: load and check.

`check` never raises for a problem in the policy: it returns every diagnostic. `load` is the
strict form the rest of gatelang uses: it returns the IR or raises `DiagnosticError` with all
errors at once.
"""

from __future__ import annotations

from pathlib import Path

from gatelang.errors import DiagnosticError
from gatelang.ir.lower import CheckResult, lower
from gatelang.ir.model import (
    AnonymizeRule,
    KeepRule,
    Method,
    Policy,
    PolicyFile,
    Preservation,
    RefuseRule,
    Requirement,
    SubjectSet,
)
from gatelang.syntax.source import parse_file, parse_source

__all__ = [
    "AnonymizeRule",
    "CheckResult",
    "KeepRule",
    "Method",
    "Policy",
    "PolicyFile",
    "Preservation",
    "RefuseRule",
    "Requirement",
    "SubjectSet",
    "check",
    "check_text",
    "load",
    "loads",
]


def check(path: str | Path, *, root: str | Path | None = None) -> CheckResult:
    """Parse and check one policy file; every problem comes back as a diagnostic.

    `root` is the folder that `use` and subject files may not escape (default: the file's
    folder).
    """
    try:
        src = parse_file(path)
    except DiagnosticError as exc:
        return CheckResult(None, list(exc.diagnostics), dict(exc.sources))
    return lower(src, root=root)


def check_text(text: str, file: str = "<string>", syntax: str | None = None,
               *, root: str | Path | None = None) -> CheckResult:
    """`check` for policy text held in memory (`syntax` is "gate" or "yaml")."""
    try:
        src = parse_source(text, file, syntax or ("yaml" if file.endswith((".yaml", ".yml"))
                                                  else "gate"))
    except DiagnosticError as exc:
        return CheckResult(None, list(exc.diagnostics), dict(exc.sources) or {file: text})
    return lower(src, root=root)


def _strict(result: CheckResult) -> PolicyFile:
    if result.ir is None:
        raise DiagnosticError(result.errors, result.sources)
    return result.ir


def load(path: str | Path, *, root: str | Path | None = None) -> PolicyFile:
    """The checked IR of a policy file; raises `DiagnosticError` with every error."""
    return _strict(check(path, root=root))


def loads(text: str, file: str = "<string>", syntax: str | None = None,
          *, root: str | Path | None = None) -> PolicyFile:
    """`load` for policy text held in memory."""
    return _strict(check_text(text, file, syntax, root=root))
