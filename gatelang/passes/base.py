"""The pass interface and the registry keyed by plan op names.

A pass is a small class that declares the input roles it reads (edges of the plan) and the
outputs it produces, and turns (context, node, inputs) into a `PassResult`. Passes never write
files or choose devices; the runtime does, which is what makes a pass testable alone on a tiny
model and cacheable by the node's content hash.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from gatelang.errors import PlanError

WEIGHT_PREFIX = "weight:"


@dataclass
class PassResult:
    """What a pass hands to its children: JSON-able data and named tensors."""

    data: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    cached: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class NodeSpec:
    """The parts of a plan node a pass needs: identity, op, params and parents by role."""

    id: str
    op: str
    kind: str
    params: dict[str, Any]
    label: str = ""
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def close(self) -> Any: ...


class PassContext:
    """What a pass may use: the loaded model, world, stdlib, seed, device and a progress factory.

    Weight edits flow between passes as tensors named ``weight:<parameter name>`` holding the
    parameter's new value; `edited_weights` applies a set of them for the duration of a block and
    restores the base values afterwards, so passes can measure before and after on one model.
    """

    def __init__(
        self,
        *,
        loaded: Any,
        seed: int = 0,
        world: Any = None,
        stdlib: Any = None,
        progress: Callable[[int, str], Progress] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.loaded = loaded
        self.seed = seed
        self._world = world
        self._stdlib = stdlib
        self._progress = progress
        self.options = dict(options or {})
        self._base: dict[str, torch.Tensor] = {}

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    @property
    def world(self) -> Any:
        if self._world is None:
            from gatelang.world import load_world

            self._world = load_world(seed=0)
        return self._world

    @property
    def stdlib(self) -> Any:
        if self._stdlib is None:
            from gatelang.stdlib import load_stdlib

            self._stdlib = load_stdlib()
        return self._stdlib

    def progress(self, total: int, desc: str) -> Progress:
        if self._progress is None:
            return _NullProgress()
        return self._progress(total, desc)

    @contextlib.contextmanager
    def edited_weights(self, weights: dict[str, torch.Tensor]) -> Iterator[None]:
        params = dict(self.model.named_parameters())
        touched = []
        with torch.no_grad():
            for name, value in weights.items():
                if name not in params:
                    raise PlanError(f"an edit names parameter {name!r}, which the model lacks")
                p = params[name]
                if name not in self._base:
                    self._base[name] = p.detach().clone()
                p.copy_(value.to(p.device, p.dtype))
                touched.append(name)
        try:
            yield
        finally:
            with torch.no_grad():
                for name in touched:
                    params[name].copy_(self._base[name])

    def base_value(self, name: str) -> torch.Tensor:
        """The unedited value of a parameter (even while an edit is applied)."""
        if name in self._base:
            return self._base[name]
        return dict(self.model.named_parameters())[name].detach()


class _NullProgress:
    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def weights_of(inputs: dict[str, PassResult]) -> dict[str, torch.Tensor]:
    """All weight edits carried by a pass's inputs (a later edit of a parameter wins)."""
    out: dict[str, torch.Tensor] = {}
    for result in inputs.values():
        for key, value in result.tensors.items():
            if key.startswith(WEIGHT_PREFIX):
                out[key[len(WEIGHT_PREFIX):]] = value
    return out


class Pass:
    """Base class: subclasses set `op`, `kind`, `inputs`, `outputs` and implement `run`."""

    op: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str] = "1"

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        raise NotImplementedError


REGISTRY: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    if not cls.op:
        raise ValueError(f"{cls.__name__} has no op name")
    REGISTRY[cls.op] = cls
    return cls


def get_pass(op: str) -> type[Pass]:
    try:
        return REGISTRY[op]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise PlanError(f"no pass is registered for op {op!r} (known: {known})") from None
