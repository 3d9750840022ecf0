"""Neural Gate (Cao et al.): feature vector, gate and gated down-projection fine-tune.

Faithful to the published code (see docs/methods.md): the "neurons" are the residual-stream
dimensions of one decoder layer's output at the subject's last token; a multiplicative feature
vector tanh(m) is learned there so that the model refuses sensitive prompts while keeping its own
answers to paired benign prompts; dims that the optimiser sign-flips in more than a threshold
share of samples form the gate; then only that layer's `mlp.down_proj.weight` is fine-tuned, with
the gradient at the subject token passing only through the gated dims.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gatelang.models.hooks import capture_inputs
from gatelang.models.prefix import (
    DecoderStack,
    FrozenPrefix,
    FrozenWindow,
    PrefixCache,
    frozen_prefix,
    read_positions,
)
from gatelang.passes.tensors import (
    TokenBatch,
    edit_subject_states,
    forward_logits,
    freeze,
    nll_at,
    per_row_nll,
    restore_grad,
)


def batch_nll(model: nn.Module, batch: TokenBatch,
              prefix: FrozenPrefix | FrozenWindow | None) -> torch.Tensor:
    """Per-row target NLL: a full forward, or from the frozen prefix (or window) with logits
    only at the positions the loss reads."""
    if prefix is None:
        return per_row_nll(forward_logits(model, batch), batch.labels)
    positions, targets = read_positions(batch.labels)
    return nll_at(prefix.logits(positions), targets)


def objective(per_row: torch.Tensor, benign: torch.Tensor, retain_weight: float) -> torch.Tensor:
    """NLL(refusal | sensitive), averaged over sensitive rows, + retain_weight * NLL(benign answer)."""
    benign = benign.to(per_row.device)
    loss = per_row.new_zeros(())
    if (~benign).any():
        loss = loss + per_row[~benign].mean()
    if benign.any():
        loss = loss + retain_weight * per_row[benign].mean()
    return loss


@dataclass
class FeatureVector:
    m: torch.Tensor  # [D] raw parameter; the scaling is tanh(m)
    loss: float
    steps: int

    def mask(self, privacy_value: float = 0.0) -> torch.Tensor:
        """Dims this sample selects: those whose scaling went below privacy_value (sign flips)."""
        return torch.tanh(self.m) < privacy_value


def subject_window(prefix: FrozenPrefix, batch: TokenBatch) -> FrozenWindow | None:
    """The columns a feature vector changes or reads, from the first subject token to the last
    read position: the feature vector scales the layer's output at the subject token, so in a
    causal decoder the columns before the earliest one are the same at every step."""
    positions, _ = read_positions(batch.labels)
    subjects = batch.subject_index
    if positions.numel() == 0 or subjects.numel() == 0:
        return None
    begin = int(subjects.min())
    end = max(int(positions.max()), int(subjects.max())) + 1
    if int(positions.min()) < begin:
        begin = int(positions.min())
    return prefix.window(begin, end)


def learn_feature_vector(
    model: nn.Module,
    layer: nn.Module,
    batch: TokenBatch,
    *,
    hidden_size: int,
    steps: int = 25,
    lr: float = 0.5,
    l1: float = 0.001,
    retain_weight: float = 1.25,
    init: float = 2.0,
    early_stop: float = 0.05,
    stack: DecoderStack | None = None,
) -> FeatureVector:
    """Optimise m (init 2, tanh(2)≈0.96) with the model frozen; Adam(lr, eps 1e-3).

    With `stack` (`models.prefix.decoder_stack`) the layers below `layer` run once for the
    batch instead of at every step: nothing below the feature vector changes while it learns.
    Where the model allows (`models.prefix.FrozenWindow`), the columns before the first
    subject token also run once, from `layer` up, and each step runs only the rest.
    """
    device = next(model.parameters()).device
    flags = freeze(model)
    try:
        prefix: FrozenPrefix | FrozenWindow | None = None
        subject_index = batch.subject_index
        if stack is not None:
            prefix = frozen_prefix(model, stack, batch.inputs, stack.index(layer))
            window = subject_window(prefix, batch)
            if window is not None:
                prefix, subject_index = window, subject_index - window.begin
        m = torch.full((hidden_size,), float(init), device=device, requires_grad=True)
        opt = torch.optim.Adam([m], lr=lr, eps=1e-3)
        loss_val = float("inf")
        done = 0
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            with edit_subject_states(layer, subject_index, lambda h: h * torch.tanh(m)):
                per_row = batch_nll(model, batch, prefix)
            loss = objective(per_row, batch.benign, retain_weight)
            loss = loss + l1 * (m - init).abs().mean()
            loss_val = float(loss.detach())
            done = step + 1
            if loss_val < early_stop:
                break
            loss.backward()
            opt.step()
        return FeatureVector(m=m.detach().clone(), loss=loss_val, steps=done)
    finally:
        restore_grad(model, flags)


def build_gate(
    masks: torch.Tensor, threshold: float = 0.3, sparsity: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gate = dims selected in more than `threshold` of samples, capped at `sparsity` of dims.

    Returns (gate bool [D], share float [D]). The cap keeps the dims with the highest share
    (ties by lower index, so the result is deterministic).
    """
    if masks.dim() != 2 or masks.shape[0] == 0:
        raise ValueError("build_gate needs a non-empty [samples, dims] mask matrix")
    share = masks.float().mean(0)
    gate = share > threshold
    cap = int(sparsity * share.numel() + 1e-9)
    if int(gate.sum()) > cap:
        order = sorted(range(share.numel()), key=lambda j: (-float(share[j]), j))
        keep = torch.zeros_like(gate)
        for j in order[:cap]:
            if gate[j]:
                keep[j] = True
        gate = keep
    return gate, share


