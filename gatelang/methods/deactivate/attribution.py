"""DEPN-style privacy-neuron attribution and deactivation, and the cross-lingual split.

Neurons are MLP intermediate units (the input of each decoder layer's down projection). The
attribution of a unit is integrated gradients from a zero baseline of the probability of the
leaked value's tokens (DEPN Eq. 5, m steps), one layer at a time with the others unpatched. Each
text votes for the units above `threshold_ratio` of its own maximum; the top-k by votes are the
privacy neurons. Deactivation zeroes their down-projection columns, which equals zeroing the
activation at every position, permanently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from gatelang.models.hooks import replace_inputs
from gatelang.models.prefix import (
    DecoderStack,
    FrozenPrefix,
    FrozenWindow,
    frozen_prefix,
    frozen_windows,
    read_positions,
)
from gatelang.passes.tensors import (
    IGNORE,
    TokenBatch,
    forward_logits,
    freeze,
    probability_at,
    restore_grad,
    target_probability,
)

Unit = tuple[int, int]  # (layer index, intermediate unit index)


# Bytes of activations kept for the backward per row, column and decoder layer, in units of
# (hidden size, MLP width) elements: the layer's residual adds, norms, attention projections
# and MLP products. An estimate that sizes the step batches, not an accounting.
_SAVED_PER_HIDDEN = 12
_SAVED_PER_UNIT = 4
STEP_BATCH_BYTES = 1 << 30


def steps_per_batch(window: FrozenWindow, steps: int, vocab: int, width: int,
                    budget: int = STEP_BATCH_BYTES) -> int:
    """How many integrated-gradients steps run as one batch of copies of the window: as many
    as keep the autograd graph (activations of every layer from the window's start, and the
    logits and softmax at the read positions) within `budget` bytes, at least one."""
    rows, cols = window.rows, window.end - window.begin
    hidden = int(window.hidden.shape[-1])
    size = window.hidden.element_size()
    layers = len(window.stack.layers) - window.start
    per_copy = rows * cols * layers * (_SAVED_PER_HIDDEN * hidden + _SAVED_PER_UNIT * width) * size
    per_copy += rows * cols * vocab * 4 * 3  # fp32 logits, softmax and its gradient
    return max(1, min(steps, budget // max(1, per_copy)))


def answer_window(labels: torch.Tensor) -> tuple[int, int]:
    """The columns integrated gradients change and read: from the first position that
    predicts a target token in any row to the last one (inclusive), as (begin, end)."""
    predict = (labels[:, 1:] != IGNORE).any(0)
    cols = torch.nonzero(predict).flatten()
    if cols.numel() == 0:
        raise ValueError("the batch has no target tokens to attribute")
    return int(cols.min()), int(cols.max()) + 1


def integrated_gradients(
    model: nn.Module,
    down_proj: nn.Module,
    batch: TokenBatch,
    *,
    steps: int = 20,
    prefix: FrozenPrefix | FrozenWindow | None = None,
    step_batch: int = 1,
) -> torch.Tensor:
    """Attribution [B, I] of each row's target probability to the down projection's inputs.

    `prefix` is the batch's frozen prefix below the down projection's decoder layer
    (`models.prefix`): the layers under it do not depend on alpha, so they run once for all
    steps, and the softmax is taken only at the positions that predict target tokens. A
    `FrozenWindow` (`answer_window`'s columns) also keeps the prompt's keys and values, which
    alpha does not change either, and runs `step_batch` steps at once as copies of the window.

    The activations at the positions that predict target tokens are scaled by alpha = k/steps
    (k = 1..steps); attribution = activation * mean gradient, summed over those positions.
    DEPN masks one secret token at a time in a masked LM; in a causal LM every target token has its
    own predicting position, so one path scales all of them together (see docs/methods.md).
    """
    labels = batch.labels
    predict = torch.zeros_like(labels, dtype=torch.bool)
    predict[:, :-1] = labels[:, 1:] != IGNORE
    if isinstance(prefix, FrozenWindow):
        return _windowed_ig(model, down_proj, prefix, labels, predict, steps=steps,
                            step_batch=max(1, step_batch))
    state: dict[str, torch.Tensor] = {}

    def scale(x: torch.Tensor) -> torch.Tensor:
        base = x.detach()
        state["base"] = base
        leaf = (state["alpha"] * base).requires_grad_(True)
        state["leaf"] = leaf
        mask = predict.to(x.device).unsqueeze(-1)
        return torch.where(mask, leaf, x)

    flags = freeze(model)
    total: torch.Tensor | None = None
    base: torch.Tensor | None = None
    positions, targets = read_positions(labels) if prefix is not None else (None, None)
    try:
        with replace_inputs(down_proj, scale):
            for k in range(1, steps + 1):
                state["alpha"] = torch.tensor(k / steps)
                if prefix is None:
                    prob = target_probability(forward_logits(model, batch), labels).sum()
                else:
                    prob = probability_at(prefix.logits(positions), targets).sum()
                (grad,) = torch.autograd.grad(prob, state["leaf"])
                total = grad if total is None else total + grad
                base = state["base"]
    finally:
        restore_grad(model, flags)
    assert total is not None and base is not None
    mask = predict.to(base.device).unsqueeze(-1).to(base.dtype)
    return (base * total / steps * mask).sum(1).float()


def _windowed_ig(model: nn.Module, down_proj: nn.Module, window: FrozenWindow, labels: torch.Tensor,
                 predict: torch.Tensor, *, steps: int, step_batch: int) -> torch.Tensor:
    """`integrated_gradients` over the window's columns, `step_batch` alphas per forward:
    copy s of the batch carries alpha k_s/steps, and the copies' gradients add up to the
    sum over steps of the one-step-at-a-time loop."""
    rows = window.rows
    positions, targets = read_positions(labels)
    mask = predict[:, window.begin:window.end]
    state: dict[str, torch.Tensor] = {}

    def scale(x: torch.Tensor) -> torch.Tensor:
        copies = x.shape[0] // rows
        base = x.detach()
        state["base"] = base[:rows]
        leaf = (state["alpha"].to(x.device, x.dtype).view(-1, 1, 1) * base).requires_grad_(True)
        state["leaf"] = leaf
        m = mask.to(x.device).repeat(copies, 1).unsqueeze(-1)
        return torch.where(m, leaf, x)

    flags = freeze(model)
    total: torch.Tensor | None = None
    try:
        with replace_inputs(down_proj, scale):
            for first in range(1, steps + 1, step_batch):
                ks = list(range(first, min(steps, first + step_batch - 1) + 1))
                state["alpha"] = torch.tensor([k / steps for k in ks]).repeat_interleave(rows)
                logits = window.logits(positions, repeat=len(ks))
                prob = probability_at(logits, targets.repeat(len(ks), 1)).sum()
                (grad,) = torch.autograd.grad(prob, state["leaf"])
                grad = grad.view(len(ks), rows, *grad.shape[1:]).sum(0)
                total = grad if total is None else total + grad
    finally:
        restore_grad(model, flags)
    assert total is not None
    base = state["base"]
    keep = mask.to(base.device).unsqueeze(-1).to(base.dtype)
    return (base * total / steps * keep).sum(1).float()


@dataclass
class Attribution:
    """Per-row attribution over every unit of the chosen layers: scores[row] -> [L, I]."""

    layers: list[int]
    scores: torch.Tensor  # [B, L, I]


def attribute(
    model: nn.Module,
    down_projs: dict[int, nn.Module],
    batches: Sequence[TokenBatch],
    *,
    steps: int = 20,
    progress: Callable[[], None] | None = None,
    stack: DecoderStack | None = None,
) -> Attribution:
    """Integrated gradients of every batch at every layer of `down_projs` (keyed by decoder
    layer index). With `stack`, one forward per batch records every layer's input and the
    prompt's keys and values (`models.prefix.frozen_windows`), and each layer's steps run only
    the answer window from that layer up, several steps per batch; models whose layers cannot
    be cut to a window run each layer from its frozen prefix instead."""
    layers = sorted(down_projs)
    rows: list[torch.Tensor] = []
    for batch in batches:
        per_layer = []
        windows = None
        if stack is not None:
            begin, end = answer_window(batch.labels)
            windows = frozen_windows(model, stack, batch.inputs, layers, begin, end)
        for layer in layers:
            prefix: FrozenPrefix | FrozenWindow | None = None
            step_batch = 1
            if windows is not None:
                prefix = windows[layer]
                step_batch = steps_per_batch(prefix, steps, _vocab(stack),
                                             _width(down_projs[layer]))
            elif stack is not None:
                prefix = frozen_prefix(model, stack, batch.inputs, layer)
            per_layer.append(integrated_gradients(model, down_projs[layer], batch, steps=steps,
                                                  prefix=prefix, step_batch=step_batch))
            if progress is not None:
                progress()
        rows.append(torch.stack(per_layer, dim=1).cpu())
    return Attribution(layers=layers, scores=torch.cat(rows, dim=0))


def _vocab(stack: DecoderStack) -> int:
    weight = getattr(stack.head, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else 1


def _width(down_proj: nn.Module) -> int:
    weight = getattr(down_proj, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return 1
    return int(weight.shape[1] if isinstance(down_proj, nn.Linear) else weight.shape[0])


def vote(att: Attribution, *, threshold_ratio: float, top_k: int) -> list[Unit]:
    """Each row votes for units >= threshold_ratio * its max; keep the top_k by votes.

    Ties are broken by total attribution, then by position, so the choice is deterministic.
    """
    scores = att.scores
    if scores.numel() == 0:
        return []
    peak = scores.flatten(1).max(dim=1).values.clamp(min=1e-12)
    votes = (scores >= threshold_ratio * peak.view(-1, 1, 1)).sum(0)
    mass = scores.clamp(min=0).sum(0)
    cand = [
        (int(votes[li, u]), float(mass[li, u]), int(att.layers[li]), u)
        for li, u in torch.nonzero(votes > 0).tolist()
    ]
    cand.sort(key=lambda c: (-c[0], -c[1], c[2], c[3]))
    return sorted((layer, unit) for _v, _m, layer, unit in cand[:top_k])


@dataclass
class CrossLingual:
    per_language: dict[str, list[Unit]]
    universal: list[Unit] = field(default_factory=list)
    specific: dict[str, list[Unit]] = field(default_factory=dict)

    def union(self) -> list[Unit]:
        out: set[Unit] = set(self.universal)
        for units in self.specific.values():
            out.update(units)
        return sorted(out)


def split_cross_lingual(per_language: dict[str, list[Unit]], min_languages: int = 0) -> CrossLingual:
    """Universal = in at least `min_languages` languages' sets (0: all); specific = in exactly one."""
    langs = sorted(per_language)
    need = len(langs) if min_languages <= 0 else min(min_languages, len(langs))
    count: dict[Unit, int] = {}
    for lang in langs:
        for unit in set(per_language[lang]):
            count[unit] = count.get(unit, 0) + 1
    universal = sorted(u for u, c in count.items() if c >= need)
    specific = {
        lang: sorted(u for u in set(per_language[lang]) if count[u] == 1 and u not in universal)
        for lang in langs
    }
    return CrossLingual(per_language=per_language, universal=universal, specific=specific)


def deactivate(down_projs: dict[int, nn.Module], units: Sequence[Unit]) -> dict[int, list[int]]:
    """Zero the down-projection columns of `units` in place; returns columns per layer."""
    cols: dict[int, list[int]] = {}
    for layer, unit in units:
        cols.setdefault(layer, []).append(unit)
    with torch.no_grad():
        for layer, units_l in cols.items():
            weight = down_projs[layer].weight
            weight[:, torch.as_tensor(sorted(units_l), device=weight.device)] = 0
    return {k: sorted(v) for k, v in sorted(cols.items())}
