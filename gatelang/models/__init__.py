"""Models: loading, per-family adapters, generation, answer scoring and forward hooks.

Everything architecture-specific lives in this package; other layers speak of sites
(`decoder_layer(i)`, `mlp_act(i)`, `down_proj(i)`, `vision_layer(i)`, `projector`) and prompts.
"""

from gatelang.models.adapter import Adapter, EncodedBatch, Site
from gatelang.models.capabilities import capabilities_of
from gatelang.models.generation import generate, sample
from gatelang.models.hooks import (
    capture,
    capture_inputs,
    capture_outputs,
    intervene,
    replace_inputs,
    replace_outputs,
)
from gatelang.models.loading import (
    ALIASES,
    DEFAULT_MODEL,
    LoadedModel,
    describe_model,
    load_model,
    resolve_spec,
)
from gatelang.models.scoring import (
    JUDGMENTS,
    contains_value,
    is_degenerate,
    is_refusal,
    refusal_score,
    refusal_start_ids,
    score_answer,
)

__all__ = [
    "ALIASES",
    "JUDGMENTS",
    "DEFAULT_MODEL",
    "Adapter",
    "EncodedBatch",
    "LoadedModel",
    "Site",
    "capabilities_of",
    "capture",
    "capture_inputs",
    "capture_outputs",
    "contains_value",
    "describe_model",
    "generate",
    "intervene",
    "is_degenerate",
    "is_refusal",
    "load_model",
    "refusal_score",
    "refusal_start_ids",
    "replace_inputs",
    "replace_outputs",
    "resolve_spec",
    "sample",
    "score_answer",
]
