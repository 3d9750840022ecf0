"""`verify.quantized`: the protected questions after round-to-nearest weight quantization.

Quantizing a model for deployment is not an attack anyone has to mount, yet it restores
"forgotten" knowledge: an unlearned model quantized to 4 bits retains 83% of what it was made to
forget, against 21% at full precision (arXiv 2410.16454). An edit that moves the weights by less
than the quantization step is rounded away.

What is quantized: every 2-D weight of the Linear layers (GPT-2's Conv1D too) inside the
decoder's layers container (`adapter.layers_path`), i.e. the attention and MLP projections of
every decoder layer. Round to nearest, symmetric, one scale per output channel (a row of a
Linear's [out, in] weight, a column of a Conv1D's [in, out] one), plain torch; the dequantized
values are written in place for the measurement and restored afterwards (`ctx.edited_weights`).
Embeddings, norms, biases, `lm_head` and the vision tower and projector are left as they are.

`before` quantizes the unedited model; `after` quantizes the edited values (the edit's weights,
and the unedited values of the parameters it does not touch) and applies the edit's other
parameters unquantized. Each side is then asked the protected questions greedily; rows per
(question, bits) under split and variant `int8` / `int4` (`leakage(int4)`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from gatelang.measure import EvalItem, ItemResult
from gatelang.measure.verification import evaluate_items
from gatelang.models.adapter import resolve_path
from gatelang.passes.base import NodeSpec, PassContext, PassResult, register, weights_of
from gatelang.passes.verify.attack import AttackCheck, row


def is_projection(module: nn.Module) -> bool:
    """A Linear layer, or GPT-2's Conv1D (a Linear that stores its weight as [in, out])."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def decoder_projections(ctx: PassContext) -> list[tuple[str, nn.Module]]:
    """(module name, module) of every Linear/Conv1D in the decoder's layers, in model order."""
    base = resolve_path(ctx.model, ctx.loaded.adapter.layers_path)
    container = ctx.model.get_submodule(base)
    return [(f"{base}.{name}", mod) for name, mod in container.named_modules()
            if name and is_projection(mod)]


def quantized_weight_names(ctx: PassContext) -> list[str]:
    """Parameter names of the 2-D projection weights `verify.quantized` quantizes."""
    return [f"{name}.weight" for name, mod in decoder_projections(ctx)
            if getattr(mod, "weight", None) is not None and mod.weight.dim() == 2]


def output_axis(module: nn.Module) -> int:
    """The axis of `module.weight` that indexes output channels ([out, in] or Conv1D's [in, out])."""
    return 0 if isinstance(module, nn.Linear) else 1


def quantize(weight: torch.Tensor, bits: int, out_axis: int = 0) -> torch.Tensor:
    """Round-to-nearest symmetric quantization with one scale per output channel, dequantized.

    scale = max |w| over the channel / (2^(bits-1) - 1); q = clamp(round(w / scale)) in
    [-(2^(bits-1) - 1), 2^(bits-1) - 1]; the result is q * scale in the weight's dtype. An
    all-zero channel stays zero.
    """
    if weight.dim() != 2:
        raise ValueError(f"quantize expects a 2-D weight, got shape {tuple(weight.shape)}")
    if bits < 2:
        raise ValueError(f"quantize needs at least 2 bits, got {bits}")
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    in_axis = 1 - out_axis
    scale = w.abs().amax(dim=in_axis, keepdim=True) / qmax
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(w / safe), -qmax, qmax)
    return (q * scale).to(weight.dtype)


class QuantizedWeights(Mapping[str, torch.Tensor]):
    """The weights to write for one side: quantized projections (computed one at a time as
    `ctx.edited_weights` reads them, so a large model never holds two full copies at once)
    plus the edit's other parameters, unquantized."""

    def __init__(self, ctx: PassContext, bits: int, edit: Mapping[str, torch.Tensor]) -> None:
        self.ctx = ctx
        self.bits = bits
        self.edit = edit
        modules = dict(ctx.model.named_modules())
        self.axes = {name: output_axis(modules[name.rsplit(".", 1)[0]])
                     for name in quantized_weight_names(ctx)}
        self.names = list(self.axes) + [n for n in edit if n not in self.axes]

    def __getitem__(self, name: str) -> torch.Tensor:
        value = self.edit[name] if name in self.edit else self.ctx.base_value(name)
        if name not in self.axes:
            if name not in self.edit:
                raise KeyError(name)
            return value
        p = self.ctx.base_value(name)
        return quantize(value.to(p.device), self.bits, self.axes[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def quantized_leaks(ctx: PassContext, items: list[EvalItem], bits: int,
                    edit: Mapping[str, torch.Tensor] | None = None) -> list[ItemResult]:
    """Greedy judged answers with the decoder quantized to `bits` (of the edited values when
    `edit` is given); the model is restored on return."""
    weights: Any = QuantizedWeights(ctx, bits, edit or {})
    with ctx.edited_weights(weights):
        return evaluate_items(ctx.loaded, items, max_new_tokens=ctx.options.max_new_tokens)


@register
class VerifyQuantized(AttackCheck):
    op = "verify.quantized"
    check = "quantized"

    def attack(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
               items: list[EvalItem], known: dict[str, bool], cfg: dict[str, Any]
               ) -> list[dict[str, Any]]:
        edit = weights_of(inputs)
        rows: list[dict[str, Any]] = []
        for bits in cfg["quantize_bits"]:
            split = f"int{int(bits)}"
            before = quantized_leaks(ctx, items, int(bits))
            after = quantized_leaks(ctx, items, int(bits), edit)
            for item, b, a in zip(items, before, after, strict=True):
                rows.append(row(item, split, before=b, after=a, known=known[item.id],
                                variant=split))
        return rows
