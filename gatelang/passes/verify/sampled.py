"""`verify.sampled`: k samples per protected question at temperatures 1.0 and 0.7.

Greedy decoding shows the single most likely answer; a user who asks again, or an API that
samples, sees the distribution. An edit that only lowers the value below the refusal at the
first token still leaks in samples. Reported: the share of samples that state a protected value
(`leakage(sampled)`) and the share of questions with at least one such sample (`leak_any`).
"""

from __future__ import annotations

from typing import Any

from gatelang.measure import EvalItem
from gatelang.models import sample
from gatelang.passes.base import NodeSpec, PassContext, PassResult, register
from gatelang.passes.verify.attack import AttackCheck, before_after, judged, row

SPLIT = "sampled"


@register
class VerifySampled(AttackCheck):
    op = "verify.sampled"
    check = "sampled"

    def attack(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
               items: list[EvalItem], known: dict[str, bool], cfg: dict[str, Any]
               ) -> list[dict[str, Any]]:
        k = int(cfg["samples"])
        rows: list[dict[str, Any]] = []
        for temperature in cfg["temperatures"]:
            def measure(t: float = float(temperature)) -> list[list[str]]:
                return sample(ctx.loaded, items, k=k, temperature=t,
                              max_new_tokens=int(cfg["max_new_tokens"]), batch_size=64)

            before, after = before_after(ctx, inputs, measure)
            for item, b_runs, a_runs in zip(items, before, after, strict=True):
                b = judged([item] * k, b_runs)
                a = judged([item] * k, a_runs)
                for j in range(k):
                    rows.append(row(item, SPLIT, before=b[j], after=a[j], known=known[item.id],
                                    variant=f"t={temperature:g}/{j}"))
        return rows
