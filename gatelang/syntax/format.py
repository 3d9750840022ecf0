"""Formatters: canonical `.gate` text, canonical YAML, and conversion between the two.

Both emitters walk the surface tree, so formatting never changes meaning, and both keep
comments: every comment is attached to the construct it sits on (trailing) or precedes
(leading) before emission, which also carries comments across a conversion. Blank lines
between constructs are kept (at most one), so authors' grouping survives `fmt`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from gatelang.errors import Span
from gatelang.syntax import ast
from gatelang.syntax.source import parse_source, read_source, syntax_of

WIDTH = 100
INDENT = "  "
_NAME = re.compile(r"(?!\d)\w[\w\-]*")
_YAML_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


# -- comment attachment ----------------------------------------------------------------------


@dataclass
class _Notes:
    leading: list[str] = field(default_factory=list)
    trailing: list[str] = field(default_factory=list)
    blank_before: bool = False


class _Comments:
    """Assigns each comment to a unit (a construct printed on its own line) by position."""

    def __init__(self, src: ast.SourceFile, units: list[tuple[object, Span]],
                 ends: list[tuple[ast.Policy, object]] | None = None) -> None:
        self.ends = ends
        self.notes: dict[int, _Notes] = {id(k): _Notes() for k, _ in units}
        self.tail: list[str] = []
        ordered = sorted(units, key=lambda u: (u[1].line, u[1].col))
        for c in src.comments:
            host = None
            for key, span in ordered:
                if isinstance(key, tuple) and src.syntax == "yaml":
                    continue  # YAML has no closing lines
                if span.line <= c.line <= span.end_line and (c.line != span.line
                                                             or c.col > span.col):
                    host = key  # the last unit covering the line wins (the innermost)
            if host is not None:
                self.notes[id(host)].trailing.append(c.text)
                continue
            nxt = next((k for k, s in ordered if s.line > c.line), None)
            owner = self._yaml_block_end(src, c)
            if owner is not None:
                self.notes[id(owner)].leading.append(c.text)
            elif nxt is None:
                self.tail.append(c.text)
            else:
                self.notes[id(nxt)].leading.append(c.text)
        # Blank lines the author left before a unit (or before its leading comments).
        comment_lines = {c.line for c in src.comments}
        lines = src.source.splitlines()
        prev_end = 0
        for key, span in ordered:
            first = span.line
            while first - 1 in comment_lines and first - 1 > prev_end:
                first -= 1
            if prev_end and first - prev_end > 1 and any(
                not lines[i].strip() for i in range(prev_end, min(first - 1, len(lines)))
            ):
                self.notes[id(key)].blank_before = True
            prev_end = max(prev_end, span.end_line)

    def _yaml_block_end(self, src: ast.SourceFile, c: ast.Comment) -> object | None:
        """In YAML, an indented comment after a policy's last line belongs to that policy."""
        if src.syntax != "yaml" or self.ends is None:
            return None
        owner = None
        for policy, key in self.ends:
            if policy.span.line < c.line and c.col > policy.name.span.col:
                owner = key if c.line > policy.span.end_line else None
        return owner

    ends: list[tuple[ast.Policy, object]] | None = None

    def of(self, key: object) -> _Notes:
        return self.notes.get(id(key), _Notes())


def _units(src: ast.SourceFile) -> list[tuple[object, Span]]:
    out: list[tuple[object, Span]] = [(src.header, src.header.span)]
    for item in src.items:
        if isinstance(item, ast.SubjectsDef):
            first = Span(file=item.span.file, line=item.span.line, col=item.span.col,
                         end_line=item.span.line, end_col=item.span.col + 1)
            out.append((item, first if item.members else item.span))
            for m in item.members or ():
                out.append((m, m.span))
        elif isinstance(item, ast.Policy):
            out.append((item, _line_of(item.span, item.span.line)))
            for it in item.items:
                if isinstance(it, ast.Require):
                    out.append((it, _line_of(it.span, it.span.line)))
                    for r in it.items:
                        out.append((r, r.span))
                    if it.span.end_line != it.span.line:
                        out.append(((it, "end"), _line_of(it.span, it.span.end_line)))
                elif isinstance(it, ast.Method) and it.span.end_line != it.span.line:
                    out.append((it, _line_of(it.span, it.span.line)))
                    for p in it.params:
                        out.append((p, p.span))
                else:
                    out.append((it, it.span))
            out.append(((item, "end"), _line_of(item.span, item.span.end_line)))
        else:
            out.append((item, item.span))
    return out


