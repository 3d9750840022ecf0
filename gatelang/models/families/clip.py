"""CLIP-style dual encoders (transformers' `CLIPModel`): the models anonymize rules edit.

A dual encoder has no decoder and no chat: "layers" are the text encoder's, the MLP down
projection is `mlp.fc2`, and images never enter a prompt. Captions pad on the right because
CLIP's position embeddings are absolute and its pooled output is read at the end-of-text token.
"""

from typing import Any, ClassVar

import torch

from gatelang.models.adapter import Adapter


class ClipAdapter(Adapter):
    family = "clip"
    model_types = ("clip",)
    modalities = ("text", "image")
    encoders = ("text_encoder", "image_encoder")
    auto_class: ClassVar[str] = "AutoModel"
    layers_path = "text_model.encoder.layers"
    down_proj_path = "mlp.fc2"
    mlp_in_paths = ("mlp.fc1",)
    vision_layers_path = "vision_model.encoder.layers"
    projector_path = "visual_projection"
    final_norm_path = None

    def __init__(self, model: torch.nn.Module, tokenizer: Any, processor: Any | None = None) -> None:
        super().__init__(model, tokenizer, processor)
        tokenizer.padding_side = "right"

    def image_tokens(self) -> int:
        return 0  # a dual encoder never puts image tokens into a prompt


ADAPTER = ClipAdapter
