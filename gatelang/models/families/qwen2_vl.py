"""Qwen2-VL: a ViT with 2x2 patch merging (`model.visual`), M-RoPE positions, ChatML prompts.

Images are flattened patches ([patches, C*T*P*P]) with a (t, h, w) grid per image; each image
becomes grid.prod() / merge_size^2 `<|image_pad|>` tokens. Position ids are three-dimensional
and computed by the model from the mask and grids, so the adapter does not pass them.
"""

from __future__ import annotations

from typing import Any

import torch

from gatelang.models.adapter import Adapter


class Qwen2VLAdapter(Adapter):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    modalities = ("text", "image", "document", "scene")
    encoders = ("vision_tower",)
    layers_path = "model.language_model.layers|model.layers"
    down_proj_path = "mlp.down_proj"
    vision_layers_path = "model.visual.blocks|visual.blocks"
    projector_path = "model.visual.merger|visual.merger"
    final_norm_path = "model.language_model.norm|model.norm"
    image_token = "<|image_pad|>"
    explicit_position_ids = False
    default_template = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    default_image_template = (
        "<|im_start|>user\n<|vision_start|>{image}<|vision_end|>{prompt}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )

    def __init__(self, model: torch.nn.Module, tokenizer: Any, processor: Any | None = None) -> None:
        super().__init__(model, tokenizer, processor)
        # The full processor needs torchvision for its video half; images need only this.
        image_processor = getattr(processor, "image_processor", processor)
        if image_processor is None:
            from transformers import Qwen2VLImageProcessor

            vc = model.config.vision_config
            image_processor = Qwen2VLImageProcessor(
                patch_size=vc.patch_size,
                merge_size=vc.spatial_merge_size,
                temporal_patch_size=vc.temporal_patch_size,
            )
        self.image_processor = image_processor
        self.merge_size = int(model.config.vision_config.spatial_merge_size)

    def _chat_template_owner(self) -> Any | None:
        owner = super()._chat_template_owner()
        return owner if owner is not self.image_processor else None

    def process_image(self, text: str, image: Any) -> tuple[list[int], dict[str, torch.Tensor]]:
        out = self.image_processor(images=[image.convert("RGB")], return_tensors="pt")
        grid = out["image_grid_thw"]
        n = int(grid[0].prod()) // (self.merge_size**2)
        ids, _ = self._tokenize(text)
        pad = self._image_token_id()
        expanded: list[int] = []
        for t in ids:
            expanded += [t] * n if t == pad else [t]
        return expanded, {"pixel_values": out["pixel_values"], "image_grid_thw": grid}

    def extra_inputs(self, input_ids: torch.Tensor, has_images: bool) -> dict[str, torch.Tensor]:
        """M-RoPE needs to know which positions are image tokens (1) and which are text (0)."""
        if not has_images:
            return {}
        return {"mm_token_type_ids": (input_ids == self._image_token_id()).long()}


ADAPTER = Qwen2VLAdapter
