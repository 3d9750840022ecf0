"""Plan passes: probe, localize, gate and verify, registered by their op name.

Importing this package registers every built-in pass; `get_pass(op)` returns the class for a
plan node's op. Further pass modules in this package register themselves the same way.
"""

from __future__ import annotations

import importlib
import pkgutil

from gatelang.passes import (  # noqa: F401 - imported for registration
    data,
    gate,
    localize_neural_gate,
    localize_privacy_neurons,
    probe,
    requirements,
    verify,
)
from gatelang.passes.base import (
    REGISTRY,
    NodeSpec,
    Pass,
    PassContext,
    PassResult,
    get_pass,
    register,
)

_BUILTIN = {"data", "gate", "localize_neural_gate", "localize_privacy_neurons", "probe",
            "requirements", "verify"}


def _load_more() -> None:
    """Import the package's other pass modules so their `@register` runs."""
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _BUILTIN or info.ispkg:
            continue
        if info.name in ("base", "tensors", "params", "edit_set"):
            continue
        importlib.import_module(f"{__name__}.{info.name}")


_load_more()

__all__ = ["REGISTRY", "NodeSpec", "Pass", "PassContext", "PassResult", "get_pass", "register"]
