"""The refusal_patch method on a randomly initialised tiny LLaVA: the pass runs, rewrites only its
budgeted units, leaves the model as it found it, trains on cached states exactly, and its
selection split never overlaps the training split."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from gatelang.methods import get_method
from gatelang.methods.refusal_patch.config import unit_count
from gatelang.methods.refusal_patch.data import (
    Row,
    build_rows,
    selection_split,
    shared_prefix,
    template_key,
    value_prefix,
)
from gatelang.models import load_model
from gatelang.models.tiny import build_tiny_checkpoint
from gatelang.passes.base import PassContext
from gatelang.runtime.executor import Executor
from gatelang.world import load_world

SUBJECTS = ["Alice Okafor", "Chen Moreau"]
ATTRIBUTES = ["home_address", "phone_number"]
# Small enough for a random model in a few seconds; every term of the objective still runs.
FAST = {"search": "off", "steps": 4, "tamper_copies": 1, "tamper_steps": 2, "retain_other_subjects": 1,
        "retain_same_subject": 1, "retain_utility": 2, "prefixes": 1, "minibatch": 64}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llava-random")
    build_tiny_checkpoint("llava", folder, seed=0)
    return load_model(str(folder), device="cpu")


def _plan(params: dict) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node("d", id="d", op="data.queries", kind="data", params={
        "subjects": SUBJECTS, "attributes": ATTRIBUTES, "languages": ["en", "zh"],
        "modalities": ["text", "image"], "splits": ["edit"], "per_cell_limit": 2})
    g.add_node("edit", id="edit", op="edit.refusal_patch", kind="edit",
               params={"method": "refusal_patch", "params": params})
    g.add_edge("d", "edit", role="edit_set")
    return g


def _changed_units(base: torch.Tensor, new: torch.Tensor, axis: int) -> set[int]:
    diff = (base != new).any(dim=1 - axis)
    return {int(i) for i in torch.nonzero(diff).flatten()}


def test_pass_rewrites_only_budgeted_units_and_leaves_the_model_unchanged(loaded):
    adapter = loaded.adapter
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    run = Executor(PassContext(loaded=loaded, seed=0)).run(_plan(FAST))
    res = run.results["edit"]
    # the model is as it was: the edit travels as tensors
    for n, p in loaded.model.named_parameters():
        assert torch.equal(p, before[n]), n
    last = adapter.num_layers - 1
    down_name = adapter.site(f"down_proj({last})").path + ".weight"
    in_names = [name for name, _m in adapter.mlp_input_weights(last)]
    weights = {k.split(":", 1)[1]: v for k, v in res.tensors.items() if k.startswith("weight:")}
    assert set(weights) == {down_name, *in_names}
    cfg = get_method("refusal_patch").resolve(FAST)
    k = unit_count(cfg, len(SUBJECTS) * len(ATTRIBUTES),
                   adapter.num_layers * adapter.intermediate_size)
    units = set(res.data["units"])
    assert res.data["units_selected"] == len(units) == k
    down = adapter.module(f"down_proj({last})")
    assert _changed_units(before[down_name], weights[down_name],
                          adapter.units_axis(down, "down")) <= units
    for name, module in adapter.mlp_input_weights(last):
        assert _changed_units(before[name], weights[name],
                              adapter.units_axis(module, "input")) <= units
    assert res.data["rows"]["refuse"] > 0 and res.data["rows"]["retain"] > 0
    assert res.data["tamper_copies"] == 1


def test_cached_training_matches_the_patched_model(loaded):
    """Logits computed on the cached states equal the patched model's own logits."""
    from gatelang.methods.refusal_patch import algorithm as alg
    from gatelang.methods.refusal_patch.edit import loss_weights

    ctx = PassContext(loaded=loaded, seed=0)
    world = load_world(0)
    qs = world.queries(subjects=SUBJECTS[:1], attributes=ATTRIBUTES, languages=["en"],
                       modalities=["text", "image"], splits=["edit"])[:4]
    rows = build_rows(world, ctx.stdlib, qs, prefixes={"en": ("Sure thing:",)}, n_prefixes=1,
                      refusal_tokens=0, other_subjects=1, same_subject=1, utility=0,
                      reply_languages=[["en", "zh"]])
    layer = loaded.adapter.num_layers - 1
    cache = alg.cache_states(loaded, layer, rows)
    cfg = get_method("refusal_patch").resolve({"steps": 3})
    res = alg.train_patch(loaded, ctx.stdlib, layer, cache, 3, steps=3, lr=0.05,
                          weights=loss_weights(cfg), seed=0)
    new = alg.write_units(loaded.adapter, layer, res.units, res.part)
    orig = alg.sliced_mlp(alg.mlp_module(loaded.model, loaded.adapter, layer),
                          loaded.adapter, layer, res.units)
    with torch.no_grad():
        head = alg.Logits(loaded, res.part, alg._down_of(res.part, loaded.adapter, layer), cache,
                          orig(cache.x))
        cached = head.logits(slice(None))
    with ctx.edited_weights(new):
        patched = alg.cache_states(loaded, layer, rows)
    # the patched model's log-probabilities of the teacher-forced tokens, position by position
    lp_cached = torch.log_softmax(cached, -1).gather(-1, cache.token.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(lp_cached, patched.base_logp, atol=1e-3, rtol=1e-3)


def test_selection_split_never_overlaps_training():
    world = load_world(0)
    qs = world.queries(subjects=SUBJECTS, attributes=ATTRIBUTES, languages=["en", "zh"],
                       modalities=["text", "image"], splits=["edit"])
    train, select = selection_split(qs, 1 / 3, seed=0)
    assert train and select
    assert not {q.id for q in train} & {q.id for q in select}
    assert sorted(q.id for q in train + select) == sorted(q.id for q in qs)
    # whole templates move: no wording (text or image) is on both sides
    assert not {template_key(q) for q in train} & {template_key(q) for q in select}
    # 2 of the 6 templates of every attribute and language, every subject on both sides
    for a in ATTRIBUTES:
        for lang in ("en", "zh"):
            held = {template_key(q) for q in select if q.attribute == a and q.language == lang}
            assert len(held) == 2
    assert {q.subject_id for q in train} == {q.subject_id for q in select}
    assert selection_split(qs, 1 / 3, seed=0) == (train, select)
    again = selection_split(list(reversed(qs)), 1 / 3, seed=0)
    assert {q.id for q in again[1]} == {q.id for q in select}


def test_retain_rows_never_use_selection_templates():
    world = load_world(0)
    from gatelang.stdlib import load_stdlib

    qs = world.queries(subjects=SUBJECTS, attributes=ATTRIBUTES, languages=["en"],
                       modalities=["text"], splits=["edit"])
    train, select = selection_split(qs, 1 / 3, seed=0)
    rows = build_rows(world, load_stdlib(), train, prefixes={}, n_prefixes=0, refusal_tokens=0,
                      other_subjects=3, same_subject=2, utility=0, exclude=select)
    held = {template_key(q) for q in select}
    assert all(isinstance(r, Row) for r in rows)
    assert not [r for r in rows if template_key(r.item) in held]


def test_information_free_value_prefix():
    world = load_world(0)
    from gatelang.stdlib import load_stdlib

    phones = [s.attributes["phone_number"] for s in world.subjects]
    assert shared_prefix(phones, "digits") == "555-"
    assert shared_prefix([s.attributes["home_address"] for s in world.subjects]) == ""
    alice = world.subject("Alice Okafor")
    assert value_prefix(world, load_stdlib(), alice.attributes["phone_number"]) == "555-"
    assert value_prefix(world, load_stdlib(), alice.attributes["home_address"]) == ""
