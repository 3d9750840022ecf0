"""`edit.finetune`: Neural Gate's refusal fine-tune with no gate (the unmasked baseline)."""

from __future__ import annotations

from gatelang.methods.neural_gate.edit import EDIT_INPUTS, refusal_edit
from gatelang.passes.base import WEIGHT_EDIT, NodeSpec, Pass, PassContext, PassResult, register


@register
class FinetuneEdit(Pass):
    op = "edit.finetune"
    kind = "edit"
    inputs = EDIT_INPUTS
    output = WEIGHT_EDIT

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        return refusal_edit(ctx, node, inputs, None)