def gated_loss(model: nn.Module, layer: nn.Module, pair: TokenBatch, gate: torch.Tensor | None,
               retain_weight: float, prefix: FrozenPrefix | None = None) -> torch.Tensor:
    """The edit objective on one batch, with the subject token's gradient through the gate.

    h[b, s_b] = where(gate, h, h.detach()) at the layer's output: the value is unchanged, but
    only gated dims pass gradient back from the subject token (every other token keeps its full
    gradient). `gate` None is the ungated fine-tune. `prefix` is the pair's frozen prefix
    below `layer` (`models.prefix`), when the caller keeps one.
    """
    if gate is None:
        per_row = batch_nll(model, pair, prefix)
    else:
        g = gate.to(next(layer.parameters()).device)
        with edit_subject_states(layer, pair.subject_index,
                                 lambda h, g=g: torch.where(g, h, h.detach())):
            per_row = batch_nll(model, pair, prefix)
    return objective(per_row, pair.benign, retain_weight)


def gated_finetune(
    model: nn.Module,
    layer: nn.Module,
    weight: nn.Parameter,
    pairs: Sequence[TokenBatch],
    gate: torch.Tensor | None,
    *,
    steps: int = 10,
    lr: float = 1e-5,
    retain_weight: float = 1.25,
    epochs: int = 1,
    early_stop: float = 1e-3,
    row_mask: torch.Tensor | None = None,
    col_mask: torch.Tensor | None = None,
    reset_optimizer: bool = True,
    extra: Sequence[tuple[nn.Parameter, torch.Tensor]] = (),
    on_pair: Callable[[int, float], None] | None = None,
    stack: DecoderStack | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Fine-tune `weight` (the layer's down_proj) on (sensitive, benign) pairs; returns its delta.

    `gate` None is the unmasked fine-tune baseline. With a gate, a hook on the layer output sets
    h[b, s_b] = where(gate, h, h.detach()), so the subject token's gradient reaches the weight only
    through gated dims while every other token keeps its full gradient (the paper's net update
    (M ⊙ ∇^S L + ∇^{¬S} L)). `row_mask` (bool [out_features]) optionally confines the update to
    those output rows, which makes the patch as sparse as the gate; `col_mask` (bool
    [in_features]) confines it to those MLP units. `extra` adds parameters trained alongside,
    each with a same-shaped 0/1 mask (the selected units' input weights, so a few units can be
    retrained in full). Adam(lr, eps 1e-3) is re-created for every pair, as in the published
    code; `weight` is left edited, and so are the `extra` parameters.

    With `stack`, each pair's activations below `layer` are computed once (and kept across
    epochs while they fit, `models.prefix.PrefixCache`): every trained parameter lives in
    `layer`, so nothing below it changes during the fine-tune.
    """
    original = weight.detach().clone()
    flags = freeze(model)
    losses: list[float] = []
    weight.requires_grad_(True)
    handles = []
    if row_mask is not None or col_mask is not None:
        keep = torch.ones_like(weight)
        if row_mask is not None:
            keep = keep * row_mask.to(weight.device, weight.dtype).unsqueeze(1)
        if col_mask is not None:
            keep = keep * col_mask.to(weight.device, weight.dtype).unsqueeze(0)
        handles.append(weight.register_hook(lambda g: g * keep))
    params = [weight]
    for param, mask in extra:
        param.requires_grad_(True)
        m = mask.to(param.device, param.dtype)
        handles.append(param.register_hook(lambda g, m=m: g * m))
        params.append(param)
    cache = None if stack is None else PrefixCache(model, stack, stack.index(layer))
    try:
        k = 0
        opt = torch.optim.Adam(params, lr=lr, eps=1e-3, weight_decay=0.0)
        for _ in range(epochs):
            for n, pair in enumerate(pairs):
                if reset_optimizer:
                    opt = torch.optim.Adam(params, lr=lr, eps=1e-3, weight_decay=0.0)
                prefix = None if cache is None else cache.get(n, pair.inputs)
                last = float("nan")
                for _step in range(steps):
                    opt.zero_grad(set_to_none=True)
                    loss = gated_loss(model, layer, pair, gate, retain_weight, prefix)
                    last = float(loss.detach())
                    if last < early_stop:
                        break
                    loss.backward()
                    opt.step()
                losses.append(last)
                if on_pair is not None:
                    on_pair(k, last)
                k += 1
    finally:
        for h in handles:
            h.remove()
        restore_grad(model, flags)
    return (weight.detach() - original), losses


def select_units(
    model: nn.Module,
    layer: nn.Module,
    weight: nn.Parameter,
    pairs: Sequence[TokenBatch],
    gate: torch.Tensor | None,
    k: int,
    *,
    retain_weight: float = 1.25,
    units_axis: int = 1,
    stack: DecoderStack | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k MLP units (down-projection columns) most salient for the edit objective.

    `units_axis` is the weight's axis that indexes units: 1 for `nn.Linear` ([hidden, units]),
    0 for GPT-2's Conv1D ([units, hidden]).

    Saliency of a column = |sum over pairs of the gated gradient| summed over its rows, at the
    unedited weights (SalUn-style). Returns (bool mask [in_features], saliency [in_features]);
    ties go to the lower index so the choice is deterministic.
    """
    flags = freeze(model)
    weight.requires_grad_(True)
    total = torch.zeros_like(weight)
    try:
        for pair in pairs:
            if weight.grad is not None:
                weight.grad = None
            prefix = None if stack is None else frozen_prefix(model, stack, pair.inputs,
                                                              stack.index(layer))
            loss = gated_loss(model, layer, pair, gate, retain_weight, prefix)
            (grad,) = torch.autograd.grad(loss, weight)
            total += grad.detach()
    finally:
        restore_grad(model, flags)
    saliency = total.abs().sum(1 - units_axis).float().cpu()
    k = max(0, min(k, saliency.numel()))
    order = sorted(range(saliency.numel()), key=lambda j: (-float(saliency[j]), j))
    mask = torch.zeros(saliency.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask, saliency


def quiet_units(model: nn.Module, down_proj: nn.Module, pairs: Sequence[TokenBatch], k: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k MLP units least active on the edit set's prompts (sensitive and retain rows).

    A unit that rarely fires carries little of what the model already does, so rewriting it in
    full (`unit_inputs`) costs the least elsewhere; the salient units of `select_units` are the
    ones that recall the protected people's other facts too. Activity = mean |input of the down
    projection| over real (non-padding) tokens. Returns (bool mask [units], activity [units]).
    """
    total: torch.Tensor | None = None
    count = 0

    def activity_sum(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
        act = x.float().abs()
        keep = mask.to(act.device, act.dtype).unsqueeze(-1)
        return (act * keep).sum(dim=(0, 1)), int(keep.sum())

    with torch.no_grad():
        for pair in pairs:
            mask = pair.inputs["attention_mask"]
            with capture_inputs(down_proj, reduce=lambda x, m=mask: activity_sum(x, m)) as seen:
                forward_logits(model, pair)
            for s, n in seen:
                total = s if total is None else total + s
                count += n
    if total is None:
        raise ValueError("quiet_units needs at least one batch")
    activity = (total / max(1, count)).cpu()
    k = max(0, min(k, activity.numel()))
    order = sorted(range(activity.numel()), key=lambda j: (float(activity[j]), j))
    mask = torch.zeros(activity.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask, activity
