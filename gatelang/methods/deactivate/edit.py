"""`edit.deactivate`: zero the down-projection columns of the localized units (DEPN).

No training: the edit is the UnitSet of `localize.privacy_neurons` made permanent.
"""

from __future__ import annotations

import torch

from gatelang.passes.base import (
    QUERY_SET,
    UNIT_SET,
    WEIGHT_EDIT,
    WEIGHT_PREFIX,
    Input,
    NodeSpec,
    Pass,
    PassContext,
    PassResult,
    register,
    weights_of,
)


@register
class DeactivateEdit(Pass):
    op = "edit.deactivate"
    kind = "edit"
    inputs = {"edit_set": Input((QUERY_SET,), required=False, many=True),
              "localize": Input((UNIT_SET,)), "weights": Input((WEIGHT_EDIT,), required=False)}
    output = WEIGHT_EDIT

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        units = [tuple(u) for u in inputs["localize"].data["units"]]
        upstream = weights_of(inputs)
        adapter = ctx.loaded.adapter
        layers = sorted({int(layer) for layer, _ in units})
        tensors = {WEIGHT_PREFIX + k: v for k, v in upstream.items()}
        with ctx.edited_weights(upstream):
            for layer in layers:
                down = adapter.module(f"down_proj({layer})")
                name = adapter.site(f"down_proj({layer})").path + ".weight"
                w = down.weight.detach().clone()
                cols = [u for li, u in units if li == layer]
                axis = adapter.units_axis(down, "down")
                w.index_fill_(axis, torch.tensor(cols, dtype=torch.long, device=w.device), 0)
                tensors[WEIGHT_PREFIX + name] = w.cpu()
        return PassResult(
            data={"method": str(node.params.get("method")), "units": [list(u) for u in units],
                  "layers": layers, "neurons": len(units)},
            tensors=tensors,
        )
