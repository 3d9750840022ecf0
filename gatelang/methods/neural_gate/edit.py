"""`edit.neural_gate`: fine-tune one decoder layer's MLP towards refusal, through the gate.

Shared by the refusal-edit methods: `random_gate` runs this pass with a random gate and
`finetune` (its own op) runs `refusal_edit` with no gate. The result carries the new values of
the tensors it changed as ``weight:<name>`` tensors, which the runtime hands to verification and
the report turns into the patch.
"""

from __future__ import annotations

import torch

from gatelang.methods.neural_gate.algorithm import gated_finetune, quiet_units, select_units
from gatelang.methods.neural_gate.config import RefusalEditConfig
from gatelang.models.prefix import decoder_stack
from gatelang.passes.base import (
    GATE_MASK,
    QUERY_SET,
    WEIGHT_EDIT,
    WEIGHT_PREFIX,
    Input,
    NodeSpec,
    Pass,
    PassContext,
    PassResult,
    method_config,
    register,
    weights_of,
)
from gatelang.passes.data import required_edit_queries
from gatelang.passes.edit_set import build_examples, examples_from_json, pair_batch, pairs_batch

EDIT_INPUTS = {"edit_set": Input((QUERY_SET,), many=True),
               "weights": Input((WEIGHT_EDIT,), required=False)}


def default_layer(num_layers: int) -> int:
    """The layer `layer auto` means when no localization chose one: just below the middle."""
    return num_layers // 2 - 1 if num_layers > 2 else 0


def scaled_lr(cfg: RefusalEditConfig, intermediate_size: int) -> float:
    """lr, scaled by the reference model's MLP width over this model's when reference_width > 0.

    Adam moves every weight by about lr per step whatever the gradient's size, so the change of a
    layer's output grows with the number of weights summed into each output; the paper's 1e-5
    was tuned for an 11008-wide down projection (see docs/methods.md).
    """
    if cfg.reference_width > 0:
        return cfg.lr * cfg.reference_width / float(intermediate_size)
    return cfg.lr


def refusal_edit(ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
                 loc: PassResult | None) -> PassResult:
    """The refusal fine-tune at one layer; `loc` is the GateMask localization, or None."""
    cfg: RefusalEditConfig = method_config(ctx, node)
    queries = required_edit_queries(ctx, node, inputs)
    adapter = ctx.loaded.adapter
    if loc is not None and "examples" in loc.data:
        examples = examples_from_json(ctx, loc.data["examples"], queries)
    else:
        examples = build_examples(ctx, queries, other_subjects=cfg.retain_other_subjects,
                                  same_subject=cfg.retain_same_subject)
    if loc is not None:
        layer = int(loc.data["layer"])
    elif cfg.layer != "auto":
        layer = int(cfg.layer)
    else:
        layer = default_layer(adapter.num_layers)
    gate = loc.tensors["gate"].bool() if loc is not None else None
    rows_only = bool(getattr(cfg, "gate_rows_only", False))
    module = adapter.module(f"decoder_layer({layer})")
    down = adapter.module(f"down_proj({layer})")
    name = adapter.site(f"down_proj({layer})").path + ".weight"
    weight = down.weight
    dim_mask = gate if (gate is not None and rows_only) else None
    upstream = weights_of(inputs)
    per = cfg.pair_batch
    if per == 1:
        pairs = [pair_batch(ctx, ex) for ex in examples]
    else:
        pairs = [pairs_batch(ctx, examples[k : k + per]) for k in range(0, len(examples), per)]
    down_units = adapter.units_axis(down, "down")
    unit_mask = None
    budget, select = cfg.unit_budget, cfg.unit_select
    if budget < 1.0:
        # At least one unit: a budget that rounds to none would silently edit nothing.
        k = max(1, int(budget * adapter.num_layers * adapter.intermediate_size))
        with ctx.edited_weights(upstream):
            if select == "quiet":
                unit_mask, _act = quiet_units(ctx.model, down, pairs, k)
            else:
                unit_mask, _sal = select_units(ctx.model, module, weight, pairs, gate, k,
                                              retain_weight=cfg.retain_weight,
                                              units_axis=down_units,
                                              stack=decoder_stack(adapter))
    extra = []
    if cfg.unit_inputs and unit_mask is not None:
        # Retrain the selected units in full: their input rows as well as their output columns.
        for in_name, in_module in adapter.mlp_input_weights(layer):
            w_in = in_module.weight
            units = unit_mask.to(w_in.device, w_in.dtype)
            axis = adapter.units_axis(in_module, "input")
            mask = units.unsqueeze(1) if axis == 0 else units.unsqueeze(0)
            extra.append((in_name, w_in, mask.expand_as(w_in)))
    lr = scaled_lr(cfg, adapter.intermediate_size)
    method = str(node.params.get("method"))
    bar = ctx.progress(len(pairs) * cfg.epochs, f"edit: {method} (layer {layer})")
    with ctx.edited_weights(upstream):
        starts = {name: weight.detach().clone()} | {n: w.detach().clone() for n, w, _m in extra}
        delta, losses = gated_finetune(
            ctx.model, module, weight, pairs, gate, steps=cfg.steps, lr=lr,
            retain_weight=cfg.retain_weight, epochs=cfg.epochs,
            row_mask=unit_mask if down_units == 0 else dim_mask,
            col_mask=unit_mask if down_units == 1 else dim_mask,
            reset_optimizer=cfg.reset_optimizer,
            extra=[(w, m) for _n, w, m in extra],
            on_pair=lambda _k, _loss: bar.update(1),
            stack=decoder_stack(adapter),
        )
        live = {name: weight} | {n: w for n, w, _m in extra}
        new_values = {n: w.detach().clone() for n, w in live.items()}
        with torch.no_grad():
            for n, w in live.items():
                w.copy_(starts[n])  # passes leave the model as they found it
    bar.close()
    changed = delta != 0
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
            "loss_last_mean": float(sum(losses[-len(pairs):]) / max(1, len(pairs)))
            if losses else None,
            "rows_changed": int(changed.any(down_units).sum()),  # residual dims written
            "cols_changed": int(changed.any(1 - down_units).sum()),  # MLP units touched
            "lr": lr,
            "units_selected": None if unit_mask is None else int(unit_mask.sum()),
            "unit_inputs_trained": [n for n, _w, _m in extra],
        },
        tensors=tensors,
    )


@register
class NeuralGateEdit(Pass):
    op = "edit.neural_gate"
    kind = "edit"
    inputs = {**EDIT_INPUTS, "localize": Input((GATE_MASK,))}
    output = WEIGHT_EDIT

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        return refusal_edit(ctx, node, inputs, inputs["localize"])
