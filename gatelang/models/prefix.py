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

A pass that changes the model only at some columns (integrated gradients scale the
activations at the answer-predicting positions, a feature vector the subject's last token) can
go further: in a causal decoder the columns before the first changed one give the same keys and
values at every step, and the columns after the last read one are never read. `FrozenWindow`
keeps the keys and values of the unchanged columns of layers L.. and runs only the window in
between per step, attending to them; `FrozenWindow.logits(repeat=k)` runs k copies of the
window as one batch (the integrated-gradients steps). `frozen_windows` gets every layer's
window from one forward, `FrozenPrefix.window` one layer's from its prefix. Both return None
where a model's layers are called in a way the window cannot slice (no 4-D attention mask,
multimodal rotary positions, no cache argument); callers then use the whole prefix.

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

__all__ = ["DecoderStack", "FrozenPrefix", "FrozenWindow", "PrefixCache", "decoder_stack",
           "frozen_prefix", "frozen_windows", "read_positions"]

Call = tuple[tuple[Any, ...], dict[str, Any]]
_CACHE_ARGS = ("cache", "past_key_values", "past_key_value")


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

    def window(self, begin: int, end: int) -> FrozenWindow | None:
        """Columns `begin`..`end`-1 of this batch from layer `start` up, the keys and values of
        the columns before `begin` computed once here (None where the layers cannot be
        called on a window, see the module docstring)."""
        calls = [_window_call(self.hidden, c, 0, begin) for c in self.calls]
        if any(c is None for c in calls) or not 0 <= begin < end <= self.hidden.shape[1]:
            return None
        kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        if begin > 0:
            rec = _KV(kept)
            h = self.hidden[:, :begin]
            try:
                with torch.no_grad():
                    for layer, call in zip(self.stack.layers[self.start:], calls, strict=True):
                        name, (args, kwargs) = call  # type: ignore[misc]
                        h = _first_tensor(layer(h, *args, **{**kwargs, name: rec}))
            except (AttributeError, TypeError):  # the attention wants more than `update`
                return None
        return _make_window(self.stack, self.start, begin, end, self.hidden, self.calls, kept)

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


