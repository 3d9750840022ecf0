"""Frozen prefixes: run the decoder layers below an edited layer once, then only the rest.

A pass that trains or attributes at decoder layer L (a feature vector on its output, a
fine-tune of its MLP, integrated gradients at its down projection) runs the same batch many
times while nothing below L changes: the embeddings, the vision tower and layers 0..L-1 give
the same activations at every step. `frozen_prefix` runs the model once, keeps the input of
layer L and the arguments every layer from L up is called with (attention mask, rotary
embeddings: functions of the batch, not of the weights), and `FrozenPrefix.logits` then runs
only layers L.., the final norm and the output embedding, and the latter only at the positions
a loss reads. Hooks on those modules (`gatelang.models.hooks`) work as in a full forward,
because the modules are called the same way.

The result equals the full forward's up to float rounding (the same operations on the same
values; only the logits of unread positions are skipped): `tests/test_prefix_cache.py` checks
attributions and patches against the full-forward path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gatelang.models.adapter import resolve_path
from gatelang.models.hooks import _first_tensor

__all__ = ["DecoderStack", "FrozenPrefix", "PrefixCache", "decoder_stack", "frozen_prefix",
           "read_positions"]


@dataclass(frozen=True)
class DecoderStack:
    """The decoder's layers in order, its final norm and its output embedding."""

    layers: tuple[nn.Module, ...]
    norm: nn.Module
    head: nn.Module

    def index(self, layer: nn.Module) -> int:
        for i, m in enumerate(self.layers):
            if m is layer:
                return i
        raise ValueError(f"{type(layer).__name__} is not one of the decoder's layers")


def decoder_stack(adapter: Any) -> DecoderStack | None:
    """The adapter's decoder stack, or None when the model has no unembedding to run alone."""
    if adapter.final_norm_path is None:
        return None
    model = adapter.model
    head = model.get_output_embeddings()
    if head is None:
        return None
    layers = model.get_submodule(resolve_path(model, adapter.layers_path))
    norm = model.get_submodule(resolve_path(model, adapter.final_norm_path))
    return DecoderStack(tuple(layers), norm, head)


class _Stop(Exception):
    """Ends the prefix forward at the first layer that is not frozen."""


@dataclass
class FrozenPrefix:
    """Layer `start`'s input for one batch and the call arguments of layers `start`.. ."""

    stack: DecoderStack
    start: int
    hidden: torch.Tensor
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]]  # (args after hidden, kwargs) per layer

    def logits(self, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the batch ([B, T, V], or [B, len(positions), V]) computed from layer
        `start` up; autograd reaches every parameter and hook of those layers."""
        h = self.hidden
        for layer, (args, kwargs) in zip(self.stack.layers[self.start:], self.calls, strict=True):
            h = _first_tensor(layer(h, *args, **kwargs))
        if positions is not None:
            h = h[:, positions.to(h.device)]
        return self.stack.head(self.stack.norm(h))

    def nbytes(self) -> int:
        total = self.hidden.numel() * self.hidden.element_size()
        for args, kwargs in self.calls:
            for v in (*args, *kwargs.values()):
                for t in (v if isinstance(v, (tuple, list)) else (v,)):
                    if isinstance(t, torch.Tensor):
                        total += t.numel() * t.element_size()
        return total


def _same_calls(model: nn.Module) -> bool:
    """Whether every decoder layer is called with the same arguments (no per-layer attention
    types, e.g. sliding-window layers mixed with full ones)."""
    cfg = model.config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    types = getattr(text, "layer_types", None)
    return not types or len(set(types)) <= 1


@torch.no_grad()
def frozen_prefix(model: nn.Module, stack: DecoderStack, inputs: dict[str, Any],
                  start: int) -> FrozenPrefix:
    """Run `model(**inputs)` up to decoder layer `start` and keep what the rest needs.

    When every layer is called alike the forward stops at layer `start` (only the frozen part
    runs); otherwise it runs to the end once, recording each later layer's own arguments.
    """
    if not 0 <= start < len(stack.layers):
        raise ValueError(f"layer {start} is outside the decoder's {len(stack.layers)} layers")
    stop_early = _same_calls(model)
    seen: dict[int, tuple[torch.Tensor, tuple[Any, ...], dict[str, Any]]] = {}
    handles = []

    def hook(index: int) -> Any:
        def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if args:
                hidden, rest = args[0], tuple(args[1:])
            else:
                kwargs = dict(kwargs)
                hidden, rest = kwargs.pop("hidden_states"), ()
            seen[index] = (hidden.detach(), rest, dict(kwargs))
            if stop_early:
                raise _Stop
        return pre

    last = start if stop_early else len(stack.layers) - 1
    for i in range(start, last + 1):
        handles.append(stack.layers[i].register_forward_pre_hook(hook(i), with_kwargs=True))
    try:
        model(**inputs, use_cache=False)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    if start not in seen:
        raise RuntimeError(f"decoder layer {start} was not called by the model's forward")
    hidden = seen[start][0]
    if stop_early:
        calls = [(seen[start][1], seen[start][2])] * (len(stack.layers) - start)
    else:
        calls = [(seen[i][1], seen[i][2]) for i in range(start, len(stack.layers))]
    return FrozenPrefix(stack, start, hidden, calls)


class PrefixCache:
    """Frozen prefixes of a fixed set of batches, kept while they fit in `max_bytes`.

    A fine-tune visits the same batches every epoch; keeping their prefixes saves the frozen
    layers' forward on every visit after the first. Past the budget a prefix is recomputed at
    each visit (still once per step loop rather than once per step).
    """

    def __init__(self, model: nn.Module, stack: DecoderStack, start: int,
                 max_bytes: int = 1 << 30) -> None:
        self.model, self.stack, self.start = model, stack, start
        self.max_bytes = max_bytes
        self.used = 0
        self.kept: dict[int, FrozenPrefix] = {}

    def get(self, key: int, inputs: dict[str, Any]) -> FrozenPrefix:
        if key in self.kept:
            return self.kept[key]
        prefix = frozen_prefix(self.model, self.stack, inputs, self.start)
        size = prefix.nbytes()
        if self.used + size <= self.max_bytes:
            self.kept[key] = prefix
            self.used += size
        return prefix


def read_positions(labels: torch.Tensor, ignore: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions whose logits a teacher-forced loss reads, and the targets there.

    Position t predicts token t+1; a position is kept when any row has a target at t+1.
    Returns (positions [K], targets [B, K] with `ignore` where that row has none).
    """
    shifted = labels[:, 1:]
    keep = (shifted != ignore).any(0)
    positions = torch.nonzero(keep).flatten()
    return positions, shifted[:, positions]

