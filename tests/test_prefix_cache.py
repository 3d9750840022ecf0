"""Frozen-prefix caching (`gatelang.models.prefix`) gives the full-forward results: integrated
gradients, feature vectors, unit saliency and the gated fine-tune's patch agree within 1e-4
relative with the uncached code on the shipped tiny-llava, for text and image batches."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gatelang.methods.deactivate import attribution as depn
from gatelang.methods.neural_gate import algorithm as ng
from gatelang.models import load_model
from gatelang.models.prefix import decoder_stack, frozen_prefix, read_positions
from gatelang.passes.base import PassContext
from gatelang.passes.edit_set import as_item, build_examples, encode, mask_batch, pairs_batch
from gatelang.passes.tensors import forward_logits, nll_at, per_row_nll

TOL = 1e-4


@pytest.fixture(scope="module")
def ctx() -> PassContext:
    torch.set_num_threads(1)
    return PassContext(loaded=load_model("tiny-llava", device="cpu"))


def _queries(ctx: PassContext, modalities: list[str]) -> list[Any]:
    qs = ctx.world.queries(subjects=["alice-okafor", "chen-moreau"],
                           attributes=["home_address", "phone_number"], languages=["en", "zh"],
                           modalities=modalities, splits=["edit"])
    return qs[::max(1, len(qs) // 4)][:4]


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(b.abs().max())
    assert scale > 0
    assert float((a - b).abs().max()) <= TOL * scale


@pytest.mark.parametrize("modality", ["text", "image"])
def test_prefix_logits_equal_the_full_forward(ctx: PassContext, modality: str) -> None:
    qs = _queries(ctx, [modality])
    batch = encode(ctx, [as_item(q) for q in qs], [q.answer for q in qs], [False] * len(qs))
    stack = decoder_stack(ctx.loaded.adapter)
    assert stack is not None
    with torch.no_grad():
        full = forward_logits(ctx.model, batch)
        for start in (0, 2, len(stack.layers) - 1):
            prefix = frozen_prefix(ctx.model, stack, batch.inputs, start)
            _close(prefix.logits(), full)
            positions, targets = read_positions(batch.labels)
            _close(nll_at(prefix.logits(positions), targets), per_row_nll(full, batch.labels))


def test_integrated_gradients_equal_uncached(ctx: PassContext) -> None:
    qs = _queries(ctx, ["text", "image"])
    batch = encode(ctx, [as_item(q) for q in qs], [q.answer for q in qs], [False] * len(qs))
    adapter = ctx.loaded.adapter
    down = {i: adapter.module(f"down_proj({i})") for i in (0, 2, 3)}
    plain = depn.attribute(ctx.model, down, [batch], steps=4)
    cached = depn.attribute(ctx.model, down, [batch], steps=4, stack=decoder_stack(adapter))
    _close(cached.scores, plain.scores)
    assert depn.vote(cached, threshold_ratio=0.1, top_k=20) == depn.vote(
        plain, threshold_ratio=0.1, top_k=20)


def test_feature_vector_and_patch_equal_uncached(ctx: PassContext) -> None:
    adapter = ctx.loaded.adapter
    stack = decoder_stack(adapter)
    examples = build_examples(ctx, _queries(ctx, ["text", "image"]), other_subjects=1)
    layer = adapter.module("decoder_layer(2)")
    fv = {}
    for key, s in (("plain", None), ("cached", stack)):
        fv[key] = ng.learn_feature_vector(ctx.model, layer, mask_batch(ctx, examples[0]),
                                          hidden_size=adapter.hidden_size, steps=4, stack=s)
    _close(fv["cached"].m, fv["plain"].m)

    pairs = [pairs_batch(ctx, examples[k:k + 2]) for k in range(0, len(examples), 2)]
    weight = adapter.module("down_proj(2)").weight
    gate = torch.zeros(adapter.hidden_size, dtype=torch.bool)
    gate[::3] = True
    sal = {}
    for key, s in (("plain", None), ("cached", stack)):
        _mask, sal[key] = ng.select_units(ctx.model, layer, weight, pairs, gate, 8, stack=s)
    _close(sal["cached"], sal["plain"])

    start = weight.detach().clone()
    delta = {}
    for key, s in (("plain", None), ("cached", stack)):
        try:
            delta[key], _ = ng.gated_finetune(ctx.model, layer, weight, pairs, gate, steps=3,
                                              lr=1e-3, epochs=2, reset_optimizer=False, stack=s)
        finally:
            with torch.no_grad():
                weight.copy_(start)
    assert float(delta["plain"].abs().max()) > 0
    _close(delta["cached"], delta["plain"])
