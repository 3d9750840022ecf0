"""Lowering: surface tree -> resolved, checked IR.

Checks collect diagnostics instead of stopping at the first one, so `gatelang check` can show
every problem in a file at once. A construct with an error is left out of the IR and the
checks that depend on it are skipped, which keeps one mistake from cascading into many.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gatelang.errors import Diagnostic, DiagnosticError, Span
from gatelang.ir import model as ir
from gatelang.ir.hints import hint as _hint
from gatelang.ir.method_params import MethodLowering
from gatelang.ir.requirements import RequirementLowering
from gatelang.ir.result import CheckResult
from gatelang.ir.subjects import MAX_SUBJECTS, SubjectFileError, read_subject_file
from gatelang.stdlib import Stdlib, load_stdlib
from gatelang.syntax import ast
from gatelang.syntax.source import parse_source, read_source

SUPPORTED_VERSIONS = (1,)
ALL = "all"


_ROOT_HINT = ("policies may only read files inside the checked policy's folder "
              "(or the folder given with --root)")


def _order(d: Diagnostic) -> tuple:
    s = d.span
    return (s.file, s.line, s.col, d.code) if s else ("", 0, 0, d.code)


def _first_repeat(items: list[str]) -> str | None:
    """The first item (in order of first appearance) that occurs more than once."""
    seen: set[str] = set()
    repeated: set[str] = set()
    for x in items:
        if x in seen:
            repeated.add(x)
        seen.add(x)
    return next((x for x in dict.fromkeys(items) if x in repeated), None)


def _path_problem(rel: str) -> str | None:
    """Why a path written in a policy cannot name a file at all (before looking at the disk)."""
    if "\x00" in rel:
        return "the path contains a NUL character"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in rel):
        return "the path contains a control character"
    if not rel.strip():
        return "the path is empty"
    return None


class _Lowerer(MethodLowering, RequirementLowering):
    """Resolution: files, imports, scope, subject sets, names and rules (this module); method
    parameters and requirements are checked by the two mixins."""

    def __init__(self, root: Path, stdlib: Stdlib) -> None:
        self.root = root.resolve()
        self.entry_dir = self.root  # set by `lower` to the entry file's folder
        self.inputs: list[str] = []  # every file read besides the entry, entry-relative
        self.std = stdlib
        self.diags: list[Diagnostic] = []
        self._rules_incomplete = False
        self.sources: dict[str, str] = {}
        self.stack: list[Path] = []
        self.imported: dict[Path, dict[str, ir.SubjectSet]] = {}
        self.failed_sets: set[str] = set()  # defined, but with an error already reported
        self.silent_drops = 0  # constructs left out for an error reported elsewhere

    # -- diagnostics -----------------------------------------------------------------------------
    def error(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diags.append(Diagnostic(code, message, span, hint))

    def warn(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diags.append(Diagnostic(code, message, span, hint, severity="warning"))

    # -- paths -----------------------------------------------------------------------------------
    def _inside(self, target: Path) -> bool:
        try:
            target.resolve().relative_to(self.root)
        except ValueError:
            return False
        return True

    @staticmethod
    def _unresolvable(target: Path) -> str | None:
        """Why `target` cannot be followed (a symbolic-link loop, an over-long name), if so."""
        try:
            target.resolve()
        except RuntimeError:  # Python < 3.13 reports a symlink loop this way
            return "a symbolic link loop"
        except (OSError, ValueError) as exc:
            return getattr(exc, "strerror", None) or str(exc)
        return None

    def _shown(self, base_file: str, rel: str) -> str:
        return os.path.normpath(os.path.join(os.path.dirname(base_file), rel))

    def _rel(self, real: Path) -> str:
        rel = Path(os.path.relpath(real.resolve(), self.entry_dir)).as_posix()
        if rel not in self.inputs:
            self.inputs.append(rel)
        return rel

    # -- files -----------------------------------------------------------------------------------
    def lower_file(self, src: ast.SourceFile, real: Path | None) -> ir.PolicyFile | None:
        self.sources[src.path] = src.source
        if real is not None:
            self.stack.append(real.resolve())
        if src.header.version not in SUPPORTED_VERSIONS:
            self.error("G100", f"unsupported language version {src.header.version}",
                       src.header.span, "this gatelang reads `gatelang 1`")
        uses, attrs, langs, sets = self._scope(src)
        policies = self._policies(src, attrs, langs, sets)
        if real is not None:
            self.stack.pop()
        return ir.PolicyFile(
            version=src.header.version,
            stdlib_version=self.std.version,
            stdlib_sha256=self.std.sha256,
            source=src.path,
            syntax=src.syntax,
            uses=tuple(uses),
            attributes_in_scope=tuple(a for a in self.std.attributes if a in attrs),
            languages_in_scope=tuple(lang for lang in self.std.languages if lang in langs),
            subject_sets=sets,
            policies=tuple(policies),
            span=src.header.span,
        )

    def _scope(self, src: ast.SourceFile):
        uses: list[ir.Use] = []
        attrs: set[str] = set()
        langs: set[str] = set()
        sets: dict[str, ir.SubjectSet] = {}
        seen_uses: set[str] = set()
        for item in src.items:
            if not isinstance(item, ast.Use):
                continue
            key = ("file:" if item.is_file else "") + item.target.text
            if key in seen_uses:
                self.warn("G201", f"{item.target.text!r} is used twice", item.span)
                continue
            seen_uses.add(key)
            if item.is_file:
                imported = self._import(src, item)
                if imported is None:
                    continue
                path, isets = imported
                uses.append(ir.Use(kind="file", target=item.target.text, path=path,
                                   span=item.span))
                for name, s in isets.items():
                    if name in sets:
                        self.error("G114", f"subject set {name!r} is defined twice",
                                   item.span, f"also defined in {sets[name].defined_in}")
                    else:
                        sets[name] = s
                continue
            module = item.target.text
            mod = module.removeprefix("stdlib.") if module.startswith("stdlib.") else None
            if mod is None or mod not in self.std.modules:
                self.error("G108", f"unknown module {module!r}", item.target.span,
                           _hint(("stdlib." + m for m in self.std.modules), module))
                continue
            for name in self.std.modules[mod]:
                (attrs if name in self.std.attributes else langs).add(name)
            uses.append(ir.Use(kind="stdlib", target=module, span=item.span))
        for item in src.items:
            if isinstance(item, ast.SubjectsDef):
                s = self._subject_set(src, item)
                if s is None:
                    self.failed_sets.add(item.name.text)
                    continue
                if s.name in sets:
                    self.error("G114", f"subject set {s.name!r} is defined twice",
                               item.name.span, f"first defined in {sets[s.name].defined_in}")
                else:
                    sets[s.name] = s
        return uses, attrs, langs, sets

    def _locate(self, src: ast.SourceFile, rel: str, span: Span, what: str
                ) -> tuple[str, Path | None]:
        """A path written in `src`, relative to its file; None (and G120) outside the root."""
        problem = _path_problem(rel)
        if problem is not None:
            self.error("G112", f"cannot read {what}{rel!r}: {problem}", span,
                       "write the file's path relative to the policy file")
            return rel, None
        shown = self._shown(src.path, rel)
        base = Path(src.path).parent if src.path != "<string>" else Path(".")
        target = base / rel
        problem = self._unresolvable(target)
        if problem is not None:
            self.error("G112", f"cannot read {what}{rel!r}: {problem}", span)
            return shown, None
        if not self._inside(target):
            self.error("G120", f"{what}{rel!r} is outside the policy's root folder", span,
                       _ROOT_HINT)
            return shown, None
        return shown, target

    def _import(self, src: ast.SourceFile, item: ast.Use):
        rel = item.target.text
        shown, target = self._locate(src, rel, item.target.span, "")
        if target is None:
            return None
        real = target.resolve()
        if real in self.stack:
            chain = " -> ".join(p.name for p in [*self.stack[self.stack.index(real):], real])
            self.error("G119", f"import cycle: {chain}", item.target.span,
                       "move the shared subject sets into a file that imports nothing")
            return None
        if real in self.imported:
            return self._rel(real), self.imported[real]
        try:
            text = read_source(target, shown)
            sub = parse_source(text, shown)
        except DiagnosticError as exc:
            if not exc.diagnostics or exc.diagnostics[0].code == "G004":
                self.error("G112", f"cannot read {rel!r}", item.target.span,
                           exc.diagnostics[0].message if exc.diagnostics else None)
            else:
                self.diags.extend(exc.diagnostics)
                self.sources.update(exc.sources)
            return None
        lowered = self.lower_file(sub, real)
        for p in sub.items:
            if isinstance(p, ast.Policy):
                self.error("G124", f"imported file {rel!r} defines policy {p.name.text!r}",
                           item.target.span,
                           "an imported file may only define subject sets; check it on its own")
                break
        sets = dict(lowered.subject_sets) if lowered else {}
        self.imported[real] = sets
        return self._rel(real), sets

    def _subject_set(self, src: ast.SourceFile, item: ast.SubjectsDef) -> ir.SubjectSet | None:
        name = item.name.text
        if item.members is not None:
            members = [m.text for m in item.members]
            source = ir.SubjectSource(kind="inline", span=item.span)
            for m in item.members:
                if not m.text.strip():
                    self.error("G111", "a subject name must not be empty", m.span)
            if len(members) > MAX_SUBJECTS:
                self.error("G113", f"subject set {name!r} lists {len(members)} names; at most "
                           f"{MAX_SUBJECTS} are allowed", item.name.span,
                           "split the people into several policies")
                return None
        else:
            assert item.file is not None
            rel = item.file.text
            shown, target = self._locate(src, rel, item.file.span, "subject file ")
            if target is None:
                return None
            column = item.column.text if item.column else None
            try:
                names, fmt = read_subject_file(target, shown, column, item.file.span)
            except SubjectFileError as exc:
                self.diags.append(exc.diagnostic)
                return None
            members = list(names)
            self._rel(target)
            source = ir.SubjectSource(kind="file", file=rel, column=column, format=fmt,
                                      span=item.span)
        if not members:
            self.error("G111", f"subject set {name!r} is empty", item.name.span,
                       "list at least one person, or remove the set")
            return None
        unique = list(dict.fromkeys(members))
        if len(unique) != len(members):
            dup = _first_repeat(members)  # linear: a subject file may list 100 000 people
            self.warn("G201", f"subject set {name!r} lists {dup!r} more than once",
                      item.span, "duplicates are ignored")
        return ir.SubjectSet(name=name, members=tuple(unique), source=source,
                             defined_in=src.path, span=item.span)

    # -- policies --------------------------------------------------------------------------------
    def _policies(self, src, attrs, langs, sets) -> list[ir.Policy]:
        out: list[ir.Policy] = []
        names: dict[str, Span] = {}
        for item in src.items:
            if not isinstance(item, ast.Policy):
                continue
            if item.name.text in names:
                prev = names[item.name.text]
                self.error("G114", f"policy {item.name.text!r} is defined twice",
                           item.name.span, f"first defined at line {prev.line}")
                continue
            names[item.name.text] = item.name.span
            p = self._policy(item, attrs, langs, sets)
            if p is not None:
                out.append(p)
        self._contradictions(out)
        return out

    def _names(self, idents, kind: str, universe, scope, module_of) -> tuple[str, ...] | None:
        """Resolve attribute or language names; `all` means everything in scope."""
        out: list[str] = []
        ok = True
        for ident in idents:
            name = ident.text
            if name == ALL:
                if kind == "attribute":
                    out.extend(a for a in universe if a in scope and universe[a].private)
                else:
                    out.extend(x for x in universe if x in scope)
                continue
            if name not in universe:
                code = "G101" if kind == "attribute" else "G102"
                self.error(code, f"unknown {kind} {name!r}", ident.span,
                           _hint(list(universe), name))
                ok = False
            elif name not in scope:
                self.error("G109", f"{kind} {name!r} is not in scope", ident.span,
                           f"add `use stdlib.{module_of(name)}` at the top of the file")
                ok = False
            elif name in out:
                self.warn("G201", f"{kind} {name!r} is listed twice", ident.span)
            else:
                out.append(name)
        if ok and not out:
            self.error("G109", f"`all` names no {kind} here", idents[0].span,
                       f"add a `use stdlib...` line that brings {kind}s into scope")
            return None
        return tuple(dict.fromkeys(out)) if ok else None

    def _module_of(self, name: str) -> str:
        candidates = [m for m, names in self.std.modules.items() if name in names]
        return min(candidates, key=lambda m: (m.count(".") == 0, len(m))) if candidates else "?"

    def _subjects(self, idents, sets) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        members: list[str] = []
        refs: list[str] = []
        ok = True
        for ident in idents:
            if ident.quoted:
                if not ident.text.strip():
                    self.error("G111", "a subject name must not be empty", ident.span)
                    ok = False
                    continue
                members.append(ident.text)
                refs.append(ident.text)
            elif ident.text in sets:
                members.extend(sets[ident.text].members)
                refs.append(ident.text)
            elif ident.text in self.failed_sets:
                ok = False  # its own error is reported; "undefined" would only add noise
                self.silent_drops += 1
            else:
                self.error("G110", f"undefined subject set {ident.text!r}", ident.span,
                           _hint(sets, ident.text, none="no subject sets are defined")
                           + '; quote a person\'s name to name them directly ("Alice Okafor")')
                ok = False
        return (tuple(dict.fromkeys(members)), tuple(refs)) if ok else None

    def _modalities(self, idents) -> tuple[str, ...] | None:
        out: list[str] = []
        ok = True
        for ident in idents:
            if ident.text == ALL:
                out.extend(ir.MODALITIES)
            elif ident.text in ir.MODALITIES:
                out.append(ident.text)
            else:
                self.error("G103", f"unknown modality {ident.text!r}", ident.span,
                           _hint([*ir.MODALITIES, ALL], ident.text))
                ok = False
        return tuple(m for m in ir.MODALITIES if m in out) if ok else None

    def _policy(self, item: ast.Policy, attrs, langs, sets) -> ir.Policy | None:
        fields: dict[str, ast.Field] = {}
        rules: list[Any] = []
        keep: list[ir.Preservation] = []
        method_ast: ast.Method | None = None
        require_ast: list[ast.Requirement] = []
        require_seen: ast.Require | None = None
        start_errors = len([d for d in self.diags if d.severity == "error"])
        start_drops = self.silent_drops
        accepted: list[str] = []
        accepted_seen: ast.RefusalLanguages | None = None
        for it in item.items:
            if isinstance(it, ast.RefusalLanguages):
                if accepted_seen is not None:
                    self.error("G114", "refusal_languages is given twice", it.span,
                               f"first given at line {accepted_seen.span.line}")
                    continue
                accepted_seen = it
                names = self._names(it.languages, "language", self.std.languages, langs,
                                    self._module_of)
                accepted.extend(names or ())
            elif isinstance(it, ast.Field):
                if it.key in fields:
                    self.error("G114", f"{it.key} is given twice", it.span,
                               f"first given at line {fields[it.key].span.line}")
                else:
                    fields[it.key] = it
            elif isinstance(it, ast.Refuse):
                a = self._names(it.attributes, "attribute", self.std.attributes, attrs,
                                self._module_of)
                s = self._subjects(it.subjects, sets)
                langs_ = self._names(it.languages, "language", self.std.languages, langs,
                                     self._module_of)
                m = self._modalities(it.modalities)
                if a is None or s is None or langs_ is None or m is None:
                    continue
                if any(x.text == ALL for x in it.modalities):
                    # `via all`: every modality some listed attribute has queries for.
                    m = tuple(x for x in m if x in ("text", "image") or any(
                        self._has_modality(attr, x) for attr in a))
                if not self._supports(a, langs_, m, it):
                    continue
                rule = ir.RefuseRule(attributes=a, subjects=s[0], subject_sets=s[1],
                                     languages=langs_, modalities=m, span=it.span)
                twin = next((r for r in rules if isinstance(r, ir.RefuseRule) and
                             (r.attributes, r.subjects, r.languages, r.modalities) ==
                             (a, s[0], langs_, m)), None)
                if twin is not None:
                    self.warn("G201", "this rule repeats an earlier one", it.span,
                              f"same as line {twin.span.line}; the repeat is ignored")
                    continue
                rules.append(rule)
            elif isinstance(it, ast.Anonymize):
                s = self._subjects(it.subjects, sets)
                encs: list[str] = []
                bad = False
                for e in it.encoders:
                    if e.text == ALL:
                        encs.extend(ir.ENCODERS)
                    elif e.text in ir.ENCODERS:
                        encs.append(e.text)
                    else:
                        self.error("G125", f"unknown encoder {e.text!r}", e.span,
                                   _hint([*ir.ENCODERS, ALL], e.text))
                        bad = True
                if s is None or bad:
                    continue
                rules.append(ir.AnonymizeRule(
                    subjects=s[0], subject_sets=s[1],
                    encoders=tuple(x for x in ir.ENCODERS if x in encs), span=it.span))
            elif isinstance(it, ast.Keep):
                if it.subjects is None:
                    for k in it.items:
                        if k.text in ir.PRESERVATIONS:
                            if any(p.what == k.text for p in keep):
                                self.warn("G201", f"{k.text!r} is kept twice", k.span)
                            else:
                                keep.append(ir.Preservation(what=k.text, span=k.span))
                        else:
                            extra = ("; to keep an attribute answerable write "
                                     f"`keep {k.text} about SUBJECTS`"
                                     if k.text in self.std.attributes else "")
                            self.error("G121", f"unknown keep clause {k.text!r}", k.span,
                                       _hint(ir.PRESERVATIONS, k.text) + extra)
                    continue
                a = self._names(it.items, "attribute", self.std.attributes, attrs,
                                self._module_of)
                s = self._subjects(it.subjects, sets)
                if a is None or s is None:
                    continue
                rules.append(ir.KeepRule(attributes=a, subjects=s[0], subject_sets=s[1],
                                         span=it.span))
            elif isinstance(it, ast.Method):
                if method_ast is not None:
                    self.error("G114", "method is given twice", it.span,
                               f"first given at line {method_ast.span.line}")
                else:
                    method_ast = it
            elif isinstance(it, ast.Require):
                if require_seen is not None:
                    self.error("G114", "require is given twice", it.span,
                               f"first given at line {require_seen.span.line}; merge the blocks")
                else:
                    require_seen = it
                    require_ast.extend(self._profile_requirements(it))
                    require_ast.extend(it.items)
        kinds = {r.kind for r in rules if r.kind != "keep"}
        edit_rules = [r for r in rules if r.kind != "keep"]
        had_errors = len([d for d in self.diags if d.severity == "error"]) > start_errors \
            or self.silent_drops > start_drops
        self._rules_incomplete = had_errors  # a dropped rule must not make metrics "not apply"
        if not edit_rules and not had_errors:
            self.error("G123", f"policy {item.name.text!r} has no refuse or anonymize rule",
                       item.name.span, "add e.g. `refuse home_address about SUBJECTS in en via text`")
        if "anonymize" in kinds and len(kinds) == 1:
            for k in keep:
                self.warn("G203", f"`keep {k.what}` is not verified for anonymize rules", k.span,
                          "the identity check itself measures benign accuracy of the encoders")
        if len(kinds) > 1:
            first_anon = next(r for r in rules if r.kind == "anonymize")
            self.error("G122", "a policy cannot mix refuse and anonymize rules",
                       first_anon.span,
                       "they need different methods; put the anonymize rule in its own policy")
        method = self._method(method_ast, kinds, item)
        requirements = self._requirements(require_ast, rules, keep)
        if had_errors or method is None or requirements is None or len(kinds) > 1:
            return None
        if not edit_rules:
            return None
        return ir.Policy(
            name=item.name.text,
            description=fields["description"].value.text if "description" in fields else None,
            owner=fields["owner"].value.text if "owner" in fields else None,
            rules=tuple(rules), keep=tuple(keep), method=method,
            requirements=requirements, refusal_languages=tuple(accepted), span=item.span,
        )

    def _has_modality(self, attribute: str, modality: str) -> bool:
        spec = self.std.attributes[attribute]
        if modality == "document":
            return bool(spec.document_templates)
        if modality == "scene":
            return spec.scene is not None
        return True

    def _supports(self, attrs, langs, modalities, rule: ast.Refuse) -> bool:
        ok = True
        for a in attrs:
            spec = self.std.attributes[a]
            span = next((i.span for i in rule.attributes if i.text == a), rule.span)
            for lang in langs:
                if lang not in spec.templates:
                    self.error("G127", f"attribute {a!r} has no {lang} queries", span,
                               "languages with queries: " + ", ".join(spec.languages))
                    ok = False
            explicit = {x.text for x in rule.modalities}
            if "document" in explicit and not all(lang in spec.document_templates
                                                  for lang in langs):
                have = [n for n, x in self.std.attributes.items() if x.document_templates]
                self.error("G126", f"attribute {a!r} has no document-image queries", span,
                           "attributes with document queries: " + ", ".join(have))
                ok = False
            if "scene" in explicit and spec.scene is None:
                have = [n for n, x in self.std.attributes.items() if x.scene]
                self.error("G126", f"attribute {a!r} has no scene-image queries", span,
                           "attributes with scene queries: " + ", ".join(have))
                ok = False
        return ok



def lower(src: ast.SourceFile, *, root: str | Path | None = None,
          stdlib: Stdlib | None = None) -> CheckResult:
    """Resolve and check a parsed file; never raises for problems in the policy."""
    base = Path(root) if root is not None else (
        Path(src.path).parent if src.path != "<string>" else Path("."))
    low = _Lowerer(base, stdlib or load_stdlib())
    real = Path(src.path) if src.path != "<string>" else None
    low.entry_dir = (real.parent if real is not None else Path(".")).resolve()
    result = low.lower_file(src, real)
    if not any(isinstance(i, (ast.Policy, ast.SubjectsDef)) for i in src.items) and \
            not any(d.severity == "error" for d in low.diags):
        # Only when the file would otherwise pass: an empty file must not look like success.
        low.warn("G205", "the file defines no policy and no subject set", src.header.span,
                 "a policy starts with `policy NAME {` (in YAML: under `policies:`); "
                 "an empty file passes nothing on to `plan` or `apply`")
    if result is not None:
        result = result.model_copy(update={"inputs": tuple(low.inputs)})
    diags = sorted(low.diags, key=_order)
    errors = any(d.severity == "error" for d in diags)
    return CheckResult(None if errors else result, diags, low.sources)
