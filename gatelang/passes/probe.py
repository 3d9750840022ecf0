"""`probe.activations`: streamed statistics of activations at the subject's last token.

Forward hooks at every decoder layer's output (residual stream) and, when asked, every MLP's
intermediate units record only running sums (count, mean, mean of squares, share of strongly
active units) at the subject token, so memory does not grow with the number of prompts. Later
passes and the report read the per-layer profile; shared probes are computed once by the planner.
"""

from __future__ import annotations

import torch

from gatelang.errors import PlanError
from gatelang.passes.base import NodeSpec, Pass, PassContext, PassResult, register
from gatelang.passes.data import find_data, queries_of
from gatelang.passes.edit_set import as_item
from gatelang.passes.tensors import split_output


@torch.inference_mode()
def probe(ctx: PassContext, queries: list, *, mlp: bool = False, batch_size: int = 16) -> dict[str, torch.Tensor]:
    adapter = ctx.loaded.adapter
    n_layers = adapter.num_layers
    sums: dict[str, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(key: str, use_input: bool):
        def hook(_m, args, out):
            t = args[0] if use_input else split_output(out)[0]
            rows = torch.arange(t.shape[0], device=t.device)
            v = t[rows, state["idx"].to(t.device)].float().cpu()
            s1, s2 = v.sum(0), (v * v).sum(0)
            if key not in sums:
                sums[key + ".sum"] = torch.zeros_like(s1)
                sums[key + ".sq"] = torch.zeros_like(s2)
                sums[key] = torch.zeros(())
            sums[key + ".sum"] += s1
            sums[key + ".sq"] += s2
            sums[key] += v.shape[0]
        return hook

    for i in range(n_layers):
        handles.append(adapter.module(f"decoder_layer({i})").register_forward_hook(
            make_hook(f"resid.{i}", False)))
        if mlp:
            handles.append(adapter.module(f"down_proj({i})").register_forward_hook(
                make_hook(f"mlp.{i}", True)))
    bar = ctx.progress((len(queries) + batch_size - 1) // batch_size, "probe: activations")
    p = next(ctx.model.parameters())
    try:
        for start in range(0, len(queries), batch_size):
            chunk = queries[start : start + batch_size]
            enc = adapter.encode([as_item(q) for q in chunk]).to(p.device, p.dtype)
            state["idx"] = torch.where(enc.subject_index >= 0, enc.subject_index, enc.last_index)
            ctx.model(**enc.model_inputs(), use_cache=False)
            bar.update(1)
    finally:
        for h in handles:
            h.remove()
        bar.close()
    out: dict[str, torch.Tensor] = {}
    for key in sorted({k.split(".sum")[0] for k in sums if k.endswith(".sum")}):
        n = sums[key].clamp(min=1)
        mean = sums[key + ".sum"] / n
        out[f"{key}.mean"] = mean
        out[f"{key}.std"] = (sums[key + ".sq"] / n - mean * mean).clamp(min=0).sqrt()
        out[f"{key}.count"] = sums[key].reshape(1)
    return out


@register
class ProbeActivations(Pass):
    op = "probe.activations"
    kind = "probe"
    inputs = ("queries",)
    outputs = ("stats",)

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        data = find_data(inputs, "queries")
        if not data:
            raise PlanError(f"{node.op}: no queries reach this node")
        queries = [q for d in data for q in queries_of(ctx, d)]
        limit = int(node.params.get("max_items", 0) or ctx.options.get("probe_max_items", 0) or 0)
        if limit and len(queries) > limit:
            queries = queries[:: max(1, len(queries) // limit)][:limit]
        stats = probe(ctx, queries, mlp=bool(node.params.get("mlp", False)))
        profile = {}
        for i in range(ctx.loaded.adapter.num_layers):
            mean = stats.get(f"resid.{i}.mean")
            if mean is not None:
                profile[str(i)] = float(mean.abs().mean())
        return PassResult(data={"n": len(queries), "resid_abs_mean": profile}, tensors=stats)
