"""Frozen-prefix caching (`gatelang.models.prefix`) gives the full-forward results: integrated
gradients, feature vectors, unit saliency and the gated fine-tune's patch agree within 1e-4
relative with the uncached code on the shipped tiny-llava, for text and image batches; so do
the windows that also cache the prompt's keys and values, one step or several at a time."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gatelang.methods.deactivate import attribution as depn
from gatelang.methods.neural_gate import algorithm as ng
from gatelang.models import load_model
from gatelang.models.prefix import (
    _window_call,
    decoder_stack,
    frozen_prefix,
    frozen_windows,
    read_positions,
)
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


@pytest.mark.parametrize("modality", ["text", "image"])
def test_window_logits_equal_the_full_forward(ctx: PassContext, modality: str) -> None:
    """The answer window from each layer up, the prompt's keys and values cached, gives the
    full forward's logits at the read positions, once and as repeated copies."""
    qs = _queries(ctx, [modality])
    batch = encode(ctx, [as_item(q) for q in qs], [q.answer for q in qs], [False] * len(qs))
    stack = decoder_stack(ctx.loaded.adapter)
    assert stack is not None
    begin, end = depn.answer_window(batch.labels)
    assert 0 < begin < end < batch.labels.shape[1]
    positions, _ = read_positions(batch.labels)
    starts = [0, 2, len(stack.layers) - 1]
    with torch.no_grad():
        full = forward_logits(ctx.model, batch)[:, positions]
        windows = frozen_windows(ctx.model, stack, batch.inputs, starts, begin, end)
        assert windows is not None
        for start in starts:
            _close(windows[start].logits(positions), full)
            copies = windows[start].logits(positions, repeat=3)
            for s in range(3):
                _close(copies[s * batch.size:(s + 1) * batch.size], full)
            own = frozen_prefix(ctx.model, stack, batch.inputs, start).window(begin, end)
            assert own is not None
            _close(own.logits(positions), full)


def test_integrated_gradients_step_batches_equal_one_step_at_a_time(ctx: PassContext) -> None:
    qs = _queries(ctx, ["text"])
    batch = encode(ctx, [as_item(q) for q in qs], [q.answer for q in qs], [False] * len(qs))
    adapter = ctx.loaded.adapter
    stack = decoder_stack(adapter)
    assert stack is not None
    down = adapter.module("down_proj(1)")
    begin, end = depn.answer_window(batch.labels)
    windows = frozen_windows(ctx.model, stack, batch.inputs, [1], begin, end)
    assert windows is not None
    plain = depn.integrated_gradients(ctx.model, down, batch, steps=5)
    for step_batch in (1, 2, 5):
        got = depn.integrated_gradients(ctx.model, down, batch, steps=5, prefix=windows[1],
                                        step_batch=step_batch)
        _close(got, plain)
    # The step batch shrinks with the budget and never drops below one step.
    assert depn.steps_per_batch(windows[1], 5, 1000, 448, budget=1) == 1
    assert depn.steps_per_batch(windows[1], 5, 1000, 448, budget=1 << 40) == 5


def test_feature_vector_runs_on_the_subject_window(ctx: PassContext) -> None:
    adapter = ctx.loaded.adapter
    stack = decoder_stack(adapter)
    assert stack is not None
    examples = build_examples(ctx, _queries(ctx, ["text", "image"]), other_subjects=1)
    batch = mask_batch(ctx, examples[0])
    window = ng.subject_window(frozen_prefix(ctx.model, stack, batch.inputs, 2), batch)
    assert window is not None
    assert window.begin == int(batch.subject_index.min()) > 0


def test_window_refuses_calls_it_cannot_cut() -> None:
    hidden = torch.zeros(2, 5, 4)
    ok = ((), {"attention_mask": torch.ones(2, 1, 5, 5, dtype=torch.bool), "cache": None,
               "position_embeddings": (torch.zeros(2, 5, 4), torch.zeros(2, 5, 4))})
    cut = _window_call(hidden, ok, 2, 4)
    assert cut is not None and cut[0] == "cache"
    assert cut[1][1]["attention_mask"].shape == (2, 1, 2, 4)
    assert _window_call(hidden, ((), {**ok[1], "attention_mask": torch.ones(2, 5)}), 2, 4) is None
    assert _window_call(hidden, ((), {"attention_mask": ok[1]["attention_mask"]}), 2, 4) is None
    mrope = (torch.zeros(3, 2, 5, 4), torch.zeros(3, 2, 5, 4))
    assert _window_call(hidden, ((), {**ok[1], "position_embeddings": mrope}), 2, 4) is None
