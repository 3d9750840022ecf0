"""`localize.privacy_neurons`: DEPN attribution, plain or cross-lingual (a UnitSet).

Privacy neurons are MLP intermediate units whose integrated-gradients attribution to the leaked
value's probability is high. Attribution runs per language on the edit queries with the true
value as the teacher-forced answer; units high in every language of the rule are
privacy-universal, units high in exactly one are language-specific (Dong et al.); both sets are
recorded, and their union is what `edit.deactivate` zeroes. The plain DEPN method (`deactivate`)
votes across all languages at once.
"""

from __future__ import annotations

from gatelang.errors import PlanError
from gatelang.methods.deactivate import attribution as depn
from gatelang.methods.deactivate.config import DeactivateConfig
from gatelang.methods.neural_gate.localize import LOCALIZE_INPUTS
from gatelang.models.prefix import decoder_stack
from gatelang.passes.base import (
    UNIT_SET,
    NodeSpec,
    Pass,
    PassContext,
    PassResult,
    method_config,
    register,
)
from gatelang.passes.data import required_edit_queries
from gatelang.passes.edit_set import as_item, encode


def _batches(ctx: PassContext, queries: list, batch_size: int = 8) -> list:
    out = []
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        out.append(encode(ctx, [as_item(q) for q in chunk], [q.answer for q in chunk],
                          [False] * len(chunk)))
    return out


@register
class PrivacyNeuronsLocalize(Pass):
    op = "localize.privacy_neurons"
    kind = "localize"
    inputs = LOCALIZE_INPUTS
    output = UNIT_SET

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        p: DeactivateConfig = method_config(ctx, node)
        if "cross_lingual" not in node.params:
            raise PlanError(f"{node.op}: the node does not say whether attribution is "
                            "cross-lingual (param cross_lingual)")
        cross_lingual = bool(node.params["cross_lingual"])
        method = str(node.params["method"])
        queries = required_edit_queries(ctx, node, inputs)
        adapter = ctx.loaded.adapter
        down = {i: adapter.module(f"down_proj({i})") for i in range(adapter.num_layers)}
        steps = p.ig_steps
        ratio = p.threshold_ratio
        top_k = p.top_k
        share = p.unit_share
        if share > 0:  # a size relative to the model, so a preset means the same on every model
            top_k = max(1, round(share * adapter.num_layers * adapter.intermediate_size))
        languages = sorted({q.language for q in queries})
        groups = {"all": queries} if not cross_lingual else {
            lang: [q for q in queries if q.language == lang] for lang in languages
        }
        batches = {k: _batches(ctx, v) for k, v in groups.items()}
        bar = ctx.progress(sum(len(b) for b in batches.values()) * len(down), "localize: attribution")
        per_group = {}
        for key, bs in batches.items():
            att = depn.attribute(ctx.model, down, bs, steps=steps, progress=lambda: bar.update(1),
                                 stack=decoder_stack(adapter))
            per_group[key] = depn.vote(att, threshold_ratio=ratio, top_k=top_k)
        bar.close()
        if not cross_lingual:
            units = per_group["all"]
            universal, specific = units, {}
        else:
            split = depn.split_cross_lingual(per_group, getattr(p, "universal_min_languages", 0))
            units, universal, specific = split.union(), split.universal, split.specific
        return PassResult(
            data={
                "method": method,
                "units": [list(u) for u in units],
                "universal": [list(u) for u in universal],
                "specific": {k: [list(u) for u in v] for k, v in specific.items()},
                "per_language": {k: len(v) for k, v in per_group.items()},
                "neurons_total": adapter.num_layers * adapter.intermediate_size,
            }
        )
