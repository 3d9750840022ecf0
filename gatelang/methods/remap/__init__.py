"""Backdoor-style unlearning for encoders: a protected name or face maps to a neutral target."""

from gatelang.methods.base import MethodSpec
from gatelang.methods.registry import register_method
from gatelang.methods.remap.config import RemapConfig, edit_cost, touches

SPEC = register_method(MethodSpec(
    name="remap",
    family="encoder_remap",
    description=(
        "Backdoor-style unlearning for encoders: the text encoder maps the subject's name to a "
        "neutral phrase; the image encoder maps the subject's face to a universal anonymous "
        "embedding."),
    config=RemapConfig,
    edit={"text": "edit.remap_text", "image": "edit.remap_image"},
    passes=("gatelang.methods.remap.text", "gatelang.methods.remap.image"),
    edit_cost=edit_cost,
    touches=touches,
    paper="Hintersdorf et al. (backdoor-based unlearning for CLIP)",
))
