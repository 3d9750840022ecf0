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

Every greedy answer a verify pass needs goes through `ask`, i.e. the run's answer cache
(`gatelang.measure.answers`) under the current weight state: the unedited model answers a
question once per run (and once per cache folder), however many passes ask it. A pass that
declares its questions (`asks`) lets `prefetch` decode them together with its siblings': the
first verify pass of an edit to run generates what every verify pass of that edit will ask,
one batched call per weight state, and the others find their answers waiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gatelang.errors import GatelangError, PlanError
from gatelang.measure import ANSWER_BATCH_SIZE, EvalItem, ItemResult, judge, spread
from gatelang.measure.answers import Ask
from gatelang.measure.verification import (
    cell_records,
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
    get_pass,
    weights_of,
)
from gatelang.passes.data import find_data, queries_of

# One side of a verify pass's questions: ("base" | "edited", max_new_tokens, asks).
AskGroup = tuple[str, int, list[Ask]]


def ask(ctx: PassContext, asks: Sequence[Ask], *, max_new_tokens: int | None = None,
        desc: str = "verify") -> list[str]:
    """Greedy answers on the weights the model holds now, through the run's answer cache."""
    tokens = ctx.options.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
    return ctx.answers.answers(ctx.loaded, ctx.weight_state(), list(asks),
                               max_new_tokens=tokens,
                               batch_size=ctx.options.batch_size or ANSWER_BATCH_SIZE, desc=desc)


def judged_answers(ctx: PassContext, items: Sequence[EvalItem], *,
                   max_new_tokens: int | None = None) -> list[ItemResult]:
    """`evaluate_items`, through the answer cache: the items judged on the current weights."""
    answers = ask(ctx, [Ask(it) for it in items], max_new_tokens=max_new_tokens)
    return [judge(it, a) for it, a in zip(items, answers, strict=True)]


def answer_both(ctx: PassContext, inputs: dict[str, PassResult], items: Sequence[EvalItem],
                desc: str) -> tuple[list[ItemResult], list[ItemResult]]:
    """The items judged on the unedited model, then with the edit's weights in place."""
    bar = ctx.progress(2, desc)
    before = judged_answers(ctx, items)
    bar.update(1)
    with ctx.edited_weights(weights_of(inputs)):
        after = judged_answers(ctx, items)
    bar.update(1)
    bar.close()
    return before, after


def _sibling_inputs(ctx: PassContext, node: NodeSpec) -> dict[str, PassResult] | None:
    """A not-yet-run node's inputs as the executor will give them, or None when a parent has
    no result yet."""
    assert ctx.results is not None
    out: dict[str, PassResult] = {}
    for role, parent_ids in node.parents.items():
        for i, pid in enumerate(parent_ids):
            if pid not in ctx.results:
                return None
            out[role if len(parent_ids) == 1 else f"{role}.{i}"] = ctx.results[pid]
    return out


def prefetch(ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> None:
    """Decode what every pending verify pass of this node's edit will ask, batched per state.

    Runs once per edit (the first of its verify passes to run); a sibling whose inputs are not
    ready, or whose questions cannot be listed (it will report that error itself), is left to
    ask for itself. Answers land in the run's answer cache; nothing else changes.
    """
    edited = tuple(node.parents.get("edited", ()))
    if ctx.plan_nodes is None or ctx.results is None or not edited or edited in ctx.prefetched:
        return
    ctx.prefetched.add(edited)
    groups: dict[tuple[str, int], list[Ask]] = {}
    for spec in ctx.plan_nodes:
        if (spec.kind != "verify" or spec.id in ctx.results
                or tuple(spec.parents.get("edited", ())) != edited):
            continue
        cls = get_pass(spec.op)
        lister = getattr(cls, "asks", None)
        sib = inputs if spec.id == node.id else _sibling_inputs(ctx, spec)
        if lister is None or sib is None:
            continue
        try:
            listed = cls().asks(ctx, spec, sib)
        except GatelangError:
            continue
        for side, tokens, asks in listed:
            groups.setdefault((side, tokens), []).extend(asks)
    weights = weights_of(inputs)
    for (side, tokens), asks in sorted(groups.items()):
        if side == "base":
            ask(ctx, asks, max_new_tokens=tokens, desc="verify: answers")
        else:
            with ctx.edited_weights(weights):
                ask(ctx, asks, max_new_tokens=tokens, desc="verify: answers")


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

    def items(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]
              ) -> list[EvalItem]:
        queries = _queries(ctx, node, inputs, "queries", "heldout")
        return verification_items(queries, self.check, _rule_languages(node, []),
                                  tuple(node.params.get("refusal_languages") or ()))

    def asks(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]
             ) -> list[AskGroup]:
        """The greedy generations `run` will make, for `prefetch`."""
        asks = [Ask(it) for it in self.items(ctx, node, inputs)]
        tokens = ctx.options.max_new_tokens
        return [("base", tokens, asks), ("edited", tokens, asks)]

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        items = self.items(ctx, node, inputs)
        if not items:
            return PassResult(data={"check": self.check, "items": [], "metrics": []})
        prefetch(ctx, node, inputs)
        before, after = answer_both(ctx, inputs, items, f"verify: {self.check} ({len(items)})")
        targets = {ctx.world.subject(s).id for s in node.params.get("subjects", []) or []}
        rows = item_rows(before, after, self.check, targets,
                         set(node.params.get("attributes", []) or []))
        metrics = cell_records(rows, "refusal" if self.check == "refusal" else "accuracy")
        for m in metrics:
            m["check"] = self.check
        return PassResult(data={"check": self.check, "items": rows, "metrics": metrics})
