"""Gate passes: change the weights where localization points.

`gate.neural_gate` fine-tunes the chosen layer's down projection through the gate;
`gate.finetune` is the same objective without the gate (baseline); `gate.deactivate` zeroes the
down-projection columns of the privacy neurons (DEPN / cross-lingual privacy neurons). Each
returns the new values of the tensors it changed as ``weight:<name>`` tensors, which the runtime
hands to verification and the report turns into the patch.
"""

from __future__ import annotations

from typing import Any

import torch

from gatelang.errors import PlanError
from gatelang.passes.algorithms import depn
from gatelang.passes.algorithms.neural_gate import gated_finetune, quiet_units, select_units
from gatelang.passes.base import (
    WEIGHT_PREFIX,
    NodeSpec,
    Pass,
    PassContext,
    PassResult,
    register,
    weights_of,
)
from gatelang.passes.data import edit_queries
from gatelang.passes.edit_set import build_examples, examples_from_json, pair_batch, pairs_batch
from gatelang.passes.params import fraction, method_params


def _localized(inputs: dict[str, PassResult]) -> PassResult | None:
    for _k, r in sorted(inputs.items()):
        if "layer" in r.data or "units" in r.data:
            return r
    return None


def _param_name(ctx: PassContext, layer: int) -> str:
    return ctx.loaded.adapter.site(f"down_proj({layer})").path + ".weight"


def _lr(p: dict[str, Any], ctx: PassContext) -> float:
    """The preset lr, optionally scaled by the reference model's MLP width over this model's.

    Adam moves every weight by about lr per step whatever the gradient's size, so the change of a
    layer's output grows with the number of weights summed into each output; the paper's 1e-5
    was tuned for an 11008-wide down projection (see docs/methods.md).
    """
    lr = float(p["lr"])
    ref = int(p.get("reference_width", 0) or 0)
    if ref > 0:
        lr *= ref / float(ctx.loaded.adapter.intermediate_size)
    return lr



def refusal_edit(
    ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult], *, method: str, gated: bool
) -> PassResult:
    p = method_params(ctx, method, node.params)
    loc = _localized(inputs)
    queries = edit_queries(ctx, inputs)
    if not queries:
        raise PlanError(f"{node.op}: the edit set is empty")
    if loc is not None and "examples" in loc.data:
        examples = examples_from_json(ctx, loc.data["examples"], queries)
    else:
        examples = build_examples(ctx, queries, other_subjects=int(p.get("retain_other_subjects", 0) or 0),
                                  same_subject=int(p.get("retain_same_subject", 1) or 1))
    if loc is not None and "layer" in loc.data:
        layer = int(loc.data["layer"])
    elif str(p.get("layer", "auto")) != "auto":
        layer = int(p["layer"])
    else:
        layer = ctx.loaded.adapter.num_layers // 2 - 1 if ctx.loaded.adapter.num_layers > 2 else 0
    gate = None
    if gated:
        if loc is None or "gate" not in loc.tensors:
            raise PlanError(f"{node.op}: needs a localize node that produced a gate")
        gate = loc.tensors["gate"].bool()
    adapter = ctx.loaded.adapter
    module = adapter.module(f"decoder_layer({layer})")
    name = _param_name(ctx, layer)
    weight = dict(ctx.model.named_parameters())[name]
    dim_mask = gate if (gate is not None and bool(p.get("gate_rows_only", False))) else None
    upstream = weights_of(inputs)
    per = max(1, int(p.get("pair_batch", 1) or 1))
    if per == 1:
        pairs = [pair_batch(ctx, ex) for ex in examples]
    else:
        pairs = [pairs_batch(ctx, examples[k : k + per]) for k in range(0, len(examples), per)]
    down = adapter.module(f"down_proj({layer})")
    down_units = adapter.units_axis(down, "down")
    unit_mask = None
    budget = fraction(p.get("unit_budget", 1.0))
    if budget < 1.0:
        # At least one unit: a budget that rounds to none would silently edit nothing.
        k = max(1, int(budget * adapter.num_layers * adapter.intermediate_size))
        with ctx.edited_weights(upstream):
            if str(p.get("unit_select", "salient")) == "quiet":
                unit_mask, _act = quiet_units(ctx.model, down, pairs, k)
            else:
                unit_mask, _sal = select_units(ctx.model, module, weight, pairs, gate, k,
                                              kl_factor=float(p["kl_factor"]),
                                              units_axis=down_units)
    extra = []
    if bool(p.get("unit_inputs", False)) and unit_mask is not None:
        # Retrain the selected units in full: their input rows as well as their output columns.
        for in_name, in_module in adapter.mlp_input_weights(layer):
            w_in = in_module.weight
            units = unit_mask.to(w_in.device, w_in.dtype)
            axis = adapter.units_axis(in_module, "input")
            mask = units.unsqueeze(1) if axis == 0 else units.unsqueeze(0)
            extra.append((in_name, w_in, mask.expand_as(w_in)))
    steps = int(p["steps"])
    epochs = int(p.get("epochs", 1))
    bar = ctx.progress(len(pairs) * epochs, f"gate: {method} (layer {layer})")
    with ctx.edited_weights(upstream):
        starts = {name: weight.detach().clone()} | {n: w.detach().clone() for n, w, _m in extra}
        delta, losses = gated_finetune(
            ctx.model, module, weight, pairs, gate, steps=steps, lr=_lr(p, ctx),
            kl_factor=float(p["kl_factor"]), epochs=epochs,
            row_mask=unit_mask if down_units == 0 else dim_mask,
            col_mask=unit_mask if down_units == 1 else dim_mask,
            reset_optimizer=bool(p.get("reset_optimizer", True)),
            extra=[(w, m) for _n, w, m in extra],
            on_pair=lambda _k, _loss: bar.update(1),
        )
        live = {name: weight} | {n: w for n, w, _m in extra}
        new_values = {n: w.detach().clone() for n, w in live.items()}
        with torch.no_grad():
            for n, w in live.items():
                w.copy_(starts[n])  # passes leave the model as they found it
    bar.close()
    changed = delta != 0
    rows = int(changed.any(down_units).sum())  # residual dims written
    cols = int(changed.any(1 - down_units).sum())  # MLP units touched
    tensors = {WEIGHT_PREFIX + k: v for k, v in upstream.items()}
    for n, v in new_values.items():
        tensors[WEIGHT_PREFIX + n] = v.cpu()
    return PassResult(
        data={
            "method": method,
            "layer": layer,
            "parameter": name,
            "gate_size": int(gate.sum()) if gate is not None else None,
            "pairs": len(pairs),
            "loss_first": losses[0] if losses else None,
            "loss_last_mean": float(sum(losses[-len(pairs):]) / max(1, len(pairs))) if losses else None,
            "rows_changed": rows,
            "cols_changed": cols,
            "lr": _lr(p, ctx),
            "units_selected": None if unit_mask is None else int(unit_mask.sum()),
            "unit_inputs_trained": [n for n, _w, _m in extra],
        },
        tensors=tensors,
    )


