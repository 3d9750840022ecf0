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

`before` quantizes the unedited model; `after` applies the edit first and quantizes the edited
values (an edited parameter outside the projections, e.g. a bias, stays as the edit wrote it).
Each side is then asked the protected questions greedily (the run's `max_new_tokens`, as for
`known`); rows per (question, bits) under split and variant `int8` / `int4` (`leakage(int4)`).
With no edit (an audit) the `after` side reuses `before`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from gatelang.measure import EvalItem, ItemResult
from gatelang.models.adapter import resolve_path
from gatelang.passes.base import NodeSpec, PassContext, PassResult, register
from gatelang.passes.verify.answers import judged_answers
from gatelang.passes.verify.attack import AttackCheck, before_after, row


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
    """The model's current projection weights, quantized: each is computed from the current
    value when `ctx.edited_weights` reads it (before that parameter is written), so inside an
    edit block the edited values are quantized, and a large model never holds a second full
    copy of its weights at once."""

    def __init__(self, ctx: PassContext, bits: int) -> None:
        self.bits = bits
        modules = dict(ctx.model.named_modules())
        params = dict(ctx.model.named_parameters())
        self.weights = {name: (params[name], output_axis(modules[name.rsplit(".", 1)[0]]))
                        for name in quantized_weight_names(ctx)}
        # Names this mapping in `PassContext.weight_state`: the quantized values are a function
        # of the weights under it (which the state key already covers) and of the bits.
        self.state_token = f"quantize:int{bits}:" + ",".join(self.weights)

    def __getitem__(self, name: str) -> torch.Tensor:
        p, axis = self.weights[name]
        return quantize(p.detach(), self.bits, axis)

    def __iter__(self) -> Iterator[str]:
        return iter(self.weights)

    def __len__(self) -> int:
        return len(self.weights)


def quantized_leaks(ctx: PassContext, items: list[EvalItem], bits: int) -> list[ItemResult]:
    """Greedy judged answers with the decoder's projections, as they are now (edited inside an
    edit block), quantized to `bits`; every weight is restored on return."""
    weights: Any = QuantizedWeights(ctx, bits)
    with ctx.edited_weights(weights):
        return judged_answers(ctx, items)


@register
class VerifyQuantized(AttackCheck):
    op = "verify.quantized"
    check = "quantized"

    def attack(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
               items: list[EvalItem], known: dict[str, bool], cfg: dict[str, Any]
               ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for bits in cfg["quantize_bits"]:
            split = f"int{int(bits)}"
            before, after = before_after(
                ctx, inputs, lambda b=int(bits): quantized_leaks(ctx, items, b))
            for item, b, a in zip(items, before, after, strict=True):
                rows.append(row(item, split, before=b, after=a, known=known[item.id],
                                variant=split))
        return rows
