"""LLaVA-NeXT (1.6): LLaVA with any-resolution tiling; each image becomes a variable number of
tiles ([1, tiles, 3, H, W]) plus its original size, and a variable number of image tokens."""

from __future__ import annotations

from typing import Any

import torch

from gatelang.models.families.llava import LlavaAdapter


class LlavaNextAdapter(LlavaAdapter):
    family = "llava_next"
    model_types = ("llava_next",)
    default_template = "[INST] {prompt} [/INST]"
    default_image_template = "[INST] {image}\n{prompt} [/INST]"

    def _build_processor(self) -> Any:
        from transformers import LlavaNextImageProcessor, LlavaNextProcessor

        cfg = self.model.config
        size = int(cfg.vision_config.image_size)
        image_processor = LlavaNextImageProcessor(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            image_grid_pinpoints=cfg.image_grid_pinpoints,
        )
        return LlavaNextProcessor(
            image_processor=image_processor,
            tokenizer=self.tokenizer,
            patch_size=int(cfg.vision_config.patch_size),
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            image_token=self.image_token,
            num_additional_image_tokens=1,  # CLIP's CLS token
        )

    def collate_images(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Pad the tile dimension to the batch's largest image, as the processor does."""
        tiles = max(p["pixel_values"].shape[1] for p in parts)
        pixels = []
        for p in parts:
            pv = p["pixel_values"]
            if pv.shape[1] < tiles:
                pad = pv.new_zeros((pv.shape[0], tiles - pv.shape[1], *pv.shape[2:]))
                pv = torch.cat([pv, pad], dim=1)
            pixels.append(pv)
        out = {"pixel_values": torch.cat(pixels, dim=0)}
        out["image_sizes"] = torch.cat([p["image_sizes"] for p in parts], dim=0)
        return out


ADAPTER = LlavaNextAdapter
