"""Editing methods: one package per method, each registered once (see `methods.base`).

Importing this package registers the built-in methods and any method a plug-in package declares
under the ``gatelang.methods`` entry-point group. Nothing here imports torch.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from gatelang.methods.base import (
    MethodConfig,
    MethodConfigError,
    MethodSpec,
    ParamInfo,
    Work,
    config_params,
    param,
)
from gatelang.methods.registry import (
    DEFAULT_METHOD,
    UnknownMethodError,
    get_method,
    methods,
    register_method,
    unregister_method,
)

BUILTIN = ("neural_gate", "finetune", "random_gate", "deactivate", "privacy_neurons", "remap",
           "refusal_patch")

for _name in BUILTIN:
    import_module(f"{__name__}.{_name}")

for _ep in entry_points(group="gatelang.methods"):
    _ep.load()


def load_all_passes() -> None:
    """Import the pass modules of every registered method (the runtime needs their ops)."""
    for spec in methods().values():
        spec.load_passes()


__all__ = [
    "BUILTIN",
    "DEFAULT_METHOD",
    "MethodConfig",
    "MethodConfigError",
    "MethodSpec",
    "ParamInfo",
    "UnknownMethodError",
    "Work",
    "config_params",
    "get_method",
    "load_all_passes",
    "methods",
    "param",
    "register_method",
    "unregister_method",
]
