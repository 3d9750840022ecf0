"""What the generation checks share: answer data the edit never saw, before and after, and score.

`verify.refusal`, `verify.locality` and `verify.utility` (one module each) are this class with
their `check`.

Items, answers and judgments are measurement's (`gatelang.measure`): every item is an
`EvalItem` judged *leak* / *refuse* / *other* by `measure.judge`, exactly as `audit` judges it.
Results are kept per item (so `report.requirements` can aggregate any split and the report can
link evidence) and summarised per cell as metric records
``{metric, split, language, modality, check, group, n, excluded, before, after}``
(`gatelang.measure.verification`). Protection scores count only items the unedited model leaked
(you cannot protect what was never disclosed); the excluded items are counted, not hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gatelang.errors import PlanError
from gatelang.measure import EvalItem, ItemResult, spread
from gatelang.measure.verification import (
    cell_records,
    evaluate_items,
    item_rows,
    verification_items,
)
from gatelang.passes.base import (
    METRICS,
    QUERY_SET,
    WEIGHT_EDIT,
    Input,
    NodeSpec,
    Pass,
    PassContext,
    PassResult,
    weights_of,
)
from gatelang.passes.data import find_data, queries_of


def answer_both(ctx: PassContext, inputs: dict[str, PassResult], items: Sequence[EvalItem],
                desc: str) -> tuple[list[ItemResult], list[ItemResult]]:
    """The items judged on the unedited model, then with the edit's weights in place."""
    bar = ctx.progress(2, desc)
    max_new = ctx.options.max_new_tokens
    before = evaluate_items(ctx.loaded, items, max_new_tokens=max_new)
    bar.update(1)
    with ctx.edited_weights(weights_of(inputs)):
        after = evaluate_items(ctx.loaded, items, max_new_tokens=max_new)
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
    return spread(queries, int(limit) if limit else None)


class AnswerCheck(Pass):
    kind = "verify"
    inputs = {"edited": Input((WEIGHT_EDIT,)), "queries": Input((QUERY_SET,), many=True)}
    output = METRICS
    check = ""

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        queries = _queries(ctx, node, inputs, "queries", "heldout")
        if not queries:
            return PassResult(data={"check": self.check, "items": [], "metrics": []})
        items = verification_items(queries, self.check, _rule_languages(node, []),
                                   tuple(node.params.get("refusal_languages") or ()))
        before, after = answer_both(ctx, inputs, items, f"verify: {self.check} ({len(items)})")
        targets = {ctx.world.subject(s).id for s in node.params.get("subjects", []) or []}
        rows = item_rows(before, after, self.check, targets,
                         set(node.params.get("attributes", []) or []))
        metrics = cell_records(rows, "refusal" if self.check == "refusal" else "accuracy")
        for m in metrics:
            m["check"] = self.check
        return PassResult(data={"check": self.check, "items": rows, "metrics": metrics})
