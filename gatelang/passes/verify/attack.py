"""What the attack passes share: protected questions, the unedited model's knowledge of them,
rows and metric records.

An attack pass asks the *protected* questions of a policy (its held-out set, in the rules'
languages) in a harder way than once, greedily: sampled, pre-filled, quantized, after a
relearning fine-tune, decoded from intermediate layers, wrapped in a jailbreak, paraphrased.
Each reports, per question (or per sample), a judgment before and after the edit under the
attack. A question counts only if the unedited model answers it with the true value when asked
plainly and greedily (`known`): you cannot protect what the model never disclosed, and the
same rule holds for `refusal`/`leakage` on held-out data. Rows of questions it did not know are
kept (and counted as `excluded`), never dropped silently.

Every row's `split` is the attack's requirement split (`leakage(sampled)`, `leakage(int4)`), so
`report.requirements` finds the evidence for `metric(split)` by split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from gatelang.errors import PlanError
from gatelang.measure import EvalItem, ItemResult, judge, spread
from gatelang.measure.answers import Ask
from gatelang.measure.verification import verification_items
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
from gatelang.passes.verify.answers import AskGroup, judged_answers, prefetch

# One attack row: the verification row's keys plus the attack's own.
ATTACK_ROW_KEYS: tuple[str, ...] = (
    "id", "subject", "attribute", "language", "modality", "split", "prompt", "answer_value",
    "group", "before", "after", "before_text", "after_text", "question", "known", "variant",
)


def settings(ctx: PassContext, node: NodeSpec) -> dict[str, Any]:
    """The stdlib's attack settings, then the node's, then the run's (`attack_settings`, and
    the `attack_items` cap)."""
    out: dict[str, Any] = ctx.stdlib.attacks.settings.model_dump()
    out.update(node.params.get("attack") or {})
    out.update(ctx.options.attack_settings)
    # A run's shorter answers (reduced configurations) apply to attacks too.
    out["max_new_tokens"] = min(int(out["max_new_tokens"]), ctx.options.max_new_tokens)
    if ctx.options.attack_items:
        out["items"] = ctx.options.attack_items
    return out


def protected_items(ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
                    limit: int) -> list[EvalItem]:
    """The policy's protected held-out questions in the rules' languages, spread to `limit`."""
    data = find_data(inputs, "queries")
    if not data:
        raise PlanError(f"{node.op}: no queries reach this node")
    rule_languages = list(node.params.get("rule_languages") or [])
    queries = [q for d in data for q in queries_of(ctx, d)
               if q.split == "heldout" and (not rule_languages or q.language in rule_languages)]
    items = verification_items(spread(queries, limit), "refusal", rule_languages,
                               tuple(node.params.get("refusal_languages") or ()))
    return items


def known_questions(ctx: PassContext, items: Sequence[EvalItem]) -> dict[str, bool]:
    """Which questions the unedited model answers with the true value (plain, greedy).

    Every attack pass asks this of the same questions; the answer cache decodes them once.
    """
    results = judged_answers(ctx, items)
    return {r.id: r.judgment == "leak" for r in results}


def row(item: EvalItem, split: str, *, before: ItemResult, after: ItemResult, known: bool,
        variant: str = "", row_id: str | None = None) -> dict[str, Any]:
    """One attack row (ATTACK_ROW_KEYS), from the item and its judged answers."""
    return {
        "id": row_id or f"{item.id}/{split}/{variant}".rstrip("/"),
        "subject": item.subject_id, "attribute": item.attribute, "language": item.language,
        "modality": item.modality, "split": split, "prompt": item.prompt,
        "answer_value": item.expected, "group": "targets",
        "before": before.judgment, "after": after.judgment,
        "before_text": before.answer, "after_text": after.answer,
        "question": item.id, "known": known, "variant": variant,
    }


def judged(items: Sequence[EvalItem], answers: Sequence[str]) -> list[ItemResult]:
    return [judge(it, a) for it, a in zip(items, answers, strict=True)]


def attack_records(rows: Sequence[dict[str, Any]], check: str) -> list[dict[str, Any]]:
    """Per (split, language, modality) records over the known questions' rows.

    `leak_rate` and `refusal_rate` are shares of rows (a row is a sample, a prefix, a template);
    `leak_any` is the share of known questions with at least one leaking row, which is what a
    patient attacker gets.
    """
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["split"], r["language"], r["modality"]), []).append(r)
    out: list[dict[str, Any]] = []
    for (split, lang, mod), rs in sorted(cells.items()):
        known = [r for r in rs if r["known"]]
        base = {"split": split, "language": lang, "modality": mod, "check": check,
                "group": "targets", "excluded": len(rs) - len(known)}
        for metric, label in (("leak_rate", "leak"), ("refusal_rate", "refuse")):
            low, high = subject_interval(known, "after", label)
            out.append({**base, "metric": metric, "n": len(known),
                        "before": _share(known, "before", label),
                        "after": _share(known, "after", label),
                        "after_low": low, "after_high": high,
                        "subjects": len({r["subject"] for r in known})})
        ranked = [r for r in known if r.get("rank_after") is not None]
        if ranked:  # exposure: the mean rank percentile of the true value (50% = chance)
            out.append({**base, "metric": "exposure", "n": len(ranked),
                        "before": sum(float(r["rank_before"]) for r in ranked) / len(ranked),
                        "after": sum(float(r["rank_after"]) for r in ranked) / len(ranked)})
        questions: dict[str, list[dict[str, Any]]] = {}
        for r in known:
            questions.setdefault(r["question"], []).append(r)
        if any(len(v) > 1 for v in questions.values()):
            out.append({**base, "metric": "leak_any", "n": len(questions),
                        "before": _any(questions.values(), "before"),
                        "after": _any(questions.values(), "after")})
    return out


def subject_interval(rows: Sequence[dict[str, Any]], side: str, label: str, *,
                     resamples: int = 1000, seed: int = 0) -> tuple[float | None, float | None]:
    """A 95% interval for the share of `label` rows, resampling *subjects* (bootstrap).

    Rows of one subject are not independent (the same person's value, asked many ways), so the
    interval resamples whole subjects with their rows; with one subject it is the Wilson
    interval of the rows, which is all the data can say.
    """
    if not rows:
        return None, None
    by_subject: dict[str, list[int]] = {}
    for r in rows:
        by_subject.setdefault(str(r["subject"]), []).append(1 if r[side] == label else 0)
    groups = list(by_subject.values())
    if len(groups) == 1:
        return wilson(sum(groups[0]), len(groups[0]))
    import random

    rng = random.Random(seed)
    stats = []
    for _ in range(resamples):
        pick = [groups[rng.randrange(len(groups))] for _ in groups]
        hits = sum(sum(g) for g in pick)
        stats.append(hits / sum(len(g) for g in pick))
    stats.sort()
    return stats[int(0.025 * resamples)], stats[min(resamples - 1, int(0.975 * resamples))]


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """The Wilson score interval of a proportion (sensible at 0 and n, unlike the normal one)."""
    if n == 0:
        return None, None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _share(rows: Sequence[dict[str, Any]], side: str, label: str) -> float | None:
    if not rows:
        return None
    return sum(1 for r in rows if r[side] == label) / len(rows)


def _any(groups: Any, side: str) -> float | None:
    groups = list(groups)
    if not groups:
        return None
    return sum(1 for g in groups if any(r[side] == "leak" for r in g)) / len(groups)


class AttackCheck(Pass):
    """Base of the attack passes: subclasses set `op`, `check` and implement `attack`.

    `attack(ctx, node, inputs, items, known, settings)` returns the rows; it measures the
    unedited model (`before`) and the edited one (`after`, inside `ctx.edited_weights(...)`),
    and leaves the model as it found it.
    """

    kind = "verify"
    inputs = {"edited": Input((WEIGHT_EDIT,)), "queries": Input((QUERY_SET,), many=True)}
    output = METRICS
    check: ClassVar[str] = ""

    def attack(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
               items: list[EvalItem], known: dict[str, bool], cfg: dict[str, Any]
               ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def questions(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
                  cfg: dict[str, Any]) -> list[EvalItem]:
        """The protected questions the attack asks."""
        return protected_items(ctx, node, inputs, int(cfg["items"]))

    def attack_asks(self, ctx: PassContext, items: list[EvalItem], cfg: dict[str, Any]
                    ) -> list[AskGroup]:
        """The greedy generations `attack` makes beyond `known_questions` (none by default:
        sampled, quantized, relearned and teacher-forced measurements are not listed)."""
        return []

    def asks(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]
             ) -> list[AskGroup]:
        """The greedy generations `run` will make, for `prefetch`."""
        cfg = settings(ctx, node)
        items = self.questions(ctx, node, inputs, cfg)
        if not items:
            return []
        known: AskGroup = ("base", ctx.options.max_new_tokens, [Ask(it) for it in items])
        return [known, *self.attack_asks(ctx, items, cfg)]

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        cfg = settings(ctx, node)
        items = self.questions(ctx, node, inputs, cfg)
        if not items:
            return PassResult(data={"check": self.check, "items": [], "metrics": []})
        prefetch(ctx, node, inputs)
        known = known_questions(ctx, items)
        rows = self.attack(ctx, node, inputs, items, known, cfg)
        return PassResult(data={"check": self.check, "items": rows,
                                "metrics": attack_records(rows, self.check),
                                "settings": cfg})


def before_after(ctx: PassContext, inputs: dict[str, PassResult],
                 measure: Callable[[], list[Any]]) -> tuple[list[Any], list[Any]]:
    """`measure()` on the unedited model, then with the edit's weights in place.

    With no edit (an audit of the unedited model) the second measurement would repeat the
    first, so it is reused (sampling included: the same draw, not a second one).
    """
    before = measure()
    weights = weights_of(inputs)
    if not weights:
        return before, before
    with ctx.edited_weights(weights):
        after = measure()
    return before, after
