"""Forward hooks: record or replace a module's input or output for the length of a block.

Every forward hook the project installs goes through this module, so there is one place where
hooks are registered and one place where they are removed. Each helper is a context manager
that removes its hooks when the block ends, also when it ends with an exception (a failed
backward, an interrupted edit). A hook left behind does not fail loudly: it keeps recording,
with memory growing at every forward, or keeps changing activations in every later audit,
generation and edit, so the damage shows up as a wrong number much later.

Two levels, one mechanism:

- `capture_inputs`, `capture_outputs`, `replace_inputs`, `replace_outputs` take a module the
  caller already holds (a layer's down projection, a decoder layer);
- `capture` and `intervene` take an adapter and site names (`mlp_act(3)`, `decoder_layer(0)`),
  resolve them, and use the helpers above on the site's input or output, as the site says.

A module's *input* is its first positional argument; its *output* is the first tensor of what
it returns (a decoder layer returns a tensor in transformers 5, a tuple whose first item is
the hidden states in 4.x). Replacing an output keeps the rest of a tuple as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from gatelang.models.adapter import Site

__all__ = [
    "capture",
    "capture_inputs",
    "capture_outputs",
    "intervene",
    "replace_inputs",
    "replace_outputs",
]

T = TypeVar("T")
Where = Literal["input", "output"]


def _first_input(module: nn.Module, args: tuple[Any, ...]) -> torch.Tensor:
    if not args or not isinstance(args[0], torch.Tensor):
        raise TypeError(
            f"{type(module).__name__} was called without a tensor as its first positional "
            "argument; its input cannot be hooked"
        )
    return args[0]


def _first_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    for attr in ("last_hidden_state", "pooler_output"):
        hidden = getattr(x, attr, None)
        if isinstance(hidden, torch.Tensor):
            return hidden
    raise TypeError(f"no tensor in a module output of type {type(x).__name__}")


@contextmanager
def _record(
    module: nn.Module,
    where: Where,
    into: list[Any],
    reduce: Callable[[torch.Tensor], Any] | None,
    detach: bool,
) -> Iterator[list[Any]]:
    def keep(t: torch.Tensor) -> None:
        if detach:
            t = t.detach()
        into.append(reduce(t) if reduce is not None else t)

    if where == "input":
        handle = module.register_forward_pre_hook(lambda m, args: keep(_first_input(m, args)))
    else:
        handle = module.register_forward_hook(lambda m, args, out: keep(_first_tensor(out)))
    try:
        yield into
    finally:
        handle.remove()


def capture_inputs(
    module: nn.Module,
    *,
    reduce: Callable[[torch.Tensor], T] | None = None,
    detach: bool = True,
) -> AbstractContextManager[list[T]]:
    """Record the module's first positional input at every forward run inside the block.

    Yields a list that gets one entry per call of the module: the (detached, unless `detach` is
    False) tensor, or `reduce(tensor)`, which is computed inside the hook so that only what the
    caller needs is kept.
    """
    return _record(module, "input", [], reduce, detach)


def capture_outputs(
    module: nn.Module,
    *,
    reduce: Callable[[torch.Tensor], T] | None = None,
    detach: bool = True,
) -> AbstractContextManager[list[T]]:
    """Record the first tensor of the module's output at every forward run inside the block.

    As `capture_inputs`: one entry per call, the tensor or `reduce(tensor)`.
    """
    return _record(module, "output", [], reduce, detach)


@contextmanager
def replace_inputs(
    module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Call the module on `fn(x)` instead of its first positional input `x` during the block.

    Other arguments pass through unchanged. `fn` sees the live tensor, so it may build an
    autograd graph (integrated gradients) or cut one (`x.detach()`).
    """

    def pre(m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (fn(_first_input(m, args)), *args[1:])

    handle = module.register_forward_pre_hook(pre)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def replace_outputs(
    module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Make the module return `fn(y)` instead of its output tensor `y` during the block.

    A tuple output keeps its other items: `(fn(y), *rest)`. Outputs of other types (model
    output classes) are refused with a TypeError at the forward.
    """

    def post(m: nn.Module, args: Any, out: Any) -> Any:
        if isinstance(out, torch.Tensor):
            return fn(out)
        if isinstance(out, tuple):
            return (fn(out[0]), *out[1:])
        raise TypeError(f"cannot replace a {type(out).__name__} output of {type(m).__name__}")

    handle = module.register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def capture(
    adapter: Any,
    sites: Sequence[str | Site],
    *,
    reduce: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the tensors at `sites` for every forward pass run inside the block.

    `reduce(site_name, tensor)` lets a caller keep only what it needs (e.g. the subject token's
    row) so memory does not grow with the sequence length; the result lists one detached tensor
    per forward pass per site.
    """
    resolved = [adapter.site(s) if isinstance(s, str) else s for s in sites]
    store: dict[str, list[torch.Tensor]] = {s.name: [] for s in resolved}
    with ExitStack() as stack:
        for s in resolved:
            keep = None if reduce is None else (lambda t, name=s.name: reduce(name, t))
            stack.enter_context(_record(adapter.module(s), s.capture, store[s.name], keep, True))
        yield store


@contextmanager
def intervene(
    adapter: Any, site: str | Site, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Replace the tensor at `site` by `fn(tensor)` during the block (ablation, gating)."""
    s = adapter.site(site) if isinstance(site, str) else site
    mod = adapter.module(s)
    with replace_inputs(mod, fn) if s.capture == "input" else replace_outputs(mod, fn):
        yield