class _KV:
    """What a decoder layer's attention sees as its KV cache.

    Recording (`kept` filled by `update`): stores each layer's keys and values and returns them
    unchanged, so the forward is the plain one. Reading (`prefix` given): returns the stored
    keys and values of the columns before the window followed by the window's own, and stores
    nothing, so one prefix serves every step. Keyed by the attention's own layer index.
    """

    def __init__(self, kept: dict[int, tuple[torch.Tensor, torch.Tensor]],
                 prefix: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        self.kept = kept
        self.prefix = prefix

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *_args: Any,
               **_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prefix is None:
            self.kept[layer_idx] = (key.detach(), value.detach())
            return key, value
        if layer_idx not in self.prefix:
            return key, value
        k, v = self.prefix[layer_idx]
        return torch.cat([k, key], dim=-2), torch.cat([v, value], dim=-2)


def _window_call(hidden: torch.Tensor, call: Call, begin: int, end: int
                 ) -> tuple[str, Call] | None:
    """A layer's call arguments cut to query columns `begin`..`end`-1 (keys 0..`end`-1), and
    the name of its cache argument; None when an argument cannot be cut."""
    args, kwargs = call
    rows, cols = int(hidden.shape[0]), int(hidden.shape[1])
    if any(isinstance(a, torch.Tensor) for a in args):
        return None
    name = next((n for n in _CACHE_ARGS if n in kwargs), None)
    if name is None:
        return None
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _CACHE_ARGS:
            continue
        if key == "attention_mask":
            if not (isinstance(value, torch.Tensor) and value.dim() == 4
                    and value.shape[-2:] == (cols, cols) and value.shape[0] in (1, rows)):
                return None
            out[key] = value[:, :, begin:end, :end]
        elif key == "position_embeddings":
            if not (isinstance(value, tuple) and all(
                    isinstance(t, torch.Tensor) and t.dim() == 3 and t.shape[0] in (1, rows)
                    and t.shape[1] == cols for t in value)):
                return None
            out[key] = tuple(t[:, begin:end] for t in value)
        elif key == "position_ids":
            if not (isinstance(value, torch.Tensor) and value.dim() == 2
                    and value.shape[1] == cols):
                return None
            out[key] = value[:, begin:end]
        elif key == "cache_position":
            if not (isinstance(value, torch.Tensor) and value.dim() == 1):
                return None
            out[key] = value[begin:end]
        elif isinstance(value, torch.Tensor) or (
                isinstance(value, (tuple, list)) and any(isinstance(t, torch.Tensor)
                                                         for t in value)):
            return None
        else:
            out[key] = value
    return name, (args, out)


def _repeat(value: Any, times: int, rows: int) -> Any:
    """Tensors whose first axis is the batch, `times` copies along it (copy s, row b at
    s * rows + b); everything else unchanged."""
    if times == 1:
        return value
    if isinstance(value, torch.Tensor):
        if value.dim() > 0 and value.shape[0] == rows:
            return value.repeat(times, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, tuple):
        return tuple(_repeat(v, times, rows) for v in value)
    return value


@dataclass
class FrozenWindow:
    """Columns `begin`..`end`-1 of a batch from layer `start` up, and the keys and values of
    the columns before `begin` at every layer from `start` (see the module docstring)."""

    stack: DecoderStack
    start: int
    begin: int
    end: int
    hidden: torch.Tensor  # layer `start`'s input at the window's columns [B, end - begin, D]
    calls: list[tuple[str, Call]]  # (cache argument, cut call) per layer from `start`
    kept: dict[int, tuple[torch.Tensor, torch.Tensor]]  # keys/values before `begin`

    def __post_init__(self) -> None:
        self._copies: dict[int, tuple[Any, ...]] = {}

    @property
    def rows(self) -> int:
        return int(self.hidden.shape[0])

    def _prepared(self, times: int) -> tuple[Any, ...]:
        if times not in self._copies:
            rows = self.rows
            kept = {i: (_repeat(k, times, rows), _repeat(v, times, rows))
                    for i, (k, v) in self.kept.items()}
            calls = [(name, (args, {k: _repeat(v, times, rows) for k, v in kw.items()}))
                     for name, (args, kw) in self.calls]
            self._copies = {times: (_repeat(self.hidden, times, rows), calls, kept)}
        return self._copies[times]

    def logits(self, positions: torch.Tensor | None = None, repeat: int = 1) -> torch.Tensor:
        """Logits at the window's columns ([repeat * B, end - begin, V]) or at the absolute
        columns `positions` (all inside the window); row s * B + b is copy s of row b."""
        hidden, calls, kept = self._prepared(repeat)
        past = _KV({}, kept)
        h = hidden
        for layer, (name, (args, kwargs)) in zip(self.stack.layers[self.start:], calls,
                                                 strict=True):
            h = _first_tensor(layer(h, *args, **{**kwargs, name: past}))
        if positions is not None:
            rel = positions.to(h.device) - self.begin
            if rel.numel() and (int(rel.min()) < 0 or int(rel.max()) >= h.shape[1]):
                raise ValueError("a read position lies outside the window")
            h = h[:, rel]
        return self.stack.head(self.stack.norm(h))


def _make_window(stack: DecoderStack, start: int, begin: int, end: int, hidden: torch.Tensor,
                 calls: list[Call], kept: dict[int, tuple[torch.Tensor, torch.Tensor]]
                 ) -> FrozenWindow | None:
    cut = [_window_call(hidden, c, begin, end) for c in calls]
    if any(c is None for c in cut):
        return None
    prefix = {i: (k[..., :begin, :], v[..., :begin, :]) for i, (k, v) in kept.items()
              if begin > 0}
    return FrozenWindow(stack, start, begin, end, hidden[:, begin:end].detach(),
                        cut, prefix)  # type: ignore[arg-type]


@torch.no_grad()
def frozen_windows(model: nn.Module, stack: DecoderStack, inputs: dict[str, Any],
                   starts: list[int], begin: int, end: int) -> dict[int, FrozenWindow] | None:
    """The window `begin`..`end`-1 of the batch from each layer in `starts`, all from one
    forward of the whole model: it records every layer's input and every layer's keys and
    values, and nothing in it depends on which layer a later step changes. None where the
    layers cannot be called on a window."""
    n = len(stack.layers)
    if not starts or any(not 0 <= s < n for s in starts):
        raise ValueError(f"start layers {starts} outside the decoder's {n} layers")
    seen: dict[int, tuple[torch.Tensor, Call]] = {}
    kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    rec = _KV(kept)
    first = min(starts)

    def hook(index: int) -> Any:
        def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                hidden, rest = args[0], tuple(args[1:])
            else:
                kwargs = dict(kwargs)
                hidden, rest = kwargs.pop("hidden_states"), ()
            seen[index] = (hidden.detach(), (rest, dict(kwargs)))
            name = next((k for k in _CACHE_ARGS if k in kwargs), None)
            if name is None:
                raise _Stop
            return (hidden, *rest), {**kwargs, name: rec}
        return pre

    handles = [stack.layers[i].register_forward_pre_hook(hook(i), with_kwargs=True)
               for i in range(first, n)]
    try:
        model(**inputs, use_cache=False)
    except _Stop:
        return None
    except (AttributeError, TypeError):  # the attention wants more than `update`
        return None
    finally:
        for h in handles:
            h.remove()
    if len(seen) != n - first:
        return None
    cols = int(seen[first][0].shape[1])
    if not 0 <= begin < end <= cols:
        raise ValueError(f"window {begin}..{end} outside the batch's {cols} columns")
    out: dict[int, FrozenWindow] = {}
    for s in starts:
        w = _make_window(stack, s, begin, end, seen[s][0], [seen[i][1] for i in range(s, n)],
                         kept)
        if w is None:
            return None
        out[s] = w
    return out


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

