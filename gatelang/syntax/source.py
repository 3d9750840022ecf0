"""Reading a policy file and choosing its syntax by extension."""

from __future__ import annotations

from pathlib import Path

from gatelang.errors import Diagnostic, DiagnosticError, Span
from gatelang.syntax import ast

GATE_SUFFIXES = (".gate",)
YAML_SUFFIXES = (".yaml", ".yml")
MAX_BYTES = 16 * 1024 * 1024  # policies are small; a huge file is a mistake, not a policy


def syntax_of(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in YAML_SUFFIXES:
        return "yaml"
    if suffix in GATE_SUFFIXES:
        return "gate"
    raise DiagnosticError([Diagnostic(
        "G004", f"{path}: not a policy file (expected .gate, .yaml or .yml)", None)])


def read_source(path: str | Path, shown: str | None = None) -> str:
    """The file's text; unreadable files become a `G004` diagnostic, never an OSError."""
    shown = shown or str(path)
    p = Path(path)
    try:
        if p.is_dir():
            raise IsADirectoryError(21, "is a directory")
        if p.stat().st_size > MAX_BYTES:
            raise DiagnosticError([Diagnostic(
                "G004", f"{shown}: file is larger than {MAX_BYTES // 2**20} MiB", None)])
        data = p.read_bytes()
    except DiagnosticError:
        raise
    except OSError as exc:
        raise DiagnosticError([Diagnostic(
            "G004", f"cannot read {shown}: {exc.strerror or exc}", None)]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DiagnosticError([Diagnostic(
            "G004", "file is not valid UTF-8", Span.point(shown, line),
            hint="save the policy as UTF-8")]) from None


def parse_source(text: str, file: str, syntax: str | None = None) -> ast.SourceFile:
    """Parse text in the syntax its file name implies (or `syntax`, when given)."""
    from gatelang.syntax.parser import parse_gate
    from gatelang.syntax.yaml_form import parse_yaml

    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DiagnosticError([Diagnostic("G004", "file contains a NUL byte",
                                          Span.point(file, line))], {file: text})
    kind = syntax or syntax_of(file)
    return parse_yaml(text, file) if kind == "yaml" else parse_gate(text, file)


def parse_file(path: str | Path) -> ast.SourceFile:
    shown = str(path)
    syntax = syntax_of(path)
    return parse_source(read_source(path, shown), shown, syntax)
