"""Method parameters: the stdlib preset's defaults overridden by the policy's `method` clause."""

from __future__ import annotations

from typing import Any

from gatelang.errors import PlanError
from gatelang.passes.base import PassContext


def method_params(ctx: PassContext, method: str, node_params: dict[str, Any]) -> dict[str, Any]:
    """Preset defaults, then the node's method params (nested under `params`/`method_params` or
    top-level), then run options (`ctx.options["method_overrides"]`, used by reduced configs).

    `method_overrides` is either one flat mapping for every method, or keyed by method name
    (`{"neural_gate": {...}, "remap": {...}}`) so that settings of one method (a refusal edit's
    `steps 1`) cannot leak into another whose parameter has the same name (remap's `steps`).
    """
    presets = ctx.stdlib.methods
    name = str(node_params.get("method", method))
    if name not in presets:
        raise PlanError(f"unknown method {name!r}; known: {', '.join(sorted(presets))}")
    merged: dict[str, Any] = presets[name].defaults()
    for key in ("params", "method_params"):
        nested = node_params.get(key)
        if isinstance(nested, dict):
            merged.update(nested)
    for key, value in node_params.items():
        if key in merged and key not in ("params", "method_params"):
            merged[key] = value
    overrides = ctx.options.get("method_overrides") or {}
    if any(key in presets for key in overrides):
        merged.update(overrides.get(name) or {})
    else:
        merged.update(overrides)
    return merged


def fraction(value: Any) -> float:
    """A percent parameter as a fraction of 1.

    The IR holds percentages as fractions (0.3); run options and hand-built nodes may still say
    '30%' or 30, so every pass reads them through here.
    """
    if isinstance(value, str):
        v = value.strip()
        return float(v[:-1]) / 100 if v.endswith("%") else float(v)
    v = float(value)
    return v / 100 if v > 1 else v
