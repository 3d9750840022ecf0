"""`compile`: the one-call front half of the compiler (policy file -> plan)."""

from __future__ import annotations

from pathlib import Path

from gatelang.errors import PlanError
from gatelang.ir import load
from gatelang.planner.build import plan
from gatelang.planner.capabilities import (
    BUILTIN_CAPABILITIES,
    TINY_LLAVA_CAPABILITIES,
    ModelCapabilities,
)
from gatelang.planner.plan import Plan


def capabilities_for(model: str | ModelCapabilities | None) -> ModelCapabilities:
    """Capabilities by built-in name (`tiny-llava`, `tiny-clip`) without loading weights."""
    if model is None:
        return TINY_LLAVA_CAPABILITIES
    if isinstance(model, ModelCapabilities):
        return model
    if model in BUILTIN_CAPABILITIES:
        return BUILTIN_CAPABILITIES[model]
    raise PlanError(f"no built-in capabilities for model {model!r}; known: "
                    + ", ".join(BUILTIN_CAPABILITIES)
                    + " (other models are described after loading them)")


def compile(path: str | Path, model: str | ModelCapabilities | None = None, *,  # noqa: A001
            root: str | Path | None = None) -> Plan:
    """Load, check and plan a policy file for a model (default: the built-in tiny-llava)."""
    return plan(load(path, root=root), capabilities_for(model))
