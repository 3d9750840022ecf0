"""DEPN: attribute the leaked value to MLP units by integrated gradients, zero the top units."""

from gatelang.methods.base import MethodSpec
from gatelang.methods.deactivate.config import DeactivateConfig, localize_cost, touches
from gatelang.methods.registry import register_method

PASSES = ("gatelang.methods.deactivate.localize", "gatelang.methods.deactivate.edit")

SPEC = register_method(MethodSpec(
    name="deactivate",
    family="neuron_ablation",
    description=(
        "DEPN: integrated-gradients attribution of the leaked value's probability to MLP "
        "intermediate neurons, vote across prompts, zero the top neurons' down-projection "
        "columns. No training."),
    config=DeactivateConfig,
    localize="localize.privacy_neurons",
    localize_params={"cross_lingual": False},
    edit={"refuse": "edit.deactivate"},
    passes=PASSES,
    localize_cost=localize_cost,
    touches=touches,
    paper="DEPN (privacy neurons)",
))
