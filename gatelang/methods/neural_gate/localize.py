"""`localize.neural_gate`: choose the layer, learn feature vectors, build the gate (a GateMask).

Layer choice follows the paper: the share of strongly-active dims (those the feature vector flips
in more than `gate_threshold` of samples) rises then falls over the layers; with `layer auto`
the layer at the peak is chosen, measured on a few samples per candidate layer.
"""

from __future__ import annotations

import torch

from gatelang.errors import PlanError
from gatelang.measure.sets import spread
from gatelang.methods.neural_gate.algorithm import build_gate, learn_feature_vector
from gatelang.methods.neural_gate.config import NeuralGateConfig
from gatelang.models.prefix import decoder_stack
from gatelang.passes.base import (
    GATE_MASK,
    QUERY_SET,
    WEIGHT_EDIT,
    Input,
    NodeSpec,
    Pass,
    PassContext,
    PassResult,
    method_config,
    register,
)
from gatelang.passes.data import required_edit_queries
from gatelang.passes.edit_set import build_examples, examples_to_json, mask_batch

LOCALIZE_INPUTS = {"edit_set": Input((QUERY_SET,), many=True),
                   "weights": Input((WEIGHT_EDIT,), required=False)}


def learn_masks(ctx: PassContext, layer: int, batches: list, p: NeuralGateConfig,
                progress=None) -> tuple[torch.Tensor, list[float]]:
    adapter = ctx.loaded.adapter
    module = adapter.module(f"decoder_layer({layer})")
    stack = decoder_stack(adapter)
    masks, losses = [], []
    for batch in batches:
        fv = learn_feature_vector(
            ctx.model, module, batch, hidden_size=adapter.hidden_size,
            steps=p.mask_steps, lr=p.mask_lr, l1=p.mask_l1, retain_weight=p.retain_weight,
            stack=stack,
        )
        masks.append(fv.mask(p.privacy_value))
        losses.append(fv.loss)
        if progress is not None:
            progress.update(1)
    return torch.stack(masks).cpu(), losses


@register
class NeuralGateLocalize(Pass):
    op = "localize.neural_gate"
    kind = "localize"
    inputs = LOCALIZE_INPUTS
    output = GATE_MASK

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        p: NeuralGateConfig = method_config(ctx, node)
        queries = required_edit_queries(ctx, node, inputs)
        examples = build_examples(ctx, queries, other_subjects=p.retain_other_subjects,
                                  same_subject=p.retain_same_subject)
        samples = spread(examples, p.mask_samples)
        batches = [mask_batch(ctx, ex) for ex in samples]
        adapter = ctx.loaded.adapter
        threshold = p.gate_threshold
        sparsity = p.sparsity
        layer_param = p.layer
        shares: dict[str, float] = {}
        if layer_param == "auto":
            candidates = candidate_layers(adapter.num_layers)
            probe = batches[: p.layer_probe_samples]
            bar = ctx.progress(len(candidates) * len(probe), "localize: layer search")
            for cand in candidates:
                m, _ = learn_masks(ctx, cand, probe, p, bar)
                g, _share = build_gate(m, threshold, 1.0)
                shares[str(cand)] = float(g.float().mean())
            bar.close()
            layer = max(candidates, key=lambda c: (shares[str(c)], -c))
        else:
            layer = int(layer_param)
            if not 0 <= layer < adapter.num_layers:
                raise PlanError(f"{node.op}: layer {layer} out of range 0..{adapter.num_layers - 1}")
        bar = ctx.progress(len(batches), f"localize: feature vectors (layer {layer})")
        masks, losses = learn_masks(ctx, layer, batches, p, bar)
        bar.close()
        gate, share = build_gate(masks, threshold, sparsity)
        return PassResult(
            data={
                "layer": layer,
                "layer_shares": shares,
                "gate_dims": [int(i) for i in torch.nonzero(gate).flatten()],
                "gate_size": int(gate.sum()),
                "hidden_size": int(adapter.hidden_size),
                "samples": len(batches),
                "mask_loss_mean": float(sum(losses) / max(1, len(losses))),
                "examples": examples_to_json(examples),
                "params": p.model_dump(),
            },
            tensors={"gate": gate, "share": share},
        )


def candidate_layers(n: int) -> list[int]:
    """The layers `layer auto` searches."""
    # The first and last layers are embeddings-in/logits-out plumbing; the paper's peak is
    # always in the middle (LLaVA 11/32, MiniGPT 6/32).
    return list(range(1, n - 1)) if n > 2 else list(range(n))
