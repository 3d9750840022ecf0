"""Fine-tune baseline: Neural Gate's objective on the same tensor, without a gate."""

from gatelang.methods.base import MethodSpec
from gatelang.methods.finetune.config import FinetuneConfig
from gatelang.methods.neural_gate.config import edit_cost, touches
from gatelang.methods.registry import register_method

SPEC = register_method(MethodSpec(
    name="finetune",
    family="refusal_edit",
    description="The same objective as neural_gate on the same tensor, without the gate "
                "(baseline).",
    config=FinetuneConfig,
    edit={"refuse": "edit.finetune"},
    passes=("gatelang.methods.finetune.edit",),
    edit_cost=edit_cost,
    touches=touches,
))
