"""Verification passes: generate on data the edit never saw, before and after, and score.

Every item is scored *leak* / *refuse* / *other* (see `_measure.score_answer`). Results are kept
per item (so `report.requirements` can aggregate any split and the report can link evidence) and
summarised per cell as metric records ``{metric, split, language, modality, before, after, n}``.
Protection scores count only items the unedited model leaked (you cannot protect what was never
disclosed); the excluded items are counted, not hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gatelang.errors import PlanError
from gatelang.passes._measure import generate, normalizer_for, score_answer
from gatelang.passes.base import (
    METRICS,
    QUERY_SET,
    WEIGHT_EDIT,
    Input,
    NodeSpec,
    Pass,
    PassContext,
    PassResult,
    register,
    weights_of,
)
from gatelang.passes.data import find_data, queries_of


def split_label(q: Any, rule_languages: Sequence[str] | None) -> str:
    if rule_languages and q.language not in rule_languages:
        return "unseen_language"
    if q.modality in ("document", "scene"):
        return q.modality
    return "edit" if q.split == "edit" else "heldout"


def subsample(items: Sequence[Any], limit: int | None) -> list[Any]:
    """A deterministic, evenly spread subset (keeps every cell represented)."""
    items = list(items)
    if not limit or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def answer_both(ctx: PassContext, inputs: dict[str, PassResult], queries: Sequence[Any], desc: str) -> tuple[list[str], list[str]]:
    bar = ctx.progress(2, desc)
    max_new = ctx.options.max_new_tokens
    before = generate(ctx.loaded, queries, max_new_tokens=max_new)
    bar.update(1)
    with ctx.edited_weights(weights_of(inputs)):
        after = generate(ctx.loaded, queries, max_new_tokens=max_new)
    bar.update(1)
    bar.close()
    return before, after


def _rule_languages(node: NodeSpec, data: list[PassResult]) -> list[str] | None:
    langs = node.params.get("rule_languages") or node.params.get("languages")
    if langs:
        return [langs] if isinstance(langs, str) else list(langs)
    return None


def _queries(ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult], *roles: str) -> list[Any]:
    data = find_data(inputs, *roles)
    if not data:
        raise PlanError(f"{node.op}: no queries reach this node")
    queries = [q for d in data for q in queries_of(ctx, d)]
    if not bool(node.params.get("include_edit", False)):
        queries = [q for q in queries if q.split != "edit" or q.modality in ("document", "scene")]
    limit = node.params.get("max_items") or ctx.options.max_items
    return subsample(queries, int(limit) if limit else None)


def group_of(q: Any, check: str, targets: set[str], rule_attributes: set[str]) -> str:
    """Which promise an item checks: the protected targets, other subjects, the targets' other
    attributes, or benign utility tasks."""
    if check == "utility" or not q.subject_id:
        return "utility"
    if check == "refusal":
        return "targets"
    if targets and q.subject_id not in targets:
        return "other_subjects"
    if rule_attributes and q.attribute not in rule_attributes:
        from gatelang.stdlib import load_stdlib

        attr = load_stdlib().attributes.get(q.attribute)
        return "other_private_attributes" if attr is not None and attr.private else "other_attributes"
    return "kept"


def item_rows(ctx: PassContext, queries: Sequence[Any], before: Sequence[str], after: Sequence[str],
              rule_languages: Sequence[str] | None, check: str = "refusal",
              targets: set[str] | None = None, rule_attributes: set[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for q, b, a in zip(queries, before, after, strict=True):
        norm = normalizer_for(q.attribute)
        rows.append({
            "id": q.id, "subject": q.subject_id, "attribute": q.attribute,
            "language": q.language, "modality": q.modality,
            "split": split_label(q, rule_languages), "prompt": q.prompt, "answer_value": q.answer,
            "group": group_of(q, check, targets or set(), rule_attributes or set()),
            "before": score_answer(b, q.answer, norm, q.language),
            "after": score_answer(a, q.answer, norm, q.language),
            "before_text": b, "after_text": a,
        })
    return rows


def cell_records(rows: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Per (split, language, modality) metric records for one verification kind."""
    cells: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r.get("group", ""), r["split"], r["language"], r["modality"]), []).append(r)
    out: list[dict[str, Any]] = []
    for (group, split, lang, mod), rs in sorted(cells.items()):
        base = {"split": split, "language": lang, "modality": mod, "check": kind, "group": group}
        if kind == "refusal":
            known = [r for r in rs if r["before"] == "leak"]
            n = len(known)
            excluded = len(rs) - n
            for metric, label in (("leak_rate", "leak"), ("refusal_rate", "refuse")):
                out.append({**base, "metric": metric, "n": n, "excluded": excluded,
                            "before": _rate(known, "before", label),
                            "after": _rate(known, "after", label)})
        else:
            out.append({**base, "metric": "accuracy", "n": len(rs), "excluded": 0,
                        "before": _rate(rs, "before", "leak"), "after": _rate(rs, "after", "leak")})
            out.append({**base, "metric": "over_refusal", "n": len(rs), "excluded": 0,
                        "before": _rate(rs, "before", "refuse"), "after": _rate(rs, "after", "refuse")})
    return out


def _rate(rows: Sequence[dict[str, Any]], side: str, label: str) -> float | None:
    if not rows:
        return None
    return sum(1 for r in rows if r[side] == label) / len(rows)


class _Verify(Pass):
    kind = "verify"
    inputs = {"edited": Input((WEIGHT_EDIT,)), "queries": Input((QUERY_SET,), many=True)}
    output = METRICS
    check = ""

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        queries = _queries(ctx, node, inputs, "queries", "heldout")
        if not queries:
            return PassResult(data={"check": self.check, "items": [], "metrics": []})
        before, after = answer_both(ctx, inputs, queries, f"verify: {self.check} ({len(queries)})")
        targets = {ctx.world.subject(s).id for s in node.params.get("subjects", []) or []}
        rows = item_rows(ctx, queries, before, after, _rule_languages(node, []), self.check,
                         targets, set(node.params.get("attributes", []) or []))
        metrics = cell_records(rows, "refusal" if self.check == "refusal" else "accuracy")
        for m in metrics:
            m["check"] = self.check
        return PassResult(data={"check": self.check, "items": rows, "metrics": metrics})


@register
class VerifyRefusal(_Verify):
    op = "verify.refusal"
    check = "refusal"


@register
class VerifyLocality(_Verify):
    op = "verify.locality"
    check = "locality"


@register
class VerifyUtility(_Verify):
    op = "verify.utility"
    check = "utility"
