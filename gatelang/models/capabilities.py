"""The capability descriptor the planner uses to decide what a policy can do on a model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _ModelCapabilitiesFallback(BaseModel):
    """Used only where `gatelang.planner.capabilities` is not importable; same fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    family: str
    languages: tuple[str, ...]
    modalities: tuple[str, ...]
    encoders: tuple[str, ...]
    num_layers: int
    hidden_size: int
    intermediate_size: int
    image_tokens: int = 0


def _capabilities_class() -> type[Any]:
    try:
        from gatelang.planner.capabilities import ModelCapabilities
    except ImportError:
        return _ModelCapabilitiesFallback
    return ModelCapabilities


def capabilities_of(loaded: Any) -> Any:
    ad = loaded.adapter
    cls = _capabilities_class()
    fields = {
        "name": loaded.name,
        "family": ad.family,
        "languages": tuple(ad.languages()),
        "modalities": tuple(ad.modalities),
        "encoders": tuple(ad.encoders),
        "num_layers": ad.num_layers,
        "hidden_size": ad.hidden_size,
        "intermediate_size": ad.intermediate_size,
        "image_tokens": ad.image_tokens(),
    }
    known = getattr(cls, "model_fields", None)
    if known:
        fields = {k: v for k, v in fields.items() if k in known}
    return cls(**fields)
