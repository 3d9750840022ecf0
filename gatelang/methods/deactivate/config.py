"""DEPN's parameters (shared by the cross-lingual privacy-neurons variant)."""

from __future__ import annotations

from gatelang.methods.base import MethodConfig, ModelShape, Work, param


class DeactivateConfig(MethodConfig):
    ig_steps: int = param(20, "integrated-gradients steps per prompt", ge=1, le=200)
    threshold_ratio: float = param(0.1, "a unit votes for a prompt when its attribution is above "
                                   "this share of the prompt's largest", ge=0.0, le=1.0)
    top_k: int = param(200, "units to zero (DEPN's number for BERT-base)", ge=1, le=1_000_000)
    unit_share: float = param(
        0.0, "when above 0, zero this share of the model's MLP units instead of top_k (DEPN's "
        "200 of BERT-base's 36,864 units is 0.54%)", percent=True)


class PrivacyNeuronsConfig(DeactivateConfig):
    universal_min_languages: int = param(
        0, "languages a unit must be high in to count as privacy-universal (0: every language "
        "of the rule)", ge=0, le=100)


def localize_cost(cfg: DeactivateConfig, n_edit: int, edit_tokens: int, layers: int) -> Work:
    steps = cfg.ig_steps * n_edit
    return Work(forward_passes=steps, backward_passes=steps, tokens=edit_tokens)


def touches(cfg: DeactivateConfig, shape: ModelShape) -> str:
    total = shape.num_layers * shape.intermediate_size
    k = max(1, round(cfg.unit_share * total)) if cfg.unit_share > 0 else cfg.top_k
    return (f"zeroes at most {k} MLP units (down-projection columns) of {total} in "
            f"{shape.num_layers} layers")
