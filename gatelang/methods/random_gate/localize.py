"""`localize.random`: a random gate of the configured size (the ablation baseline's GateMask)."""

from __future__ import annotations

import torch

from gatelang.methods.neural_gate.edit import default_layer
from gatelang.methods.neural_gate.localize import LOCALIZE_INPUTS
from gatelang.methods.random_gate.config import RandomGateConfig
from gatelang.passes.base import (
    GATE_MASK,
    NodeSpec,
    Pass,
    PassContext,
    PassResult,
    method_config,
    register,
)


@register
class RandomLocalize(Pass):
    op = "localize.random"
    kind = "localize"
    inputs = LOCALIZE_INPUTS
    output = GATE_MASK

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        p: RandomGateConfig = method_config(ctx, node)
        adapter = ctx.loaded.adapter
        n = adapter.num_layers
        layer = default_layer(n) if p.layer == "auto" else int(p.layer)
        size = max(1, int(p.sparsity * adapter.hidden_size))
        g = torch.Generator().manual_seed(ctx.seed)
        dims = torch.randperm(adapter.hidden_size, generator=g)[:size]
        gate = torch.zeros(adapter.hidden_size, dtype=torch.bool)
        gate[dims] = True
        return PassResult(
            data={"layer": layer, "gate_dims": sorted(int(i) for i in dims), "gate_size": size,
                  "hidden_size": adapter.hidden_size},
            tensors={"gate": gate},
        )
