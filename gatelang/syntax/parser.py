"""The `.gate` parser: lark LALR straight into the surface tree, with spans and comments.

LALR with an inline transformer builds the tree during the parse, which keeps a policy with
ten thousand inline subjects well under a second. Syntax errors become `G001` diagnostics
that name what was expected at that point.
"""

from __future__ import annotations

import json
import re
import threading
from functools import cache
from importlib import resources

from lark import Lark, Token, Transformer
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from gatelang.errors import Diagnostic, DiagnosticError, Span
from gatelang.syntax import ast

GRAMMAR_FILE = "gatelang.lark"

# Human names for the grammar's terminals, used in "expected ..." hints.
_TERMINAL_NAMES = {
    "NAME": "a name",
    "STRING": 'a quoted string',
    "INT": "a version number",
    "NUMBER": "a number",
    "PERCENT": "a percentage",
    "COMPARE": "a comparison (>=, <=, >, <)",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "DOT": "'.'",
    "EQUAL": "'='",
    "$END": "end of file",
}


def grammar_text() -> str:
    """The shipped grammar (package data); specs/ embeds exactly this text."""
    return resources.files("gatelang.syntax").joinpath(GRAMMAR_FILE).read_text(encoding="utf-8")


_MEANINGFUL = frozenset({"NAME", "STRING", "INT", "NUMBER", "PERCENT", "COMPARE"})


def _line(x) -> int:
    return x.line if isinstance(x, Token) else x.span.line


def _col(x) -> int:
    return x.column if isinstance(x, Token) else x.span.col


def _end_line(x) -> int:
    return x.end_line if isinstance(x, Token) else x.span.end_line


def _end_col(x) -> int:
    return x.end_column if isinstance(x, Token) else x.span.end_col


