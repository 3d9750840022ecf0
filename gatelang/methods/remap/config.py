"""The encoder remap's parameters. The learning-rate schedule is the method's own per encoder
(text: x0.5 at 50%/75% of the steps; image: x0.1 at 25%/50%; a VLM's vision tower: x0.1 at 75%,
with the scale-aware loss), so it is not a policy parameter."""

from __future__ import annotations

from typing import Literal

from gatelang.methods.base import MethodConfig, ModelShape, Work, param


class RemapConfig(MethodConfig):
    steps: int = param(400, "training steps per encoder", ge=1, le=100000)
    lr: float = param(0.0001, "Adam learning rate", ge=0.0, le=1.0)
    target_weight: float = param(0.6, "weight of the trigger -> target term", ge=0.0, le=100.0)
    weight_decay_to_teacher: float = param(0.01, "weight of the L2 distance to the original "
                                           "weights", ge=0.0, le=100.0)
    neutral_phrase: str = param("a person", "what the text encoder maps a protected name to")
    batch_size: int = param(32, "inputs per training batch", ge=1, le=4096, group="tuning")
    loss: Literal["auto", "cosine", "nmse"] = param(
        "auto", "embedding distance: cosine (the paper), nmse (scale-aware, for a VLM's vision "
        "tower) or auto (nmse for a vision tower, cosine otherwise)", group="tuning")


def edit_cost(cfg: RemapConfig, n_edit: int, edit_tokens: int, layers: int) -> Work:
    per = max(1, edit_tokens // max(1, n_edit))
    return Work(forward_passes=cfg.steps, backward_passes=cfg.steps, tokens=cfg.steps * per)


def touches(cfg: RemapConfig, shape: ModelShape) -> str:
    return f"the encoder's weights (norms frozen), {cfg.steps} steps"