def _line_of(span: Span, line: int) -> Span:
    return Span(file=span.file, line=line, col=span.col if line == span.line else 1,
                end_line=line, end_col=span.end_col if line == span.end_line else 2)


class _Keyed:
    """Stable keys for pseudo-units such as a block's closing line."""

    def __init__(self) -> None:
        self.keys: dict[tuple[int, str], object] = {}

    def __call__(self, obj: object, tag: str) -> object:
        return self.keys.setdefault((id(obj), tag), (obj, tag))


def _ends(src: ast.SourceFile, keyed: _Keyed) -> list[tuple[ast.Policy, object]]:
    return [(p, keyed(p, "end")) for p in src.items if isinstance(p, ast.Policy)]


# -- .gate -----------------------------------------------------------------------------------


_LINE_BREAKS = re.compile("[\x85\u2028\u2029]")  # line ends JSON leaves unescaped


def _q(text: str) -> str:
    # Escaped, not raw: a raw U+2028 would end the line for the reader (and fold in YAML).
    return _LINE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}",
                            json.dumps(text, ensure_ascii=False))


def _ident(i: ast.Ident) -> str:
    return _q(i.text) if i.quoted or not _NAME.fullmatch(i.text) else i.text


def _names(items) -> str:
    return ", ".join(_ident(i) for i in items)


def _param(method: ast.Method, p: ast.Param) -> str:
    """A method parameter's current name: `fmt` rewrites names the method has renamed
    (stdlib version bump; the checker still accepts the old name with warning G204)."""
    from gatelang.methods import methods

    spec = methods().get(method.name.text)
    return spec.config.renamed.get(p.name.text, p.name.text) if spec else p.name.text


def _value(v: ast.Value) -> str:
    if v.kind == "string":
        return _q(str(v.value))
    return v.raw


def _requirement(r: ast.Requirement) -> str:
    split = f"({r.split.text})" if r.split else ""
    return f"{r.metric.text}{split} {r.op} {_value(r.value)}"


class _Out:
    def __init__(self, comments: _Comments, *, yaml: bool = False) -> None:
        self.lines: list[str] = []
        self.c = comments
        if yaml:
            # YAML may not hold control characters even in comments: show them escaped.
            for notes in self.c.notes.values():
                notes.leading = [_yaml_comment(x) for x in notes.leading]
                notes.trailing = [_yaml_comment(x) for x in notes.trailing]
            self.c.tail = [_yaml_comment(x) for x in self.c.tail]

    def line(self, indent: str, text: str, *keys: object, blank: bool = False,
             comment_indent: str | None = None) -> None:
        notes = [self.c.of(k) for k in keys]
        if (blank or any(n.blank_before for n in notes[:1])) and self.lines and self.lines[-1]:
            self.lines.append("")
        for n in notes:
            for c in n.leading:
                self.lines.append((indent if comment_indent is None else comment_indent) + c)
        trailing = [c for n in notes for c in n.trailing]
        self.lines.append(indent + text + ("  " + " ".join(trailing) if trailing else ""))

    def take_leading(self, key: object) -> list[str]:
        """Move a unit's leading comments (and blank line) to a section header above it."""
        n = self.c.of(key)
        out, n.leading, n.blank_before = n.leading, [], False
        return out

    def text(self) -> str:
        for c in self.c.tail:
            self.lines.append(c)
        while self.lines and not self.lines[-1]:
            self.lines.pop()
        return "\n".join(self.lines) + "\n"


