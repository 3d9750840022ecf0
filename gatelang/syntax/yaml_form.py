"""The YAML form of a policy: loaded safely into the same surface tree as `.gate` files.

YAML is composed (never constructed) with the safe loader, so no tag can run code and every
value keeps its line and column. Names are taken from the raw scalar text, which sidesteps
YAML 1.1 surprises such as the language code `no` turning into `False`.
"""

from __future__ import annotations

import re

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gatelang.errors import Diagnostic, DiagnosticError, Span
from gatelang.syntax import ast
from gatelang.syntax.parser import parse_requirement

TOP_KEYS = ("gatelang", "use", "subjects", "policies")
POLICY_KEYS = ("description", "owner", "rules", "keep", "refusal_languages", "method", "require")
RULE_KEYS = {
    "refuse": ("refuse", "about", "in", "via"),
    "anonymize": ("anonymize", "in"),
    "keep": ("keep", "about"),
}
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_PERCENT = re.compile(r"-?[0-9]+(\.[0-9]+)?%")
_NAME = re.compile(r"(?!\d)\w[\w\-]*")  # the grammar's NAME terminal
NAME_HINT = ("a name starts with a letter or `_` and goes on with letters, digits, `_` or `-` "
             "(as in .gate files); a person's name goes in a subject list, quoted")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Shape(Exception):
    def __init__(self, message: str, span: Span, hint: str | None = None, code: str = "G003"):
        super().__init__(message)
        self.diagnostic = Diagnostic(code, message, span, hint)


