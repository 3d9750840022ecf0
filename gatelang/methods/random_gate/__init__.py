"""Random-gate ablation: Neural Gate's fine-tune through a random gate of the same size."""

from gatelang.methods.base import MethodSpec
from gatelang.methods.neural_gate.config import edit_cost, touches
from gatelang.methods.random_gate.config import RandomGateConfig
from gatelang.methods.registry import register_method

SPEC = register_method(MethodSpec(
    name="random_gate",
    family="refusal_edit",
    description="neural_gate's fine-tune through a random gate of the same size (ablation "
                "baseline).",
    config=RandomGateConfig,
    localize="localize.random",
    edit={"refuse": "edit.neural_gate"},
    passes=("gatelang.methods.random_gate.localize", "gatelang.methods.neural_gate.edit"),
    edit_cost=edit_cost,
    touches=touches,
))