def format_gate(src: ast.SourceFile) -> str:
    """Canonical `.gate` text for a parsed file (either syntax); comments are kept."""
    keyed = _Keyed()
    units = [(keyed(k[0], k[1]) if isinstance(k, tuple) else k, s) for k, s in _units(src)]
    out = _Out(_Comments(src, units, _ends(src, keyed)))
    out.line("", f"gatelang {src.header.version}", src.header)
    prev_kind = "header"
    for item in src.items:
        kind = type(item).__name__
        blank = kind != prev_kind or kind == "Policy"
        prev_kind = kind
        if isinstance(item, ast.Use):
            target = _q(item.target.text) if item.is_file else item.target.text
            out.line("", f"use {target}", item, blank=blank)
        elif isinstance(item, ast.SubjectsDef):
            _gate_subjects(out, item, blank)
        elif isinstance(item, ast.Policy):
            out.line("", f"policy {item.name.text} {{", item, blank=blank)
            for it in item.items:
                _gate_item(out, it, keyed)
            out.line("", "}", keyed(item, "end"), comment_indent=INDENT)
    return out.text()


def _gate_subjects(out: _Out, item: ast.SubjectsDef, blank: bool) -> None:
    head = f"subjects {item.name.text} = "
    if item.members is None:
        assert item.file is not None
        col = f' column {_q(item.column.text)}' if item.column else ""
        out.line("", f"{head}from {_q(item.file.text)}{col}", item, blank=blank)
        return
    one = head + "[" + ", ".join(_q(m.text) for m in item.members) + "]"
    has_leading = any(out.c.of(m).leading for m in item.members)
    if len(one) <= WIDTH and not has_leading:
        out.line("", one, item, *item.members, blank=blank)
        return
    out.line("", head + "[", item, blank=blank)
    for m in item.members:
        out.line(INDENT, _q(m.text) + ",", m)
    out.line("", "]")


def _gate_item(out: _Out, it: ast.PolicyItem, keyed: _Keyed) -> None:
    i1, i2 = INDENT, INDENT * 2
    if isinstance(it, ast.Field):
        out.line(i1, f"{it.key} {_q(it.value.text)}", it)
    elif isinstance(it, ast.Refuse):
        parts = [f"refuse {_names(it.attributes)}", f"about {_names(it.subjects)}",
                 f"in {_names(it.languages)}", f"via {_names(it.modalities)}"]
        one = " ".join(parts)
        if len(i1 + one) <= WIDTH:
            out.line(i1, one, it)
        else:
            notes = out.c.of(it)
            for c in notes.leading:
                out.lines.append(i1 + c)
            out.lines.append(i1 + parts[0])
            for p in parts[1:-1]:
                out.lines.append(i2 + p)
            trailing = "  " + " ".join(notes.trailing) if notes.trailing else ""
            out.lines.append(i2 + parts[-1] + trailing)
    elif isinstance(it, ast.Anonymize):
        out.line(i1, f"anonymize {_names(it.subjects)} in {_names(it.encoders)} encoder", it)
    elif isinstance(it, ast.Keep):
        about = f" about {_names(it.subjects)}" if it.subjects else ""
        out.line(i1, f"keep {_names(it.items)}{about}", it)
    elif isinstance(it, ast.RefusalLanguages):
        out.line(i1, f"refusal_languages {_names(it.languages)}", it)
    elif isinstance(it, ast.Method):
        if not it.params:
            out.line(i1, f"method {it.name.text}", it)
            return
        params = [f"{_param(it, p)} {_value(p.value)}" for p in it.params]
        one = f"method {it.name.text} {{ " + "  ".join(params) + " }"
        inner_comments = any(out.c.of(p).leading or out.c.of(p).trailing for p in it.params)
        if len(i1 + one) <= WIDTH and not inner_comments:
            out.line(i1, one, it)
            return
        out.line(i1, f"method {it.name.text} {{", it)
        for p, text in zip(it.params, params, strict=True):
            out.line(i2, text, p)
        out.line(i1, "}")
    elif isinstance(it, ast.Require):
        end = out.c.of(keyed(it, "end"))
        head = f"require {it.profile.text}" if it.profile else "require"
        if not it.items and not (end.leading or end.trailing):
            out.line(i1, head if it.profile else "require {}", it)
            return
        out.line(i1, head + " {", it)
        for r in it.items:
            out.line(i2, _requirement(r), r)
        out.line(i1, "}", keyed(it, "end"), comment_indent=i2)


