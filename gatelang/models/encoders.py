"""Embedding functions of encoders, for edits and checks that work in embedding space.

CLIP-style models expose their encoders as `get_text_features` / `get_image_features`; a VLM's
vision tower is embedded by the hidden states its projector reads. These are the only places
that know those conventions (the remap edit and identity inference use them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from gatelang.errors import ModelError

Inputs = Mapping[str, torch.Tensor]
EmbedFn = Callable[[nn.Module, Inputs], torch.Tensor]


def _features(out: Any) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose pooler_output is the projected embedding."""
    if torch.is_tensor(out):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise ModelError(f"unexpected encoder output type {type(out).__name__}")
    return pooled


def clip_text_embed(model: nn.Module, inputs: Inputs) -> torch.Tensor:
    return _features(model.get_text_features(**inputs))


def clip_image_embed(model: nn.Module, inputs: Inputs) -> torch.Tensor:
    return _features(model.get_image_features(**inputs))


CLIP_TEXT_PREFIXES = ("text_model.", "text_projection.")
CLIP_IMAGE_PREFIXES = ("vision_model.", "visual_projection.")



def vision_tower_embed(tower_path: str, feature_layer: int = -2, drop_cls: bool = True) -> EmbedFn:
    """Embed with a VLM's vision tower: the hidden states at the layer the projector reads.

    LLaVA feeds `hidden_states[vision_feature_layer]` (minus the CLS token under the default
    strategy) to the projector, so that sequence is what must become anonymous.
    """

    def embed(model: nn.Module, inputs: Inputs) -> torch.Tensor:
        tower = model.get_submodule(tower_path)
        out = tower(inputs["pixel_values"], output_hidden_states=True)
        hidden = out.hidden_states[feature_layer]
        return hidden[:, 1:] if drop_cls else hidden

    return embed



def vision_tower_path(loaded: Any) -> str:
    """The vision tower's module path, from the adapter's vision-layer site."""
    adapter = getattr(loaded, "adapter", None)
    try:
        layer0 = adapter.site("vision_layer(0)").path  # e.g. model.vision_tower.encoder.layers.0
    except Exception as exc:  # the adapter raises ModelError for towerless models
        raise ModelError(f"{getattr(loaded, 'name', 'the model')} has no vision tower: {exc}") \
            from None
    return layer0.split(".encoder.layers.")[0]


def pixel_fn(loaded: Any) -> Callable[[Sequence[Any]], torch.Tensor]:
    """Images -> the model's pixel tensor, through its own image processor."""
    proc = getattr(loaded, "processor", None)
    proc = getattr(proc, "image_processor", proc)
    if proc is None:
        raise ModelError(f"{getattr(loaded, 'name', 'the model')} has no image processor")

    def pixels(images: Sequence[Any]) -> torch.Tensor:
        rgb = [im.convert("RGB") for im in images]
        return proc(images=rgb, return_tensors="pt")["pixel_values"].to(loaded.device, loaded.dtype)

    return pixels