class _Loader:
    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self.seen: set[int] = set()
        self.diagnostics: list[Diagnostic] = []

    def span(self, node: Node) -> Span:
        if isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style and node.value:
            # A block collection ends where the next token starts; end at its last value.
            last = node.value[-1]
            last = last[1] if isinstance(last, tuple) else last
            s, e = node.start_mark, last.end_mark
            inner = self.span(last)
            return Span(file=self.file, line=s.line + 1, col=s.column + 1,
                        end_line=inner.end_line, end_col=inner.end_col)
        s, e = node.start_mark, node.end_mark
        end_line, end_col = e.line + 1, e.column + 1
        if end_line > s.line + 1 and e.column == 0:
            # Block nodes end at the start of the next line; point at the end of the last line.
            lines = self.text.splitlines()
            end_line = e.line
            end_col = len(lines[end_line - 1]) + 1 if 0 < end_line <= len(lines) else 1
        return Span(file=self.file, line=s.line + 1, col=s.column + 1, end_line=end_line,
                    end_col=max(end_col, s.column + 2) if end_line == s.line + 1 else end_col)

    def visit(self, node: Node) -> Node:
        if id(node) in self.seen:
            raise _Shape("YAML aliases are not supported in policies", self.span(node),
                         "write the value out where it is used")
        self.seen.add(id(node))
        return node

    # -- shapes --------------------------------------------------------------------------------
    def mapping(self, node: Node, what: str, keys: tuple[str, ...]) -> dict[str, tuple[Node, Node]]:
        self.visit(node)
        if not isinstance(node, MappingNode):
            raise _Shape(f"{what} must be a mapping", self.span(node),
                         "valid keys: " + ", ".join(keys) if keys else None)
        out: dict[str, tuple[Node, Node]] = {}
        for k, v in node.value:
            if not isinstance(k, ScalarNode):
                raise _Shape(f"{what}: keys must be plain names", self.span(k))
            if keys and k.value not in keys:
                self.diagnostics.append(Diagnostic(
                    "G003", f"unknown key {k.value!r} in {what}", self.span(k),
                    "valid keys: " + ", ".join(keys)))
                continue
            if k.value in out:
                self.diagnostics.append(Diagnostic(
                    "G114", f"duplicate key {k.value!r} in {what}", self.span(k),
                    "each key may appear once"))
                continue
            out[k.value] = (k, v)
        return out

    def scalar(self, node: Node, what: str) -> ScalarNode:
        self.visit(node)
        if not isinstance(node, ScalarNode):
            raise _Shape(f"{what} must be a single value", self.span(node))
        return node

    def ident(self, node: Node, what: str) -> ast.Ident:
        n = self.scalar(node, what)
        return ast.Ident(n.value, self.span(n), quoted=n.style in ("'", '"'))

    def name(self, node: Node, what: str) -> ast.Ident:
        ident = self.ident(node, what)
        if not ident.text:
            raise _Shape(f"{what} must not be empty", ident.span)
        return ast.Ident(ident.text, ident.span, quoted=False)

    def names(self, node: Node, what: str, *, subjects: bool = False) -> tuple[ast.Ident, ...]:
        """A list of names, or one name written as a scalar."""
        if isinstance(node, ScalarNode):
            return (self._listed(node, what, subjects),)
        self.visit(node)
        if not isinstance(node, SequenceNode):
            raise _Shape(f"{what} must be a name or a list of names", self.span(node))
        if not node.value:
            raise _Shape(f"{what} must not be an empty list", self.span(node))
        return tuple(self._listed(n, what, subjects) for n in node.value)

    def _listed(self, node: Node, what: str, subjects: bool) -> ast.Ident:
        ident = self.ident(node, what)
        # In a subject list a bare word is a set name and anything else a person's name.
        quoted = ident.quoted or (subjects and not _NAME.fullmatch(ident.text))
        if not ident.quoted and not subjects:
            quoted = False
        return ast.Ident(ident.text, ident.span, quoted=quoted)

    def value(self, node: Node, what: str) -> ast.Value:
        n = self.scalar(node, what)
        span, raw = self.span(n), n.value
        if n.style in ("'", '"'):
            return ast.Value("string", raw, raw, span)
        if _PERCENT.fullmatch(raw):
            return ast.Value("percent", raw, float(raw[:-1]), span)
        if _NUMBER.fullmatch(raw):
            return ast.Value("number", raw, float(raw), span)
        if raw in ("true", "false"):
            return ast.Value("bool", raw, raw == "true", span)
        if _NAME.fullmatch(raw):
            return ast.Value("name", raw, raw, span)
        return ast.Value("string", raw, raw, span)

    # -- document ------------------------------------------------------------------------------
    def document(self, root: Node | None) -> ast.SourceFile:
        if root is None:
            raise _Shape("empty policy file", Span.point(self.file),
                         "start with `gatelang: 1`")
        top = self.mapping(root, "the policy file", TOP_KEYS)
        if "gatelang" not in top:
            raise _Shape("missing `gatelang: 1` version key", self.span(root),
                         "the first key of a policy file is `gatelang: 1`")
        k, v = top["gatelang"]
        vnode = self.scalar(v, "gatelang")
        if not vnode.value.isdigit():
            raise _Shape("the version must be a whole number", self.span(vnode), "gatelang: 1")
        header = ast.Header(int(vnode.value), self.span(k))
        items: list[ast.Item] = []
        if "use" in top:
            items.extend(self._guard(self.uses, top["use"][1]))
        if "subjects" in top:
            items.extend(self._guard(self.subject_sets, top["subjects"][1]))
        if "policies" in top:
            items.extend(self._guard(self.policies, top["policies"][1]))
        return ast.SourceFile(self.file, "yaml", self.text, header, tuple(items),
                              tuple(yaml_comments(self.text)))

    def _guard(self, fn, node: Node) -> list:
        try:
            return fn(node)
        except _Shape as exc:
            self.diagnostics.append(exc.diagnostic)
            return []

    def uses(self, node: Node) -> list[ast.Use]:
        self.visit(node)
        entries = node.value if isinstance(node, SequenceNode) else [node]
        out = []
        for entry in entries:
            if isinstance(entry, MappingNode):
                m = self.mapping(entry, "use", ("file",))
                if "file" not in m:
                    raise _Shape("use: a mapping needs `file:`", self.span(entry))
                ident = self.ident(m["file"][1], "use file")
                out.append(ast.Use(ast.Ident(ident.text, ident.span, True), True, self.span(entry)))
            else:
                ident = self.name(entry, "use")
                out.append(ast.Use(ident, False, ident.span))
        return out

    def defined_name(self, key: ScalarNode, what: str) -> ast.Ident | None:
        """The name a mapping key defines (a subject set, a policy): the `.gate` name syntax.

        A bad name is reported (G006) and the definition skipped, so names that reach the IR,
        the plan and the reports are the same in both syntaxes.
        """
        ident = ast.Ident(key.value, self.span(key))
        if not _NAME.fullmatch(key.value):
            self.diagnostics.append(Diagnostic(
                "G006", f"{what} name {key.value!r} is not a valid name", ident.span,
                NAME_HINT))
            return None
        return ident

    def subject_sets(self, node: Node) -> list[ast.SubjectsDef]:
        out = []
        for name, (k, v) in self.mapping(node, "subjects", ()).items():
            ident = self.defined_name(k, "subject set")
            if ident is None:
                continue
            span = Span(file=self.file, line=ident.span.line, col=ident.span.col,
                        end_line=self.span(v).end_line, end_col=self.span(v).end_col)
            if isinstance(v, MappingNode):
                m = self.mapping(v, f"subjects {name}", ("from", "column"))
                if "from" not in m:
                    raise _Shape(f"subjects {name}: a file source needs `from:`", self.span(v))
                file = self.ident(m["from"][1], "from")
                column = self.ident(m["column"][1], "column") if "column" in m else None
                out.append(ast.SubjectsDef(ident, None, ast.Ident(file.text, file.span, True),
                                           column and ast.Ident(column.text, column.span, True),
                                           span))
            else:
                self.visit(v)
                if not isinstance(v, SequenceNode):
                    raise _Shape(f"subjects {name} must be a list of names or `from:` a file",
                                 self.span(v))
                members = tuple(
                    ast.Ident(m.text, m.span, True)
                    for m in (self.ident(n, f"subjects {name}") for n in v.value)
                )
                out.append(ast.SubjectsDef(ident, members, None, None, span))
        return out

    def policies(self, node: Node) -> list[ast.Policy]:
        out = []
        for _name, (k, v) in self.mapping(node, "policies", ()).items():
            ident = self.defined_name(k, "policy")
            if ident is None:
                continue
            try:
                out.append(self.policy(ident, v))
            except _Shape as exc:
                self.diagnostics.append(exc.diagnostic)
        return out

    def policy(self, name: ast.Ident, node: Node) -> ast.Policy:
        m = self.mapping(node, f"policy {name.text}", POLICY_KEYS)
        items: list[ast.PolicyItem] = []
        for key, (k, v) in m.items():
            kspan = self.span(k)
            vspan = self.span(v)
            span = Span(file=self.file, line=kspan.line, col=kspan.col,
                        end_line=vspan.end_line, end_col=vspan.end_col)
            if key in ("description", "owner"):
                items.append(ast.Field(key, self.ident(v, key), span))  # type: ignore[arg-type]
            elif key == "rules":
                self.visit(v)
                if not isinstance(v, SequenceNode):
                    raise _Shape("rules must be a list", vspan)
                for r in v.value:
                    try:
                        items.append(self.rule(r))
                    except _Shape as exc:
                        self.diagnostics.append(exc.diagnostic)
            elif key == "keep":
                items.append(ast.Keep(self.names(v, "keep"), None, span))
            elif key == "refusal_languages":
                items.append(ast.RefusalLanguages(self.names(v, "refusal_languages"), span))
            elif key == "method":
                items.append(self.method(v, span))
            elif key == "require":
                items.append(self.require(v, span))
        pspan = self.span(node)
        span = Span(file=self.file, line=name.span.line, col=name.span.col,
                    end_line=pspan.end_line, end_col=pspan.end_col)
        return ast.Policy(name, tuple(items), span)

    def rule(self, node: Node) -> ast.PolicyItem:
        self.visit(node)
        if not isinstance(node, MappingNode) or not node.value:
            raise _Shape("a rule must be a mapping starting with refuse, anonymize or keep",
                         self.span(node))
        first = node.value[0][0]
        kind = first.value if isinstance(first, ScalarNode) else ""
        if kind not in RULE_KEYS:
            raise _Shape(f"unknown rule {kind!r}", self.span(first),
                         "a rule starts with refuse, anonymize or keep")
        self.seen.discard(id(node))
        m = self.mapping(node, f"{kind} rule", RULE_KEYS[kind])
        span = self.span(node)
        optional = ("about",) if kind == "keep" else ()
        missing = [k for k in RULE_KEYS[kind] if k not in m and k not in optional]
        if missing:
            raise _Shape(f"{kind} rule is missing {', '.join(missing)}", span,
                         f"a {kind} rule has: " + ", ".join(RULE_KEYS[kind]))
        if kind == "refuse":
            return ast.Refuse(self.names(m["refuse"][1], "refuse"),
                              self.names(m["about"][1], "about", subjects=True),
                              self.names(m["in"][1], "in"), self.names(m["via"][1], "via"), span)
        if kind == "anonymize":
            return ast.Anonymize(self.names(m["anonymize"][1], "anonymize", subjects=True),
                                 self.names(m["in"][1], "in"), span)
        about = self.names(m["about"][1], "about", subjects=True) if "about" in m else None
        return ast.Keep(self.names(m["keep"][1], "keep"), about, span)

    def method(self, node: Node, span: Span) -> ast.Method:
        if isinstance(node, ScalarNode):
            return ast.Method(self.name(node, "method"), (), span)
        m = self.mapping(node, "method", ())
        if len(m) != 1:
            raise _Shape("method must be a name, or one name mapping to its parameters",
                         self.span(node), "method: {neural_gate: {steps: 40}}")
        (name, (k, v)), = m.items()
        params: list[ast.Param] = []
        if not (isinstance(v, ScalarNode) and v.value in ("", "~", "null")):
            for pname, (pk, pv) in self.mapping(v, f"method {name}", ()).items():
                pspan = self.span(pk)
                vspan = self.span(pv)
                params.append(ast.Param(ast.Ident(pname, pspan), self.value(pv, pname),
                                        Span(file=self.file, line=pspan.line, col=pspan.col,
                                             end_line=vspan.end_line, end_col=vspan.end_col)))
        return ast.Method(ast.Ident(name, self.span(k)), tuple(params), span)

    def require(self, node: Node, span: Span) -> ast.Require:
        """`require:` is a list of `metric(split) op threshold` lines; a bare name (alone, or
        as the list's first item) names a stdlib requirement profile (`require: strict`)."""
        self.visit(node)
        if isinstance(node, ScalarNode) and _NAME.fullmatch(str(node.value) or ""):
            return ast.Require((), span, profile=ast.Ident(str(node.value), self.span(node)))
        if not isinstance(node, SequenceNode):
            raise _Shape("require must be a list of `metric(split) op threshold` lines",
                         self.span(node), "require: [\"refusal(heldout) >= 95%\"]")
        items = []
        profile = None
        for k, n in enumerate(node.value):
            s = self.scalar(n, "requirement")
            base = self.span(s)
            if k == 0 and _NAME.fullmatch(s.value or ""):
                profile = ast.Ident(s.value, base)
                continue
            if s.style in ("'", '"'):
                base = Span(file=base.file, line=base.line, col=base.col + 1,
                            end_line=base.end_line, end_col=base.end_col)
            try:
                items.append(parse_requirement(s.value, base))
            except DiagnosticError as exc:
                self.diagnostics.extend(exc.diagnostics)
        return ast.Require(tuple(items), span, profile=profile)


