"""`localize.privacy_neurons` (DEPN, cross-lingual) and `localize.random` (ablation baseline).

Privacy neurons are MLP intermediate units whose integrated-gradients attribution to the leaked
value's probability is high. Attribution runs per language on the edit queries with the true
value as the teacher-forced answer; units high in every language of the rule are
privacy-universal, units high in exactly one are language-specific (Dong et al.); both sets are
recorded, and their union is what `gate.deactivate` zeroes. The plain DEPN method (`deactivate`)
votes across all languages at once.
"""

from __future__ import annotations

import torch

from gatelang.errors import PlanError
from gatelang.passes.algorithms import depn
from gatelang.passes.base import NodeSpec, Pass, PassContext, PassResult, register
from gatelang.passes.data import edit_queries
from gatelang.passes.edit_set import as_item, encode
from gatelang.passes.params import fraction, method_params


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
    inputs = ("queries",)
    outputs = ("units", "universal", "specific")

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        method = str(node.params.get("method", "privacy_neurons"))
        if method not in ("privacy_neurons", "deactivate"):
            method = "privacy_neurons"
        p = method_params(ctx, method, node.params)
        queries = edit_queries(ctx, inputs)
        if not queries:
            raise PlanError(f"{node.op}: the edit set is empty")
        adapter = ctx.loaded.adapter
        down = {i: adapter.module(f"down_proj({i})") for i in range(adapter.num_layers)}
        steps = int(p["ig_steps"])
        ratio = float(p["threshold_ratio"])
        top_k = int(p["top_k"])
        share = fraction(p.get("unit_share", 0) or 0)
        if share > 0:  # a size relative to the model, so a preset means the same on every model
            top_k = max(1, round(share * adapter.num_layers * adapter.intermediate_size))
        languages = sorted({q.language for q in queries})
        groups = {"all": queries} if method == "deactivate" else {
            lang: [q for q in queries if q.language == lang] for lang in languages
        }
        batches = {k: _batches(ctx, v) for k, v in groups.items()}
        bar = ctx.progress(sum(len(b) for b in batches.values()) * len(down), "localize: attribution")
        per_group = {}
        for key, bs in batches.items():
            att = depn.attribute(ctx.model, down, bs, steps=steps, progress=lambda: bar.update(1))
            per_group[key] = depn.vote(att, threshold_ratio=ratio, top_k=top_k)
        bar.close()
        if method == "deactivate":
            units = per_group["all"]
            universal, specific = units, {}
        else:
            split = depn.split_cross_lingual(per_group, int(p.get("universal_min_languages", 0)))
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


@register
class RandomLocalize(Pass):
    op = "localize.random"
    kind = "localize"
    inputs = ("queries",)
    outputs = ("gate", "layer")

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        p = method_params(ctx, "random_gate", node.params)
        adapter = ctx.loaded.adapter
        layer = p.get("layer", "auto")
        n = adapter.num_layers
        layer = (n // 2 - 1 if n > 2 else 0) if str(layer) == "auto" else int(layer)
        size = max(1, int(fraction(p["sparsity"]) * adapter.hidden_size))
        g = torch.Generator().manual_seed(ctx.seed)
        dims = torch.randperm(adapter.hidden_size, generator=g)[:size]
        gate = torch.zeros(adapter.hidden_size, dtype=torch.bool)
        gate[dims] = True
        return PassResult(
            data={"layer": layer, "gate_dims": sorted(int(i) for i in dims), "gate_size": size,
                  "hidden_size": adapter.hidden_size},
            tensors={"gate": gate},
        )
