"""LLaVA-1.5 (and tiny-llava): CLIP vision tower -> MLP projector -> Llama decoder.

The processor expands each `<image>` placeholder into one token per visual feature
((image_size / patch_size)^2, plus the CLS token when the select strategy is `full`).
"""

from __future__ import annotations

from typing import Any

import torch

from gatelang.errors import ModelError
from gatelang.models.adapter import Adapter


class LlavaAdapter(Adapter):
    family = "llava"
    model_types = ("llava",)
    modalities = ("text", "image", "document", "scene")
    encoders = ("vision_tower",)
    layers_path = "model.language_model.layers|language_model.model.layers"
    down_proj_path = "mlp.down_proj"
    vision_layers_path = (
        "model.vision_tower.encoder.layers|model.vision_tower.vision_model.encoder.layers"
    )
    projector_path = "model.multi_modal_projector|multi_modal_projector"
    final_norm_path = "model.language_model.norm|language_model.model.norm"
    image_token = "<image>"
    default_template = "USER: {prompt} ASSISTANT:"
    default_image_template = "USER: {image}\n{prompt} ASSISTANT:"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, processor: Any | None = None) -> None:
        super().__init__(model, tokenizer, processor)
        if self.processor is None:
            self.processor = self._build_processor()

    def _build_processor(self) -> Any:
        """A processor from the model config, for checkpoints saved without one."""
        from transformers import CLIPImageProcessor, LlavaProcessor

        cfg = self.model.config
        size = int(cfg.vision_config.image_size)
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        )
        if self.tokenizer.convert_tokens_to_ids(self.image_token) in (None, self.tokenizer.unk_token_id):
            raise ModelError(f"the tokenizer has no {self.image_token!r} token for image inputs")
        return LlavaProcessor(
            image_processor=image_processor,
            tokenizer=self.tokenizer,
            patch_size=int(cfg.vision_config.patch_size),
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            image_token=self.image_token,
            num_additional_image_tokens=1,  # CLIP's CLS token
        )

    def process_image(self, text: str, image: Any) -> tuple[list[int], dict[str, torch.Tensor]]:
        out = self.processor(
            images=[image.convert("RGB")],
            text=[text],
            add_special_tokens=self.add_special_tokens(text),
            return_tensors="pt",
        )
        extra = {k: v for k, v in out.items() if k not in ("input_ids", "attention_mask")}
        return out["input_ids"][0].tolist(), extra


ADAPTER = LlavaAdapter