@register
class NeuralGateEdit(Pass):
    op = "gate.neural_gate"
    kind = "gate"
    inputs = ("localize", "queries")
    outputs = ("weights",)

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        method = str(node.params.get("method", "neural_gate"))
        if method not in ctx.stdlib.methods:
            method = "neural_gate"
        return refusal_edit(ctx, node, inputs, method=method, gated=True)


@register
class FinetuneEdit(Pass):
    op = "gate.finetune"
    kind = "gate"
    inputs = ("queries",)
    outputs = ("weights",)

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        return refusal_edit(ctx, node, inputs, method="finetune", gated=False)


@register
class DeactivateEdit(Pass):
    op = "gate.deactivate"
    kind = "gate"
    inputs = ("localize",)
    outputs = ("weights",)

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        loc = _localized(inputs)
        if loc is None or "units" not in loc.data:
            raise PlanError(f"{node.op}: needs a localize.privacy_neurons input")
        units = [tuple(u) for u in loc.data["units"]]
        upstream = weights_of(inputs)
        adapter = ctx.loaded.adapter
        layers = sorted({int(layer) for layer, _ in units})
        params = dict(ctx.model.named_parameters())
        tensors = {WEIGHT_PREFIX + k: v for k, v in upstream.items()}
        with ctx.edited_weights(upstream):
            for layer in layers:
                name = _param_name(ctx, layer)
                w = params[name].detach().clone()
                cols = [u for li, u in units if li == layer]
                axis = adapter.units_axis(adapter.module(f"down_proj({layer})"), "down")
                w.index_fill_(axis, torch.tensor(cols, dtype=torch.long, device=w.device), 0)
                tensors[WEIGHT_PREFIX + name] = w.cpu()
        return PassResult(
            data={"method": "deactivate", "units": [list(u) for u in units],
                  "layers": layers, "neurons": len(units)},
            tensors=tensors,
        )


__all__ = ["DeactivateEdit", "FinetuneEdit", "NeuralGateEdit", "depn", "refusal_edit"]
