"""Neural Gate: learn which residual dims carry the privacy concept, fine-tune through them."""

from gatelang.methods.base import MethodSpec
from gatelang.methods.neural_gate.config import (
    PROFILES,
    NeuralGateConfig,
    edit_cost,
    localize_cost,
    touches,
)
from gatelang.methods.registry import register_method

SPEC = register_method(MethodSpec(
    name="neural_gate",
    family="refusal_edit",
    description=(
        "Neural Gate: learn a per-dimension feature vector at one decoder layer's residual output "
        "(subject's last token), gate the dimensions it flips, then fine-tune that layer's MLP "
        "down-projection towards refusal with gradients at the subject token only through the "
        "gate."),
    config=NeuralGateConfig,
    localize="localize.neural_gate",
    edit={"refuse": "edit.neural_gate"},
    passes=("gatelang.methods.neural_gate.localize", "gatelang.methods.neural_gate.edit"),
    profiles=PROFILES,
    localize_cost=localize_cost,
    edit_cost=edit_cost,
    touches=touches,
    paper="Neural Gate (neuron-level gradient gating)",
))