# -- YAML ------------------------------------------------------------------------------------


_YAML_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _yq(text: str) -> str:
    """A YAML double-quoted scalar: JSON escapes, plus escapes for what YAML may not hold raw."""
    return _YAML_UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", _q(text))


def _yaml_comment(text: str) -> str:
    return _YAML_UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _y(text: str, *, force_quote: bool = False) -> str:
    plain_ok = (
        not force_quote
        and text
        and text.lower() not in _YAML_RESERVED
        and re.fullmatch(r"[^\W\d][\w\-./() %<>=]*", text) is not None
        and not text.endswith((" ", ":"))
        and ": " not in text
        and " #" not in text
    )
    return text if plain_ok else _yq(text)


def _ylist(items, *, subjects: bool = False) -> str:
    return "[" + ", ".join(_y(i.text, force_quote=subjects and i.quoted) for i in items) + "]"


# Widest flow-style `method:` line; longer parameter lists are written in block style.
YAML_FLOW_WIDTH = 100


def format_yaml(src: ast.SourceFile) -> str:
    """Canonical YAML text for a parsed file (either syntax); comments are kept."""
    keyed = _Keyed()
    units = [(keyed(k[0], k[1]) if isinstance(k, tuple) else k, s) for k, s in _units(src)]
    out = _Out(_Comments(src, units, _ends(src, keyed)), yaml=True)
    out.line("", f"gatelang: {src.header.version}", src.header)
    uses = [i for i in src.items if isinstance(i, ast.Use)]
    sets = [i for i in src.items if isinstance(i, ast.SubjectsDef)]
    policies = [i for i in src.items if isinstance(i, ast.Policy)]
    if uses:
        out.lines.extend(out.take_leading(uses[0]))
        out.line("", "use:")
        for u in uses:
            text = f"file: {_yq(u.target.text)}" if u.is_file else u.target.text
            out.line(INDENT, f"- {text}", u)
    if sets:
        lead = out.take_leading(sets[0])
        if out.lines and out.lines[-1]:
            out.lines.append("")
        out.lines.extend(lead)
        out.line("", "subjects:")
        for s in sets:
            if s.members is None:
                assert s.file is not None
                col = f", column: {_yq(s.column.text)}" if s.column else ""
                out.line(INDENT, f"{s.name.text}: {{from: {_yq(s.file.text)}{col}}}", s)
                continue
            one = f"{s.name.text}: [" + ", ".join(_yq(m.text) for m in s.members) + "]"
            if len(INDENT + one) <= WIDTH and not any(out.c.of(m).leading for m in s.members):
                out.line(INDENT, one, s, *s.members)
            else:
                out.line(INDENT, f"{s.name.text}:", s)
                for m in s.members:
                    out.line(INDENT * 2, f"- {_yq(m.text)}", m)
    if policies:
        lead = out.take_leading(policies[0])
        if out.lines and out.lines[-1]:
            out.lines.append("")
        out.lines.extend(lead)
        out.line("", "policies:")
    for p in policies:
        _yaml_policy(out, p, keyed)
    return out.text()


