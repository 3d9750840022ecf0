"""`edit.toy_zero`: zero the down-projection columns of the layer's first `units` units."""

from gatelang.passes import Input, NodeSpec, Pass, PassContext, PassResult, method_config, register
from gatelang.passes.base import QUERY_SET, WEIGHT_EDIT, WEIGHT_PREFIX, weights_of


@register
class ToyZeroEdit(Pass):
    op = "edit.toy_zero"
    kind = "edit"
    inputs = {"edit_set": Input((QUERY_SET,), many=True),
              "weights": Input((WEIGHT_EDIT,), required=False)}
    output = WEIGHT_EDIT

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        cfg = method_config(ctx, node)
        adapter = ctx.loaded.adapter
        down = adapter.module(f"down_proj({cfg.layer})")
        name = adapter.site(f"down_proj({cfg.layer})").path + ".weight"
        value = down.weight.detach().clone()
        if adapter.units_axis(down, "down") == 1:
            value[:, : cfg.units] = 0
        else:
            value[: cfg.units] = 0
        tensors = {WEIGHT_PREFIX + k: v for k, v in weights_of(inputs).items()}
        tensors[WEIGHT_PREFIX + name] = value.cpu()
        return PassResult(data={"method": "toy_zero", "units": cfg.units}, tensors=tensors)
