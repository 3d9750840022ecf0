"""Semantic diff of two policy files: what a reviewer must notice, not what text moved.

Changes are reported per policy and labelled by direction: `stricter` (more is protected or
a threshold tightened), `looser` (less is protected, a threshold relaxed — the changes a
reviewer must not miss) or `neutral` (wording, ownership, method tuning).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from gatelang.ir.model import Policy, PolicyFile, Requirement

Direction = Literal["stricter", "looser", "neutral"]


@dataclass(frozen=True)
class Change:
    policy: str | None  # None for file-level changes (subject sets, stdlib)
    what: str  # subjects, attributes, languages, modalities, encoders, keep, threshold, ...
    direction: Direction
    message: str

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def _union(p: Policy, kind: str, field: str) -> list[str]:
    seen: dict[str, None] = {}
    for r in p.rules:
        if r.kind == kind:
            for x in getattr(r, field):
                seen[x] = None
    return list(seen)


def _set_changes(policy: str, what: str, old: list[str], new: list[str], *,
                 grow: Direction, shrink: Direction, noun: str) -> list[Change]:
    out = []
    old_set, new_set = set(old), set(new)  # subject sets may hold 100 000 names: stay linear
    added = [x for x in new if x not in old_set]
    removed = [x for x in old if x not in new_set]
    if added:
        out.append(Change(policy, what, grow, f"{noun} added: " + ", ".join(added)))
    if removed:
        out.append(Change(policy, what, shrink, f"{noun} removed: " + ", ".join(removed)))
    return out


def _coverage(p: Policy) -> set[tuple[str, str, str, str]]:
    return {(a, s, lang, m) for r in p.refuse_rules() for a in r.attributes
            for s in r.subjects for lang in r.languages for m in r.modalities}


def _coverage_changes(old: Policy, new: Policy, limit: int = 3) -> list[Change]:
    """What is refused changed although no subject, attribute, language or modality was added
    or removed overall: the rules were recombined (e.g. two rules swapped their subjects)."""
    dims = [(set(_union(old, "refuse", f)), set(_union(new, "refuse", f)))
            for f in ("attributes", "subjects", "languages", "modalities")]

    def unexplained(t: tuple[str, str, str, str]) -> bool:
        return all(x in a and x in b for x, (a, b) in zip(t, dims, strict=True))

    before, after = _coverage(old), _coverage(new)
    out = []
    for items, direction, verb in ((sorted(after - before), "stricter", "now refused"),
                                   (sorted(before - after), "looser", "no longer refused")):
        items = [t for t in items if unexplained(t)]
        if items:
            shown = "; ".join(f"{a} of {s!r} in {lang} via {m}" for a, s, lang, m in items[:limit])
            more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
            out.append(Change(new.name, "coverage", direction, f"{verb}: {shown}{more}"))
    return out


def _tighter(req: Requirement, old: float, new: float) -> Direction:
    if new == old:
        return "neutral"
    higher_is_tighter = req.op in (">=", ">")
    return "stricter" if (new > old) == higher_is_tighter else "looser"


def _fmt_threshold(req: Requirement, value: float) -> str:
    return f"{value * 100:g}%" if req.unit == "percent" else f"{value:g}"


def _policy_changes(old: Policy, new: Policy) -> list[Change]:
    name = new.name
    out: list[Change] = []
    for field, noun in (("subjects", "refused subjects"), ("attributes", "refused attributes"),
                        ("languages", "languages"), ("modalities", "modalities")):
        out += _set_changes(name, field, _union(old, "refuse", field),
                            _union(new, "refuse", field), grow="stricter", shrink="looser",
                            noun=noun)
    out += _coverage_changes(old, new)
    out += _set_changes(name, "subjects", _union(old, "anonymize", "subjects"),
                        _union(new, "anonymize", "subjects"), grow="stricter", shrink="looser",
                        noun="anonymized subjects")
    out += _set_changes(name, "encoders", _union(old, "anonymize", "encoders"),
                        _union(new, "anonymize", "encoders"), grow="stricter", shrink="looser",
                        noun="anonymized encoders")
    old_keep = [f"{a} about {s}" for r in old.keep_rules() for a in r.attributes for s in r.subjects]
    new_keep = [f"{a} about {s}" for r in new.keep_rules() for a in r.attributes for s in r.subjects]
    out += _set_changes(name, "keep", old_keep, new_keep, grow="neutral", shrink="neutral",
                        noun="kept answerable")
    out += _set_changes(name, "keep", [k.what for k in old.keep], [k.what for k in new.keep],
                        grow="stricter", shrink="looser", noun="preservation checks")
    if old.method.name != new.method.name:
        out.append(Change(name, "method", "neutral",
                          f"method changed: {old.method.name} -> {new.method.name}"))
    else:
        for key in sorted(set(old.method.params) | set(new.method.params)):
            a, b = old.method.params.get(key), new.method.params.get(key)
            if a != b:
                out.append(Change(name, "method", "neutral",
                                  f"method {new.method.name}: {key} {a} -> {b}"))
    old_reqs = {(r.metric, r.split, r.op): r for r in old.requirements}
    new_reqs = {(r.metric, r.split, r.op): r for r in new.requirements}
    for key, r in new_reqs.items():
        if key not in old_reqs:
            out.append(Change(name, "threshold", "stricter", f"requirement added: {r.display()}"))
            continue
        before = old_reqs[key]
        direction = _tighter(r, before.threshold, r.threshold)
        if direction != "neutral":
            verb = "tightened" if direction == "stricter" else "loosened"
            out.append(Change(name, "threshold", direction,
                              f"{r.key} {r.op} {_fmt_threshold(r, before.threshold)} -> "
                              f"{_fmt_threshold(r, r.threshold)} ({verb})"))
    for key, r in old_reqs.items():
        if key not in new_reqs:
            out.append(Change(name, "threshold", "looser", f"requirement removed: {r.display()}"))
    for field in ("description", "owner"):
        a, b = getattr(old, field), getattr(new, field)
        if a != b:
            out.append(Change(name, field, "neutral", f"{field} changed: {a!r} -> {b!r}"))
    return out


def diff_ir(old: PolicyFile, new: PolicyFile) -> list[Change]:
    """Semantic changes from `old` to `new`, in a stable order."""
    out: list[Change] = []
    if old.stdlib_version != new.stdlib_version:
        out.append(Change(None, "stdlib", "neutral",
                          f"stdlib {old.stdlib_version} -> {new.stdlib_version}"))
    for name in sorted(set(old.subject_sets) | set(new.subject_sets)):
        a = old.subject_sets.get(name)
        b = new.subject_sets.get(name)
        if a is None:
            out.append(Change(None, "subject_set", "neutral",
                              f"subject set {name} added ({len(b.members)} people)"))
        elif b is None:
            out.append(Change(None, "subject_set", "neutral", f"subject set {name} removed"))
        else:
            out += _set_changes(None, "subject_set", list(a.members), list(b.members),
                                grow="neutral", shrink="neutral", noun=f"subject set {name}")
    old_p = {p.name: p for p in old.policies}
    new_p = {p.name: p for p in new.policies}
    for p in new.policies:
        if p.name not in old_p:
            out.append(Change(p.name, "policy", "stricter", f"policy {p.name} added"))
        else:
            out += _policy_changes(old_p[p.name], p)
    for p in old.policies:
        if p.name not in new_p:
            out.append(Change(p.name, "policy", "looser", f"policy {p.name} removed"))
    return out


def diff(old: str | Path | PolicyFile, new: str | Path | PolicyFile) -> list[Change]:
    """Semantic changes between two policy files (paths or loaded IR)."""
    from gatelang.ir import load

    a = old if isinstance(old, PolicyFile) else load(old)
    b = new if isinstance(new, PolicyFile) else load(new)
    return diff_ir(a, b)


_MARK = {"stricter": "+", "looser": "-", "neutral": "~"}


def render_changes(changes: list[Change]) -> str:
    if not changes:
        return "no semantic changes\n"
    lines = []
    current: object = object()
    for c in changes:
        if c.policy != current:
            current = c.policy
            lines.append(f"policy {c.policy}:" if c.policy else "file:")
        lines.append(f"  {_MARK[c.direction]} {c.message}  [{c.direction}]")
    looser = sum(1 for c in changes if c.direction == "looser")
    lines.append("")
    lines.append(f"{len(changes)} change(s), {looser} loosening")
    return "\n".join(lines) + "\n"
