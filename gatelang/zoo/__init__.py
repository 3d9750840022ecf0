"""Built-in models that ship with gatelang, so every policy can run offline on a laptop.

Each built-in model is one module with `build(recipe_name, out_dir)` and `evaluate(folder)`;
this registry maps its public name to that module and to its shipped weights folder
(`gatelang/zoo/weights/<name>/`, a plain Hugging Face folder).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from gatelang.errors import GatelangError

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"


class ZooError(GatelangError):
    """A built-in model is unknown, missing or cannot be built."""


@dataclass(frozen=True)
class ZooModel:
    name: str
    module: str
    description: str

    def load_module(self) -> ModuleType:
        return importlib.import_module(self.module)

    @property
    def folder(self) -> Path:
        return WEIGHTS_ROOT / self.name


_REGISTRY: dict[str, ZooModel] = {}


def register(name: str, module: str, description: str) -> None:
    """Add a built-in model (a module exposing `train`, `evaluate`, `RECIPES`)."""
    _REGISTRY[name] = ZooModel(name, module, description)


register(
    "tiny-llava",
    "gatelang.zoo.tiny_llava",
    "LlavaForConditionalGeneration (CLIP vision tower + Llama decoder) trained on the built-in world",
)
register(
    "tiny-clip",
    "gatelang.zoo.tiny_clip",
    "CLIPModel (text tower + ViT) trained contrastively on the built-in world's faces and shapes",
)


def names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get(name: str) -> ZooModel:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ZooError(
            f"unknown built-in model {name!r}; built-in models: {', '.join(names())}"
        ) from None


def is_builtin(name: str) -> bool:
    return name in _REGISTRY


def model_path(name: str = "tiny-llava") -> Path:
    """The shipped weights folder of a built-in model (loadable with plain transformers)."""
    entry = get(name)
    folder = entry.folder
    if not (folder / "config.json").is_file():
        raise ZooError(
            f"built-in model {name!r} has no weights at {folder}; "
            f"build them with `gatelang zoo build {name}`"
        )
    return folder


def build(name: str, recipe: str = "full", out: str | Path | None = None, log=print) -> Path:
    """Train a built-in model from scratch with one of its recipes; returns the folder."""
    entry = get(name)
    module = entry.load_module()
    if recipe not in module.RECIPES:
        raise ZooError(f"{name} has no recipe {recipe!r}; recipes: {', '.join(module.RECIPES)}")
    target = Path(out) if out is not None else entry.folder
    module.train(module.RECIPES[recipe], target, log=log)
    return target


def evaluate(
    name: str, folder: str | Path | None = None, max_per_cell: int | None = None
) -> list[dict]:
    """Base quality of a built-in model: one record per evaluation cell (accuracy and n)."""
    entry = get(name)
    target = Path(folder) if folder is not None else model_path(name)
    if not (target / "config.json").is_file():
        raise ZooError(f"{target}: not a model folder (no config.json)")
    return entry.load_module().evaluate(target, max_per_cell=max_per_cell)
