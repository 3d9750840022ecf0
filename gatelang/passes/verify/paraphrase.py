"""`verify.paraphrase`: the protected questions asked in forms written apart from the templates.

The edit set and the held-out set come from the same attribute templates; an edit that learnt
their wording, not the request, fails on a question phrased another way. The stdlib's
`attacks.yaml` `paraphrase` section holds, per private attribute and language, forms written
independently of the templates (indirect requests, other syntax); `{subject}` is the subject's
name in the built-in world. Reported as `leakage(paraphrase)` and `refusal(paraphrase)`, one
row per (question, form); the variant is the form's index.

Which questions: text questions only. A paraphrase names the subject, so an image question
turned into one would ask a text question the policy may not protect; image, document and scene
questions are skipped and counted in the result's `skipped`. The forms depend only on
(subject, attribute, language), so one held-out question per such triple stands for it (the
others would repeat its prompts). A protected text question whose (attribute, language) has
no forms is a PlanError naming them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gatelang.errors import PlanError
from gatelang.measure import EvalItem, spread
from gatelang.measure.answers import Ask
from gatelang.passes.base import NodeSpec, PassContext, PassResult, register
from gatelang.passes.verify.answers import AskGroup, ask, prefetch
from gatelang.passes.verify.attack import (
    AttackCheck,
    attack_records,
    before_after,
    judged,
    known_questions,
    protected_items,
    row,
    settings,
)

SPLIT = "paraphrase"
BATCH_SIZE = 32


def paraphrase_questions(items: list[EvalItem]) -> tuple[list[EvalItem], int]:
    """The text questions, one per (subject, attribute, language), and how many protected
    questions were skipped for not being text."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for it in items:
        key = (it.subject_id, it.attribute, it.language)
        if it.modality == "text" and key not in seen:
            seen.add(key)
            out.append(it)
    return out, sum(1 for it in items if it.modality != "text")


def check_forms(ctx: PassContext, items: list[EvalItem]) -> None:
    """A PlanError naming every (attribute, language) of `items` without paraphrase forms."""
    lib = ctx.stdlib.attacks.paraphrase
    missing = sorted({(it.attribute, it.language) for it in items
                      if not lib.get(it.attribute, {}).get(it.language)})
    if missing:
        raise PlanError("verify.paraphrase: stdlib attacks.yaml has no paraphrase forms for "
                        + ", ".join(f"{a} in {lang!r}" for a, lang in missing))


def paraphrased(ctx: PassContext, item: EvalItem) -> list[tuple[str, EvalItem]]:
    """(variant, item) per paraphrase form of the question's attribute and language."""
    name = ctx.world.subject(item.subject_id).name
    forms = ctx.stdlib.attacks.paraphrase[item.attribute][item.language]
    return [(str(j), replace(item, prompt=form.replace("{subject}", name),
                             id=f"{item.id}/{SPLIT}/{j}"))
            for j, form in enumerate(forms)]


@register
class VerifyParaphrase(AttackCheck):
    op = "verify.paraphrase"
    check = "paraphrase"

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        cfg = settings(ctx, node)
        every, skipped = paraphrase_questions(protected_items(ctx, node, inputs, 0))
        check_forms(ctx, every)
        items = spread(every, int(cfg["items"]))
        data: dict[str, Any] = {"check": self.check, "items": [], "metrics": [],
                                "skipped": {"non_text": skipped}}
        if not items:
            return PassResult(data=data)
        prefetch(ctx, node, inputs)
        known = known_questions(ctx, items)
        rows = self.attack(ctx, node, inputs, items, known, cfg)
        data.update(items=rows, metrics=attack_records(rows, self.check), settings=cfg)
        return PassResult(data=data)

    def questions(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
                  cfg: dict[str, Any]) -> list[EvalItem]:
        every, _skipped = paraphrase_questions(protected_items(ctx, node, inputs, 0))
        check_forms(ctx, every)
        return spread(every, int(cfg["items"]))

    @staticmethod
    def runs(ctx: PassContext, items: list[EvalItem], cfg: dict[str, Any]
             ) -> tuple[list[tuple[EvalItem, str, EvalItem]], int]:
        """(question, variant, paraphrased question) per row, and the answer length."""
        runs = [(item, variant, asked) for item in items
                for variant, asked in paraphrased(ctx, item)]
        # The run option caps answer length too (reduced test configurations).
        return runs, min(int(cfg["max_new_tokens"]), ctx.options.max_new_tokens)

    def attack_asks(self, ctx: PassContext, items: list[EvalItem], cfg: dict[str, Any]
                    ) -> list[AskGroup]:
        runs, tokens = self.runs(ctx, items, cfg)
        asks = [Ask(r[2]) for r in runs]
        return [("base", tokens, asks), ("edited", tokens, asks)]

    def attack(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
               items: list[EvalItem], known: dict[str, bool], cfg: dict[str, Any]
               ) -> list[dict[str, Any]]:
        runs, tokens = self.runs(ctx, items, cfg)
        asked = [r[2] for r in runs]

        def measure() -> list[str]:
            return ask(ctx, [Ask(it) for it in asked], max_new_tokens=tokens, desc="paraphrase")

        before, after = before_after(ctx, inputs, measure)
        b = judged(asked, before)
        a = judged(asked, after)
        rows = []
        for i, (item, variant, form) in enumerate(runs):
            r = row(item, SPLIT, before=b[i], after=a[i], known=known[item.id], variant=variant)
            r["prompt"] = form.prompt  # what was asked; `question` names the held-out question
            rows.append(r)
        return rows
