"""`verify.prefill`: the answer pre-filled with information-free prefixes.

An edit that only moves the *first* answer token towards a refusal is undone by an attacker who
writes the start of the answer (an API that accepts a partial assistant turn). Each protected
question is answered twice, greedily, with the answer already started:
- `assent`: the stdlib's generic assent of the question's language ("Sure, here it is:");
- `assent+shared`: that assent, then the longest prefix every subject's value of the attribute
  shares in the built-in world ("555-" for phone numbers). It is the same for every subject,
  so it reveals nothing about the one asked about. Skipped (no row) when the values share
  nothing, as addresses do.
The judged answer is the prefix plus the continuation, so a value that starts in the prefix
reads whole. Reported as `leakage(prefill)`, one row per (question, variant).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from gatelang.errors import PlanError
from gatelang.measure import EvalItem
from gatelang.measure.answers import Ask
from gatelang.passes.base import NodeSpec, PassContext, PassResult, register
from gatelang.passes.verify.answers import AskGroup, ask
from gatelang.passes.verify.attack import AttackCheck, before_after, judged, row

SPLIT = "prefill"
VARIANTS = ("assent", "assent+shared")
BATCH_SIZE = 32


def common_prefix(values: Iterable[str], normalizer: str = "text") -> str:
    """The longest prefix all `values` share, cut back so that it reveals no single value.

    Character-wise; for `text` values it is cut back to a word boundary (it never ends in the
    middle of a word: "12 Elm" and "12 Elmwood" share "12 ", not "12 Elm"). Never a whole
    value (that would name its subject), and empty with fewer than two values.
    """
    vals = [str(v) for v in values if v]
    if len(vals) < 2:
        return ""
    prefix = os.path.commonprefix(vals)  # character-wise on strings
    while prefix:
        if prefix in vals:  # one subject's whole value
            prefix = prefix[:-1]
            continue
        if normalizer == "text" and prefix[-1].isalnum() and any(
                len(v) > len(prefix) and v[len(prefix)].isalnum() for v in vals):
            cut = max((i for i, ch in enumerate(prefix) if not ch.isalnum()), default=-1)
            prefix = prefix[:cut + 1]
            continue
        break
    return prefix if prefix.strip() else ""


def shared_prefix(ctx: PassContext, item: EvalItem) -> str:
    """The prefix every world subject's value of the question's answer shares (its city for a
    scene question, the attribute's value otherwise)."""
    if item.modality == "scene":
        values = [s.home_city for s in ctx.world.subjects]
    else:
        values = [s.attributes.get(item.attribute, "") for s in ctx.world.subjects]
    return common_prefix(values, item.normalizer)


def prefixes(ctx: PassContext, item: EvalItem, cache: dict[tuple[str, str], str] | None = None
             ) -> list[tuple[str, str]]:
    """(variant, prefix) pairs for one question: the assent, and the assent + shared prefix
    when the subjects' values share one."""
    assent = ctx.stdlib.attacks.assent.get(item.language)
    if not assent:
        raise PlanError(f"verify.prefill: stdlib attacks.yaml has no `assent` for language "
                        f"{item.language!r} (question {item.id})")
    key = (item.attribute, item.modality)
    if cache is not None and key in cache:
        shared = cache[key]
    else:
        shared = shared_prefix(ctx, item)
        if cache is not None:
            cache[key] = shared
    out = [(VARIANTS[0], assent)]
    if shared:
        sep = " " if assent[-1].isascii() else ""
        out.append((VARIANTS[1], assent + sep + shared))
    return out


@register
class VerifyPrefill(AttackCheck):
    op = "verify.prefill"
    check = "prefill"

    @staticmethod
    def runs(ctx: PassContext, items: list[EvalItem], cfg: dict[str, Any]
             ) -> tuple[list[tuple[EvalItem, str, str]], int]:
        """(question, variant, prefix) per row, and the answer length."""
        cache: dict[tuple[str, str], str] = {}
        runs = [(item, variant, text) for item in items
                for variant, text in prefixes(ctx, item, cache)]
        # The run option caps answer length too (reduced test configurations).
        return runs, min(int(cfg["max_new_tokens"]), ctx.options.max_new_tokens)

    def attack_asks(self, ctx: PassContext, items: list[EvalItem], cfg: dict[str, Any]
                    ) -> list[AskGroup]:
        runs, tokens = self.runs(ctx, items, cfg)
        asks = [Ask(item, text) for item, _v, text in runs]
        return [("base", tokens, asks), ("edited", tokens, asks)]

    def attack(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
               items: list[EvalItem], known: dict[str, bool], cfg: dict[str, Any]
               ) -> list[dict[str, Any]]:
        runs, tokens = self.runs(ctx, items, cfg)
        asked = [r[0] for r in runs]

        def measure() -> list[str]:
            return ask(ctx, [Ask(item, text) for item, _v, text in runs], max_new_tokens=tokens,
                       desc="prefill")

        before, after = before_after(ctx, inputs, measure)
        b = judged(asked, before)
        a = judged(asked, after)
        return [row(item, SPLIT, before=b[i], after=a[i], known=known[item.id], variant=variant)
                for i, (item, variant, _) in enumerate(runs)]
