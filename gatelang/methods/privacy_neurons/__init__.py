"""Cross-lingual privacy neurons: DEPN per language, split universal vs language-specific."""

from gatelang.methods.base import MethodSpec
from gatelang.methods.deactivate import PASSES
from gatelang.methods.deactivate.config import PrivacyNeuronsConfig, localize_cost, touches
from gatelang.methods.registry import register_method

SPEC = register_method(MethodSpec(
    name="privacy_neurons",
    family="neuron_ablation",
    description=(
        "Cross-lingual privacy neurons: DEPN attribution per language; neurons high in every "
        "language are privacy-universal, high in one are language-specific; both sets are "
        "zeroed."),
    config=PrivacyNeuronsConfig,
    localize="localize.privacy_neurons",
    localize_params={"cross_lingual": True},
    edit={"refuse": "edit.deactivate"},
    passes=PASSES,
    localize_cost=localize_cost,
    touches=touches,
    paper="Dong et al. 2025 (cross-lingual privacy neurons)",
))