class _SyntaxFailure(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


class _Builder(Transformer):
    """Turns parse events into `ast` nodes; `file` is set per parse (under the parser lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.file = "<string>"

    # -- helpers -------------------------------------------------------------------------------
    def _meta(self, children: list) -> tuple[Span, list]:
        """The span from the first to the last token, and the children without punctuation.

        The parser keeps every token (so a rule's span starts at its keyword); keywords and
        punctuation are dropped here, `None` placeholders of optional parts are kept.
        """
        first = last = None
        kept = []
        for c in children:
            if isinstance(c, Token):
                first = first or c
                last = c
                if c.type in _MEANINGFUL:
                    kept.append(c)
                continue
            kept.append(c)
            if c is None:
                continue
            edge = c[0] if isinstance(c, tuple) else c
            tail = c[-1] if isinstance(c, tuple) else c
            first = first or edge
            last = tail
        return Span(
            file=self.file,
            line=_line(first),
            col=_col(first),
            end_line=_end_line(last),
            end_col=_end_col(last),
        ), kept

    def _tok_span(self, tok: Token) -> Span:
        # Positions come from the lexer and are valid by construction: skip validation.
        return Span.model_construct(
            file=self.file,
            line=tok.line,
            col=tok.column,
            end_line=tok.end_line,
            end_col=tok.end_column,
        )

    def _ident(self, tok: Token) -> ast.Ident:
        if tok.type == "STRING":
            return ast.Ident(_unquote(tok, self._tok_span(tok)), self._tok_span(tok), quoted=True)
        return ast.Ident(str(tok), self._tok_span(tok))

    def _value(self, tok: Token) -> ast.Value:
        span = self._tok_span(tok)
        raw = str(tok)
        if tok.type == "PERCENT":
            return ast.Value("percent", raw, float(raw[:-1]), span)
        if tok.type == "NUMBER":
            return ast.Value("number", raw, float(raw), span)
        if tok.type == "STRING":
            return ast.Value("string", raw, _unquote(tok, span), span)
        if raw in ("true", "false"):
            return ast.Value("bool", raw, raw == "true", span)
        return ast.Value("name", raw, raw, span)

    # -- rules -----------------------------------------------------------------------------------
    def start(self, children):
        span, children = self._meta(children)
        return children

    def header(self, children):
        span, children = self._meta(children)
        return ast.Header(int(children[0]), span)

    def module_path(self, children):
        span, children = self._meta(children)
        span = span
        return ast.Ident(".".join(str(c) for c in children), span)

    def use_module(self, children):
        span, children = self._meta(children)
        return ast.Use(children[0], False, span)

    def use_file(self, children):
        span, children = self._meta(children)
        return ast.Use(self._ident(children[0]), True, span)

    def subjects_inline(self, children):
        span, children = self._meta(children)
        name, *members = children
        items = tuple(self._ident(m) for m in members if m is not None)
        return ast.SubjectsDef(self._ident(name), items, None, None, span)

    def subjects_file(self, children):
        span, children = self._meta(children)
        name, file, *rest = children
        column = next((c for c in rest if c is not None), None)
        return ast.SubjectsDef(
            self._ident(name),
            None,
            self._ident(file),
            self._ident(column) if column is not None else None,
            span,
        )

    def policy(self, children):
        span, children = self._meta(children)
        name, *items = children
        return ast.Policy(self._ident(name), tuple(items), span)

    def description(self, children):
        span, children = self._meta(children)
        return ast.Field("description", self._ident(children[0]), span)

    def owner(self, children):
        span, children = self._meta(children)
        return ast.Field("owner", self._ident(children[0]), span)

    def refuse(self, children):
        span, children = self._meta(children)
        attrs, subjects, langs, mods = children
        return ast.Refuse(attrs, subjects, langs, mods, span)

    def anonymize(self, children):
        span, children = self._meta(children)
        subjects, encoders = children
        return ast.Anonymize(subjects, encoders, span)

    def keep(self, children):
        span, children = self._meta(children)
        items, *rest = children
        subjects = next((c for c in rest if c is not None), None)
        return ast.Keep(items, subjects, span)

    def refusal_languages(self, children):
        span, children = self._meta(children)
        return ast.RefusalLanguages(children[0], span)

    def method(self, children):
        span, children = self._meta(children)
        name, *params = children
        return ast.Method(
            self._ident(name), tuple(p for p in params if p is not None), span
        )

    def param(self, children):
        span, children = self._meta(children)
        name, value = children
        return ast.Param(self._ident(name), self._value(value), span)

    def require(self, children):
        span, children = self._meta(children)
        return ast.Require(tuple(children), span)

    def require_profile(self, children):
        span, children = self._meta(children)
        name, *items = children
        return ast.Require(tuple(i for i in items if i is not None), span,
                           profile=self._ident(name))

    def requirement(self, children):
        span, children = self._meta(children)
        present = [c for c in children if c is not None]
        if len(present) == 4:
            metric, split, op, value = present
        else:
            (metric, op, value), split = present, None
        return ast.Requirement(
            self._ident(metric),
            self._ident(split) if split is not None else None,
            str(op),
            self._value(value),
            span,
        )

    def name_list(self, children):
        return tuple(self._ident(c) for c in children if c.type != "COMMA")

    def subject_list(self, children):
        return tuple(self._ident(c) for c in children if c.type != "COMMA")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: str) -> str | None:
    """The first lone surrogate in a decoded string (a `\\ud800` escape without its pair)."""
    m = _SURROGATE.search(value)
    return m.group() if m else None


def _unquote(tok: Token, span: Span) -> str:
    try:
        value = json.loads(str(tok))
    except json.JSONDecodeError as exc:
        raise _SyntaxFailure(
            Diagnostic(
                "G001",
                f"invalid escape in string literal: {exc.msg}",
                span,
                hint='strings use JSON escapes: \\" \\\\ \\n \\uXXXX',
            )
        ) from None
    if not isinstance(value, str):  # pragma: no cover - the STRING regex only admits strings
        raise _SyntaxFailure(Diagnostic("G001", "expected a string", span))
    bad = _lone_surrogate(value) if "\\u" in tok else None
    if bad is not None:
        raise _SyntaxFailure(
            Diagnostic(
                "G001",
                f"invalid escape in string literal: \\u{ord(bad):04x} is a lone surrogate",
                span,
                hint="write the character itself, or both halves of a surrogate pair "
                "(\\ud83d\\ude00)",
            )
        )
    return value


class _Parser:
    def __init__(self, start: str) -> None:
        self.builder = _Builder()
        self.comments: list[Token] = []
        self.lock = threading.Lock()
        self.lark = Lark(
            grammar_text(),
            parser="lalr",
            start=start,
            keep_all_tokens=True,
            maybe_placeholders=True,
            transformer=self.builder,
            lexer_callbacks={"COMMENT": self.comments.append},
        )


@cache
def _parser(start: str = "start") -> _Parser:
    return _Parser(start)


def _expected_hint(expected: set[str] | frozenset[str]) -> str:
    words = sorted({_TERMINAL_NAMES.get(e, _keyword(e)) for e in expected})
    return "expected " + ", ".join(words) if words else ""


def _keyword(terminal: str) -> str:
    # Anonymous keyword terminals are named after their text in upper case (e.g. "REFUSE").
    return f"'{terminal.lower()}'" if terminal.isalpha() else terminal


def _lines(text: str) -> list[str]:
    """The lines as the lexer counts them (LF only), like `splitlines` without a last empty
    line; `parse_source` has already turned every other line end into LF."""
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return lines


def _syntax_diagnostic(exc: UnexpectedInput, file: str, text: str) -> Diagnostic:
    line = getattr(exc, "line", None) or 1
    col = getattr(exc, "column", None) or 1
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        return Diagnostic(
            "G001",
            f"unexpected character {ch!r}",
            Span(file=file, line=line, col=col, end_line=line, end_col=col + 1),
            hint=_expected_hint(exc.allowed or set()) or None,
        )
    if isinstance(exc, UnexpectedEOF):
        lines = _lines(text)
        last = len(lines)
        end_col = len(lines[-1]) + 1
        return Diagnostic(
            "G001",
            "unexpected end of file",
            Span(file=file, line=last, col=end_col, end_line=last, end_col=end_col + 1),
            hint=_expected_hint(set(exc.expected)) or None,
        )
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            return _syntax_diagnostic(UnexpectedEOF(sorted(exc.expected)), file, text)
        width = max(1, len(str(tok)))
        return Diagnostic(
            "G001",
            f"unexpected {str(tok)!r}",
            Span(file=file, line=line, col=col, end_line=line, end_col=col + width),
            hint=_expected_hint(exc.expected) or None,
        )
    return Diagnostic("G001", "syntax error", Span.point(file, line, col))  # pragma: no cover


MAX_SYNTAX_ERRORS = 10
_STATEMENT = re.compile(
    r"^[ \t]*(use|subjects|policy|description|owner|refuse|anonymize|keep|method|require)\b"
    r"|^[ \t]*}", re.M)


def _parse_once(parser: _Parser, text: str, file: str):
    """(children, comments) or a syntax diagnostic for the first error."""
    parser.builder.file = file
    parser.comments.clear()
    try:
        children = parser.lark.parse(text)
    except UnexpectedInput as exc:
        return None, _syntax_diagnostic(exc, file, text)
    except _SyntaxFailure as exc:
        return None, exc.diagnostic
    except VisitError as exc:
        if isinstance(exc.orig_exc, _SyntaxFailure):
            return None, exc.orig_exc.diagnostic
        raise
    comments = tuple(ast.Comment(c.line, c.column, str(c).rstrip()) for c in parser.comments)
    return (children, comments), None


def _blank_statement(text: str, line: int) -> str | None:
    """`text` with the statement around `line` replaced by spaces (positions are kept).

    Lets the parser go on after a syntax error so `check` can report the next one too; the
    statement is taken from the last statement keyword at or before the error's line to the
    next one after its braces close.
    """
    offsets = [0]
    for ln in _lines(text):
        offsets.append(offsets[-1] + len(ln) + 1)
    error_at = offsets[min(line, len(offsets)) - 1]
    starts = [m.start() for m in _STATEMENT.finditer(text)]
    before = [s for s in starts if s <= error_at and not text[s:].lstrip().startswith("}")]
    if not before:
        return None
    start = before[-1]
    depth = 0
    i = start
    end = len(text)
    in_string = False
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"' or ch == "\n":
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                end = i
                break
        elif ch == "\n" and depth <= 0 and i + 1 < len(text) and i + 1 in starts and i + 1 > error_at:
            end = i + 1
            break
        i += 1
    blanked = text[:start] + "".join(c if c == "\n" else " " for c in text[start:end]) + text[end:]
    return blanked if blanked != text else None


def parse_gate(text: str, file: str = "<string>") -> ast.SourceFile:
    """Parse `.gate` source into the surface tree; raises `DiagnosticError` (G001) on bad syntax.

    After a syntax error the offending statement is blanked out and the parse retried, so one
    run reports up to `MAX_SYNTAX_ERRORS` independent syntax errors.
    """
    parser = _parser()
    diagnostics: list[Diagnostic] = []
    current = text
    with parser.lock:
        while True:
            result, diag = _parse_once(parser, current, file)
            if diag is None:
                break
            if diagnostics and diag.span and diagnostics[-1].span and \
                    diag.span.line <= diagnostics[-1].span.line:
                break  # no progress: stop rather than report a cascade
            diagnostics.append(diag)
            if len(diagnostics) >= MAX_SYNTAX_ERRORS or diag.span is None:
                break
            blanked = _blank_statement(current, diag.span.line)
            if blanked is None:
                break
            current = blanked
    if diagnostics:
        raise DiagnosticError(diagnostics, {file: text})
    assert result is not None
    children, comments = result
    header, *items = children
    return ast.SourceFile(file, "gate", text, header, tuple(items), comments)


def parse_requirement(text: str, span: Span) -> ast.Requirement:
    """Parse one `metric(split) op value` line (the YAML form writes requirements this way).

    Spans are shifted to `span`'s start so diagnostics point into the YAML file.
    """
    parser = _parser("requirement")
    with parser.lock:
        parser.builder.file = span.file
        try:
            req = parser.lark.parse(text)
        except UnexpectedInput as exc:
            diag = _syntax_diagnostic(exc, span.file, text)
            raise DiagnosticError([_shift_diag(diag, span)]) from None
        except (VisitError, _SyntaxFailure) as exc:
            inner = exc.orig_exc if isinstance(exc, VisitError) else exc
            if isinstance(inner, _SyntaxFailure):
                raise DiagnosticError([_shift_diag(inner.diagnostic, span)]) from None
            raise
    return _shift_requirement(req, span)


def _shift(s: Span, base: Span) -> Span:
    return Span(
        file=base.file,
        line=base.line,
        col=base.col + s.col - 1,
        end_line=base.line,
        end_col=base.col + s.end_col - 1,
    )


def _shift_diag(d: Diagnostic, base: Span) -> Diagnostic:
    span = _shift(d.span, base) if d.span is not None else base
    return Diagnostic(d.code, d.message, span, d.hint, d.severity)


def _shift_requirement(r: ast.Requirement, base: Span) -> ast.Requirement:
    def ident(i: ast.Ident | None) -> ast.Ident | None:
        return None if i is None else ast.Ident(i.text, _shift(i.span, base), i.quoted)

    v = r.value
    return ast.Requirement(
        ident(r.metric),  # type: ignore[arg-type]
        ident(r.split),
        r.op,
        ast.Value(v.kind, v.raw, v.value, _shift(v.span, base)),
        _shift(r.span, base),
    )