def _yaml_policy(out: _Out, p: ast.Policy, keyed: _Keyed) -> None:
    i1, i2, i3 = INDENT, INDENT * 2, INDENT * 3
    out.line(i1, f"{p.name.text}:", p)
    fields = [i for i in p.items if isinstance(i, ast.Field)]
    rules = [i for i in p.items if isinstance(i, (ast.Refuse, ast.Anonymize))
             or (isinstance(i, ast.Keep) and i.subjects is not None)]
    keeps = [i for i in p.items if isinstance(i, ast.Keep) and i.subjects is None]
    methods = [i for i in p.items if isinstance(i, ast.Method)]
    requires = [i for i in p.items if isinstance(i, ast.Require)]
    accepted = [i for i in p.items if isinstance(i, ast.RefusalLanguages)]
    for f in sorted(fields, key=lambda f: f.key):
        out.line(i2, f"{f.key}: {_y(f.value.text, force_quote=True)}", f)
    if rules:
        out.line(i2, "rules:")
        for r in rules:
            if isinstance(r, ast.Refuse):
                out.line(i3, f"- refuse: {_ylist(r.attributes)}", r)
                out.line(i3, f"  about: {_ylist(r.subjects, subjects=True)}")
                out.line(i3, f"  in: {_ylist(r.languages)}")
                out.line(i3, f"  via: {_ylist(r.modalities)}")
            elif isinstance(r, ast.Anonymize):
                out.line(i3, f"- anonymize: {_ylist(r.subjects, subjects=True)}", r)
                out.line(i3, f"  in: {_ylist(r.encoders)}")
            else:
                assert isinstance(r, ast.Keep) and r.subjects is not None
                out.line(i3, f"- keep: {_ylist(r.items)}", r)
                out.line(i3, f"  about: {_ylist(r.subjects, subjects=True)}")
    if keeps:
        items = [k for keep in keeps for k in keep.items]
        out.line(i2, f"keep: {_ylist(items)}", *keeps)
    for a in accepted:
        out.line(i2, f"refusal_languages: {_ylist(a.languages)}", a)
    for m in methods:
        if not m.params:
            out.line(i2, f"method: {m.name.text}", m)
        else:
            params = ", ".join(f"{_param(m, x)}: {_yaml_value(x.value)}" for x in m.params)
            flow = f"method: {{{m.name.text}: {{{params}}}}}"
            if len(i2 + flow) <= YAML_FLOW_WIDTH:
                out.line(i2, flow, m, *m.params)
            else:  # a long parameter list reads (and diffs) better one per line
                out.line(i2, "method:", m)
                out.line(i3, f"{m.name.text}:")
                for x in m.params:
                    out.line(i3 + INDENT, f"{_param(m, x)}: {_yaml_value(x.value)}", x)
    for r in requires:
        # `require {}` is an empty list, not a missing one (`require:` alone would be null).
        if r.profile and not r.items:
            out.line(i2, f"require: {r.profile.text}", r)
        else:
            out.line(i2, "require:" if r.items or r.profile else "require: []", r)
        if r.profile and r.items:
            out.line(i3, f"- {r.profile.text}")
        for req in r.items:
            out.line(i3, f"- {_y(_requirement(req))}", req)
        # YAML has no closing line: comments before `}` go to the end of the policy.
        done = out.c.of(keyed(r, "end"))
        out.lines.extend(i2 + c for c in done.leading + done.trailing)
    end = out.c.of(keyed(p, "end"))
    for c in end.leading + end.trailing:
        out.lines.append(i2 + c)


def _yaml_value(v: ast.Value) -> str:
    if v.kind == "string":
        return _yq(str(v.value))
    return v.raw


# -- public API --------------------------------------------------------------------------------


def format_source(src: ast.SourceFile, syntax: str | None = None) -> str:
    """Canonical text of a parsed file in `syntax` (default: its own)."""
    return format_yaml(src) if (syntax or src.syntax) == "yaml" else format_gate(src)


def format_text(text: str, file: str = "<string>", syntax: str | None = None) -> str:
    return format_source(parse_source(text, file, syntax))


def fmt(path: str | Path) -> str:
    """The canonical form of a policy file (same syntax); raises `DiagnosticError` on bad syntax."""
    shown = str(path)
    return format_source(parse_source(read_source(path, shown), shown, syntax_of(path)))


def convert(path: str | Path, to: str | None = None) -> str:
    """The policy file in the other syntax (or `to`: "gate" / "yaml"), comments included."""
    shown = str(path)
    src = parse_source(read_source(path, shown), shown, syntax_of(path))
    target = to or ("gate" if src.syntax == "yaml" else "yaml")
    if target not in ("gate", "yaml"):
        raise ValueError(f"unknown syntax {target!r}; use gate or yaml")
    return format_source(src, target)