def yaml_comments(text: str) -> list[ast.Comment]:
    """Comments in YAML text: a `#` at line start or after a space, outside quotes."""
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        quote = None
        for j, ch in enumerate(line):
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "'\"" and (j == 0 or line[j - 1] in " \t[{,:-"):
                quote = ch
            elif ch == "#" and (j == 0 or line[j - 1] in " \t"):
                out.append(ast.Comment(i, j + 1, line[j:].rstrip()))
                break
    return out


def parse_yaml(text: str, file: str = "<string>") -> ast.SourceFile:
    """Load the YAML form into the surface tree; raises `DiagnosticError` on any problem."""
    loader = _Loader(file, text)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise DiagnosticError([Diagnostic("G002", "invalid YAML: nesting is too deep",
                                          Span.point(file))], {file: text}) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        span = (Span.point(file, mark.line + 1, mark.column + 1) if mark else Span.point(file))
        raise DiagnosticError(
            [Diagnostic("G002", f"invalid YAML: {exc.problem or exc.context}", span)],
            {file: text},
        ) from None
    except yaml.YAMLError as exc:
        raise DiagnosticError([Diagnostic("G002", f"invalid YAML: {exc}", Span.point(file))],
                              {file: text}) from None
    bad = _lone_surrogate(root)
    if bad is not None:
        raise DiagnosticError([Diagnostic(
            "G002", "invalid YAML: an escape makes a lone surrogate, which is not Unicode",
            loader.span(bad), "write the character itself, or both halves of a surrogate pair")],
            {file: text}) from None
    try:
        result = loader.document(root)
    except RecursionError:
        raise DiagnosticError([Diagnostic("G003", "policy structure is nested too deeply",
                                          Span.point(file))], {file: text}) from None
    except _Shape as exc:
        loader.diagnostics.append(exc.diagnostic)
        result = None
    if loader.diagnostics or result is None:
        raise DiagnosticError(sorted(loader.diagnostics, key=_order), {file: text})
    return result


def _lone_surrogate(root: Node | None) -> ScalarNode | None:
    """The first scalar (key or value) holding a lone surrogate (a `"\\ud800"` escape)."""
    stack = [root] if root is not None else []
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:  # aliases share nodes (and may even form cycles)
            continue
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            if isinstance(node.value, str) and _SURROGATE.search(node.value):
                return node
        elif isinstance(node, SequenceNode):
            stack.extend(reversed(node.value))
        elif isinstance(node, MappingNode):
            for k, v in reversed(node.value):
                stack.extend((v, k))
    return None


def _order(d: Diagnostic) -> tuple[int, int]:
    return (d.span.line, d.span.col) if d.span else (0, 0)
