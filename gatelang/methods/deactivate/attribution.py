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
from gatelang.models.prefix import DecoderStack, FrozenPrefix, frozen_prefix, read_positions
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


def integrated_gradients(
    model: nn.Module,
    down_proj: nn.Module,
    batch: TokenBatch,
    *,
    steps: int = 20,
    prefix: FrozenPrefix | None = None,
) -> torch.Tensor:
    """Attribution [B, I] of each row's target probability to the down projection's inputs.

    `prefix` is the batch's frozen prefix below the down projection's decoder layer
    (`models.prefix`): the layers under it do not depend on alpha, so they run once for all
    steps, and the softmax is taken only at the positions that predict target tokens.

    The activations at the positions that predict target tokens are scaled by alpha = k/steps
    (k = 1..steps); attribution = activation * mean gradient, summed over those positions.
    DEPN masks one secret token at a time in a masked LM; in a causal LM every target token has its
    own predicting position, so one path scales all of them together (see docs/methods.md).
    """
    labels = batch.labels
    predict = torch.zeros_like(labels, dtype=torch.bool)
    predict[:, :-1] = labels[:, 1:] != IGNORE
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
    layer index); with `stack`, each (batch, layer) runs the layers below once (see
    `integrated_gradients`)."""
    layers = sorted(down_projs)
    rows: list[torch.Tensor] = []
    for batch in batches:
        per_layer = []
        for layer in layers:
            prefix = None if stack is None else frozen_prefix(model, stack, batch.inputs, layer)
            per_layer.append(integrated_gradients(model, down_projs[layer], batch, steps=steps,
                                                  prefix=prefix))
            if progress is not None:
                progress()
        rows.append(torch.stack(per_layer, dim=1).cpu())
    return Attribution(layers=layers, scores=torch.cat(rows, dim=0))


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
