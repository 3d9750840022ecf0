"""Errors and diagnostics shared by every layer.

Every failure a user can cause is a `GatelangError` with an exit code, so the CLI can print a
clear message and exit without a traceback. Source-level problems carry `Diagnostic`s with a
`Span`, rendered as ``file:line:col: error[CODE]: message`` plus the line and a caret.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

# Exit codes (documented in README and docs/cli.md).
EXIT_OK = 0
EXIT_FAILURE = 1  # other failure with a clear message (missing weights, bad model, I/O)
EXIT_INVALID = 2  # invalid policy or other malformed input
EXIT_REQUIREMENT = 3  # the run completed but a `require` threshold does not hold

_MAX_SHOWN = 160  # longest source line shown in full under a diagnostic


class Span(BaseModel):
    """A region of a source file; lines and columns are 1-based, end is exclusive."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    @classmethod
    def point(cls, file: str, line: int = 1, col: int = 1) -> Span:
        return cls(file=file, line=line, col=col, end_line=line, end_col=col + 1)


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    severity: str = "error"

    def render(self, source: str | None = None) -> str:
        """Render as file:line:col, the source line and a caret under the span."""
        if self.span is None:
            head = f"error[{self.code}]: {self.message}"
            return head + (f"\n  hint: {self.hint}" if self.hint else "")
        s = self.span
        lines = [f"{s.file}:{s.line}:{s.col}: {self.severity}[{self.code}]: {self.message}"]
        text = source
        if text is None:
            try:
                text = Path(s.file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = None
        if text is not None:
            src_lines = text.splitlines()
            if 1 <= s.line <= len(src_lines):
                line = src_lines[s.line - 1]
                width = (s.end_col - s.col) if s.end_line == s.line else len(line) - s.col + 1
                width = max(1, width)
                col = s.col
                if len(line) > _MAX_SHOWN:
                    # Show a window around the span of a very long line (generated lists).
                    start = max(0, col - 1 - _MAX_SHOWN // 3)
                    shown = line[start:start + _MAX_SHOWN]
                    prefix = "…" if start else ""
                    line = prefix + shown + ("…" if start + _MAX_SHOWN < len(line) else "")
                    col = col - start + len(prefix)
                    width = max(1, min(width, len(line) - col + 1))
                gutter = f"{s.line:>4} | "
                lines.append(gutter + line)
                pad = _pad(line[: col - 1])
                carets = "^" * max(1, _width(line[col - 1 : col - 1 + width]))
                lines.append(" " * (len(gutter) - 2) + "| " + pad + carets)
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


def _width(text: str) -> int:
    """Terminal columns of `text`: wide (CJK) characters take two, so carets line up."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(prefix: str) -> str:
    # Keep tabs as tabs so the caret lands under the same column the terminal shows.
    return "".join(ch if ch == "\t" else " " * _width(ch) for ch in prefix)


class GatelangError(Exception):
    """Root of every error a user can cause; carries the CLI exit code."""

    exit_code = EXIT_FAILURE


@dataclass
class DiagnosticError(GatelangError):
    """One or more source diagnostics (syntax or semantics): exit code 2."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    exit_code = EXIT_INVALID

    def __str__(self) -> str:
        return "\n".join(
            d.render(self.sources.get(d.span.file) if d.span else None) for d in self.diagnostics
        )


class PlanError(GatelangError):
    """The policy is valid but cannot run on this model (e.g. no image encoder): exit 2.

    When the problem has a place in the policy, `diagnostics` carry it (codes `G3xx`) and the
    message renders them like any other diagnostic.
    """

    exit_code = EXIT_INVALID

    def __init__(self, message: str = "", *, diagnostics: list[Diagnostic] | None = None,
                 sources: dict[str, str] | None = None) -> None:
        self.diagnostics = list(diagnostics or [])
        self.sources = dict(sources or {})
        if not message and self.diagnostics:
            message = "\n".join(
                d.render(self.sources.get(d.span.file) if d.span else None)
                for d in self.diagnostics
            )
        super().__init__(message)


class ModelError(GatelangError):
    """The model cannot be loaded or used (missing weights, unsupported architecture, memory)."""

    exit_code = EXIT_FAILURE


class RequirementError(GatelangError):
    """A run finished but some `require` threshold failed; artifacts are written, patch rejected."""

    exit_code = EXIT_REQUIREMENT


class SelectionError(RequirementError):
    """An edit that chooses its own configuration found none that meets the policy's
    requirements on its selection split, and stopped the run before verification (exit 3).
    `trace` holds what it tried, for the record `apply` writes."""

    def __init__(self, message: str, trace: dict | None = None, method: str = "") -> None:
        super().__init__(message)
        self.trace = dict(trace or {})
        self.method = method
