"""Lowering of `require` blocks: metric names, splits, units and whether a metric applies.

A mixin of the lowerer (`ir.lower`): it reports through the lowerer's `error`/`warn` and reads
its stdlib.
"""

from __future__ import annotations

from gatelang.ir import model as ir
from gatelang.ir.hints import hint as _hint
from gatelang.syntax import ast

_PRIVATE_METRICS = ("refusal", "leakage", "exposure")
_LOCALITY_METRICS = ("locality", "over_refusal")
_UTILITY_METRICS = ("utility", "utility_drop")
_SPLIT_MODALITY = {"image": "image", "document": "document", "scene": "scene"}


class _FromProfile(ast.Requirement):
    """A requirement line that came from a `require PROFILE` expansion."""

    __slots__ = ("profile",)

    def __init__(self, metric, split, op, value, span, profile: str) -> None:
        super().__init__(metric, split, op, value, span)
        object.__setattr__(self, "profile", profile)


class RequirementLowering:
    """`require` thresholds, requirement profiles and keep/refuse contradictions."""

    def _profile_requirements(self, it: ast.Require) -> list[ast.Requirement]:
        """The stdlib profile's lines for `require NAME`, located at the profile's name.

        They come first, so a line the policy writes for the same metric(split) replaces the
        profile's (see `_requirements`); lines that do not apply to the policy are dropped there.
        """
        if it.profile is None:
            return []
        from gatelang.syntax.parser import parse_requirement

        name = it.profile.text
        lines = self.std.requirement_profiles.get(name)
        if lines is None:
            self.error("G129", f"unknown requirement profile {name!r}", it.profile.span,
                       _hint(self.std.requirement_profiles, name))
            return []
        out = []
        for line in lines:
            r = parse_requirement(line, it.profile.span)
            out.append(_FromProfile(r.metric, r.split, r.op, r.value, r.span, name))
        return out

    def _requirements(self, reqs, rules, keep) -> tuple[ir.Requirement, ...] | None:
        out: list[ir.Requirement] = []
        ok = True
        seen: dict[tuple[str, str, str], ast.Requirement] = {}
        modalities = {m for r in rules if r.kind == "refuse" for m in r.modalities}
        has_refuse = any(r.kind == "refuse" for r in rules)
        has_anon = any(r.kind == "anonymize" for r in rules)
        preserves_locality = any(k.what in ("other_subjects", "other_attributes") for k in keep) \
            or any(r.kind == "keep" for r in rules)
        preserves_utility = any(k.what == "utility" for k in keep)
        own = {(r.metric.text, r.split.text if r.split else None)
               for r in reqs if not isinstance(r, _FromProfile)}
        for r in reqs:
            name = r.metric.text
            if isinstance(r, _FromProfile) and (name, r.split.text if r.split else None) in own:
                continue  # the policy's own line on this measurement replaces the profile's
            if name not in self.std.metrics:
                self.error("G105", f"unknown metric {name!r}", r.metric.span,
                           _hint(self.std.metrics, name))
                ok = False
                continue
            metric = self.std.metrics[name]
            split = r.split.text if r.split else metric.default_split
            written = f"{name}({r.split.text})" if r.split else name
            if split not in metric.allowed_splits:
                what = "unknown split" if split not in self.std.splits else "split not allowed"
                self.error("G106", f"{what} {split!r} for {name}",
                           r.split.span if r.split else r.metric.span,
                           f"{name} can be measured on: " + ", ".join(metric.allowed_splits))
                ok = False
                continue
            v = r.value
            if v.kind not in ("number", "percent"):
                self.error("G116", f"threshold {v.raw} is not a number", v.span,
                           f"write e.g. {written} {r.op} 95%" if metric.unit == "percent"
                           else f"write e.g. {written} {r.op} 0.5")
                ok = False
                continue
            if metric.unit == "percent":
                if v.kind != "percent":
                    self.error("G116", f"{name} is a percentage; {v.raw} has no unit", v.span,
                               f"write e.g. {written} {r.op} {_example(v)}%")
                    ok = False
                    continue
                if not 0 <= float(v.value) <= 100:
                    self.error("G115", f"threshold {v.raw} is outside 0%..100%", v.span)
                    ok = False
                    continue
                threshold = float(v.value) / 100
            else:
                if v.kind != "number":
                    self.error("G116", f"{name} is a {metric.unit}, not {v.raw}", v.span,
                               "write a plain number" + (" between 0 and 1"
                                                         if metric.unit == "ratio" else ""))
                    ok = False
                    continue
                threshold = float(v.value)
                if threshold < 0 or (metric.unit == "ratio" and threshold > 1):
                    self.error("G115", f"threshold {v.raw} is out of range for {name}", v.span)
                    ok = False
                    continue
            applies = self._applies(name, split, has_refuse, has_anon, modalities,
                                    preserves_locality, preserves_utility)
            if applies and isinstance(r, _FromProfile):
                continue  # a profile is a bundle: the lines that apply to this policy
            if applies and not self._rules_incomplete:
                self.error("G128", f"{name}({split}) does not apply to this policy",
                           r.span, applies)
                ok = False
                continue
            if split == "unseen_language" and has_refuse and not self._rules_incomplete:
                # Model-independent half of G305 (the planner checks a model's languages): when
                # the rules name every language the stdlib knows, no model has one left.
                named = {lang for rule in rules if rule.kind == "refuse"
                         for lang in rule.languages}
                if set(self.std.languages) <= named:
                    self.error("G305", "no unseen language is left to measure on", r.span,
                               "the rules name every language the stdlib knows ("
                               + ", ".join(sorted(self.std.languages)) + "); drop one from "
                               "`in` or this requirement")
                    ok = False
                    continue
            key = (name, split, r.op)
            if key in seen:
                self.error("G114", f"requirement {name}({split}) {r.op} is given twice",
                           r.span, f"first given at line {seen[key].span.line}")
                ok = False
                continue
            seen[key] = r
            wrong_way = (metric.direction == "higher_is_stricter" and r.op in ("<", "<=")) or (
                metric.direction == "lower_is_stricter" and r.op in (">", ">="))
            if wrong_way:
                better = ">=" if metric.direction == "higher_is_stricter" else "<="
                self.warn("G202", f"an upper bound on {name} is unusual"
                          if better == ">=" else f"a lower bound on {name} is unusual",
                          r.span, f"{name} is usually required with {better}")
            out.append(ir.Requirement(metric=name, split=split, op=r.op, threshold=threshold,
                                      unit=metric.unit, span=r.span,
                                      profile=getattr(r, "profile", None)))
        # Lower bound above upper bound on the same measurement can never hold.
        for req in out:
            if req.op not in (">=", ">"):
                continue
            for other in out:
                if (other.metric, other.split) == (req.metric, req.split) and other.op in (
                    "<=", "<"
                ):
                    empty = req.threshold > other.threshold or (
                        req.threshold == other.threshold and (req.op == ">" or other.op == "<"))
                    if empty:
                        self.error("G118", f"requirements on {req.key} can never both hold",
                                   other.span, f"{req.display()} (line {req.span.line}) and "
                                   f"{other.display()}")
                        ok = False
        return tuple(out) if ok else None

    @staticmethod
    def _applies(name, split, has_refuse, has_anon, modalities, locality, utility) -> str | None:
        """Why a metric cannot be measured for this policy, or None when it can."""
        if name in _PRIVATE_METRICS and not has_refuse:
            return f"{name} is measured on refuse rules"
        if has_anon and name not in ("identification", "neurons_touched"):
            return "anonymize rules are measured with identification(image) and neurons_touched"
        if name == "identification" and not has_anon:
            return "identification is measured on anonymize rules"
        if name in _PRIVATE_METRICS and split in _SPLIT_MODALITY and \
                _SPLIT_MODALITY[split] not in modalities:
            return f"no rule of this policy applies via {_SPLIT_MODALITY[split]}"
        if name in _LOCALITY_METRICS and not locality:
            return "add `keep other_subjects` or `keep other_attributes` to measure it"
        if name in _UTILITY_METRICS and not utility:
            return "add `keep utility` to measure it"
        return None

    def _contradictions(self, policies: list[ir.Policy]) -> None:
        if not any(p.keep_rules() for p in policies):
            return
        refused: dict[tuple[str, str], ir.RefuseRule] = {}
        for p in policies:
            for r in p.refuse_rules():
                for a in r.attributes:
                    for s in r.subjects:
                        refused.setdefault((a, s), r)
        for p in policies:
            for k in p.keep_rules():
                for a in k.attributes:
                    hit = next(((a, s) for s in k.subjects if (a, s) in refused), None)
                    if hit:
                        r = refused[hit]
                        self.error("G117", f"keep contradicts a refuse rule: {a} of {hit[1]!r}",
                                   k.span, f"refused at {r.span.file}:{r.span.line}; "
                                   "remove one of the two")
                        break




def _example(v: ast.Value) -> str:
    x = float(v.value)
    return f"{x * 100:g}" if 0 < x <= 1 else f"{x:g}"
