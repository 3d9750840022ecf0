"""What a model can do, as far as planning is concerned.

The planner never loads weights: it checks a policy against this descriptor (languages,
modalities, encoders, layer count) and sizes the plan from it. The models layer builds one
from a loaded model; `TINY_LLAVA_CAPABILITIES` stands in for the built-in model so `plan`
works without loading anything (its sizes follow the zoo recipe; a test keeps them equal).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Which capability encoders satisfy an `anonymize ... in <x> encoder` rule.
ENCODER_SITES: dict[str, tuple[str, ...]] = {
    "text": ("text_encoder",),
    "image": ("image_encoder", "vision_tower"),
}


# Families without a language-model decoder (dual encoders): they embed text and images but
# cannot answer a question, so there is no decoder layer for a refuse rule to edit.
ENCODER_ONLY_FAMILIES: frozenset[str] = frozenset({"clip"})


class ModelCapabilities(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    family: str
    languages: tuple[str, ...]
    modalities: tuple[str, ...]  # subset of text, image, document, scene
    encoders: tuple[str, ...]  # subset of text_encoder, image_encoder, vision_tower
    num_layers: int
    hidden_size: int
    intermediate_size: int
    image_tokens: int = 0  # tokens one image adds to a prompt (cost estimates only)

    @property
    def generates(self) -> bool:
        """Whether the model answers questions (has decoder layers): refuse rules need this."""
        return self.family not in ENCODER_ONLY_FAMILIES

    def encoder_for(self, kind: str) -> str | None:
        """The model's encoder that an anonymize rule `in <kind> encoder` edits, if any."""
        return next((e for e in ENCODER_SITES.get(kind, ()) if e in self.encoders), None)


TINY_LLAVA_CAPABILITIES = ModelCapabilities(
    name="tiny-llava",
    family="llava",
    languages=("en", "zh", "es"),
    modalities=("text", "image", "document", "scene"),
    encoders=("vision_tower",),
    num_layers=4,
    hidden_size=160,
    intermediate_size=448,
    image_tokens=16,
)

# A CLIP-style dual encoder: the model anonymize rules are written for.
TINY_CLIP_CAPABILITIES = ModelCapabilities(
    name="tiny-clip",
    family="clip",
    languages=("en", "zh", "es"),
    modalities=("text", "image"),
    encoders=("text_encoder", "image_encoder"),
    num_layers=3,
    hidden_size=96,
    intermediate_size=256,
    image_tokens=16,
)

BUILTIN_CAPABILITIES: dict[str, ModelCapabilities] = {
    c.name: c for c in (TINY_LLAVA_CAPABILITIES, TINY_CLIP_CAPABILITIES)
}
