"""Tensor plumbing shared by the editing algorithms: batches, residual hooks, teacher-forced NLL.

The algorithms are written against a model and HF module paths (the adapter's site names), never
against an architecture, so the same code edits tiny-llava, LLaVA-1.5 or a text-only Llama.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from gatelang.models.hooks import replace_outputs

IGNORE = -100


@dataclass
class TokenBatch:
    """One padded batch ready for the model.

    `inputs` is what the model's forward takes (input_ids, attention_mask, pixel_values...), with
    image tokens already expanded; `subject_index[b]` is the position of the subject's last token
    in row b; `labels[b, t]` is the token the model should produce at position t (teacher forcing,
    aligned with input_ids) or IGNORE outside the target span.
    """

    inputs: dict[str, torch.Tensor]
    subject_index: torch.Tensor
    labels: torch.Tensor
    benign: torch.Tensor | None = None  # bool [B]: row is a benign pair (retain term), not a query

    def __post_init__(self) -> None:
        if self.benign is None:
            self.benign = torch.zeros(self.subject_index.shape[0], dtype=torch.bool)

    @property
    def size(self) -> int:
        return int(self.subject_index.shape[0])

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(
            inputs={k: v.to(device) if torch.is_tensor(v) else v for k, v in self.inputs.items()},
            subject_index=self.subject_index.to(device),
            labels=self.labels.to(device),
            benign=self.benign,
        )

    def select(self, rows: list[int] | torch.Tensor) -> TokenBatch:
        """Sub-batch of some rows (keeps padding; left padding makes that harmless)."""
        idx = torch.as_tensor(rows, dtype=torch.long)
        inputs = {}
        for k, v in self.inputs.items():
            if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == self.size:
                inputs[k] = v[idx.to(v.device)]
            else:
                inputs[k] = v
        return TokenBatch(inputs, self.subject_index[idx], self.labels[idx], self.benign[idx])


@contextmanager
def edit_subject_states(
    module: nn.Module,
    subject_index: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
) -> Iterator[None]:
    """Replace the module's output at each row's subject token by `fn(states)` ([B, D] -> [B, D]).

    Out-of-place (index_put), so autograd sees the replacement: gradients at the subject token
    reach earlier weights only through what `fn` lets through. The hook is installed by
    `gatelang.models.hooks.replace_outputs`, so it is removed even if the block raises.
    """

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        cols = subject_index.to(hidden.device)
        new = fn(hidden[rows, cols])
        return hidden.index_put((rows, cols), new.to(hidden.dtype))

    with replace_outputs(module, edit):
        yield


def forward_logits(model: nn.Module, batch: TokenBatch) -> torch.Tensor:
    out = model(**batch.inputs, use_cache=False)
    return out.logits if hasattr(out, "logits") else out[0]


def per_row_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token NLL of each row's target span ([B]); rows without targets give 0."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    mask = shift_labels != IGNORE
    safe = shift_labels.clamp(min=0)
    logp = torch.log_softmax(shift_logits, dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    nll = -(logp * mask).sum(-1)
    return nll / mask.sum(-1).clamp(min=1)


def nll_at(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`per_row_nll` from logits at the read positions only (`models.prefix.read_positions`):
    `logits` [B, K, V] and the targets there [B, K] (IGNORE where a row has none)."""
    logits = logits.float()
    targets = targets.to(logits.device)
    mask = targets != IGNORE
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1))
    nll = -(logp.squeeze(-1) * mask).sum(-1)
    return nll / mask.sum(-1).clamp(min=1)


def probability_at(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`target_probability` from logits at the read positions only (see `nll_at`)."""
    logits = logits.float()
    targets = targets.to(logits.device)
    mask = targets != IGNORE
    p = torch.softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1))
    return (p.squeeze(-1) * mask).sum(-1)


def target_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row sum over target tokens of the softmax probability of the right token ([B]).

    DEPN attributes the probability (not log-probability) of each secret token; summing over the
    tokens is its Eq. 5 with the per-token attributions added up.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    mask = shift_labels != IGNORE
    p = torch.softmax(shift_logits, dim=-1).gather(-1, shift_labels.clamp(min=0).unsqueeze(-1))
    return (p.squeeze(-1) * mask).sum(-1)


def freeze(model: nn.Module) -> dict[str, bool]:
    """Freeze every parameter; returns the previous flags so `restore_grad` can undo it."""
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    return flags


def restore_grad(model: nn.Module, flags: dict[str, bool]) -> None:
    for n, p in model.named_parameters():
        p.requires_grad_(flags.get(n, False))
