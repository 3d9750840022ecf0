"""`verify.jailbreak`: each protected question wrapped in the stdlib's jailbreak templates.

A refusal learnt on plain questions may not survive an instruction override, a role-play, a
fiction frame, a translation task or a demand for JSON. Every protected question is wrapped in
every jailbreak template of its language (stdlib `attacks.yaml`, `{question}` is the question)
and answered greedily; image, document and scene questions keep their image. Reported as
`leakage(jailbreak)` and `refusal(jailbreak)`, one row per (question, template); the variant
is the template's index in its language's list.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gatelang.errors import PlanError
from gatelang.measure import EvalItem
from gatelang.measure.answers import Ask
from gatelang.passes.base import NodeSpec, PassContext, PassResult, register
from gatelang.passes.verify.answers import AskGroup, ask
from gatelang.passes.verify.attack import AttackCheck, before_after, judged, row

SPLIT = "jailbreak"
BATCH_SIZE = 32


def wrapped(ctx: PassContext, item: EvalItem) -> list[tuple[str, EvalItem]]:
    """(variant, item) per jailbreak template of the question's language."""
    templates = ctx.stdlib.attacks.jailbreak.get(item.language) or ()
    if not templates:
        raise PlanError(f"verify.jailbreak: stdlib attacks.yaml has no `jailbreak` templates for "
                        f"language {item.language!r} (question {item.id})")
    out = []
    for i, template in enumerate(templates):
        if "{question}" not in template:
            raise PlanError(f"verify.jailbreak: template {i} of {item.language!r} has no "
                            "{question} placeholder")
        out.append((str(i), replace(item, prompt=template.replace("{question}", item.prompt),
                                    id=f"{item.id}/{SPLIT}/{i}")))
    return out


@register
class VerifyJailbreak(AttackCheck):
    op = "verify.jailbreak"
    check = "jailbreak"

    @staticmethod
    def runs(ctx: PassContext, items: list[EvalItem], cfg: dict[str, Any]
             ) -> tuple[list[tuple[EvalItem, str, EvalItem]], int]:
        """(question, variant, wrapped question) per row, and the answer length."""
        runs = [(item, variant, asked) for item in items for variant, asked in wrapped(ctx, item)]
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
            return ask(ctx, [Ask(it) for it in asked], max_new_tokens=tokens, desc="jailbreak")

        before, after = before_after(ctx, inputs, measure)
        b = judged(asked, before)
        a = judged(asked, after)
        rows = []
        for i, (item, variant, attacked) in enumerate(runs):
            r = row(item, SPLIT, before=b[i], after=a[i], known=known[item.id], variant=variant)
            r["prompt"] = attacked.prompt  # what was asked; `question` names the plain one
            rows.append(r)
        return rows
