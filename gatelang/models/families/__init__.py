"""One module per architecture family; each defines one `Adapter` subclass named `ADAPTER`.

Adding a family is adding a file here: the registry imports every module of this package and
indexes the adapters by the HF `model_type`s they declare.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from gatelang.models.adapter import Adapter


@lru_cache(maxsize=1)
def registry() -> dict[str, type[Adapter]]:
    out: dict[str, type[Adapter]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        adapter = getattr(mod, "ADAPTER", None)
        if adapter is None:
            continue
        for model_type in adapter.model_types:
            out[model_type] = adapter
    return out


def adapter_for(model_type: str) -> type[Adapter] | None:
    return registry().get(model_type)


def supported_model_types() -> tuple[str, ...]:
    return tuple(sorted(registry()))
