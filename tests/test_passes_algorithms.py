"""The editing algorithms on a randomly initialised tiny Llama (no world, no adapters)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from gatelang.methods.deactivate import attribution as depn
from gatelang.methods.neural_gate.algorithm import (
    build_gate,
    gated_finetune,
    learn_feature_vector,
)
from gatelang.passes.tensors import IGNORE, TokenBatch, edit_subject_states, per_row_nll

H, INTER, LAYERS, V = 32, 48, 3, 50


@pytest.fixture
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=V, hidden_size=H, intermediate_size=INTER, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def make_batch(rows: int = 4, benign_rows: int = 1, seed: int = 1) -> TokenBatch:
    g = torch.Generator().manual_seed(seed)
    T = 10
    ids = torch.randint(3, V, (rows, T), generator=g)
    labels = torch.full((rows, T), IGNORE)
    labels[:, 7:] = ids[:, 7:]
    benign = torch.zeros(rows, dtype=torch.bool)
    benign[rows - benign_rows:] = True
    return TokenBatch(
        inputs={"input_ids": ids, "attention_mask": torch.ones_like(ids)},
        subject_index=torch.tensor([3] * rows),
        labels=labels,
        benign=benign,
    )


def test_subject_hook_changes_only_the_subject_token(model):
    batch = make_batch()
    layer = model.model.layers[1]
    with torch.no_grad(), edit_subject_states(layer, batch.subject_index, lambda x: x * 0):
        logits = model(**batch.inputs).logits
    with torch.no_grad():
        base = model(**batch.inputs).logits
    # positions before the subject token are untouched; from it on the output changes
    assert torch.allclose(logits[:, :3], base[:, :3])
    assert not torch.allclose(logits[:, 3:], base[:, 3:])


def test_feature_vector_lowers_the_objective_and_gate_respects_threshold(model):
    batch = make_batch()
    with torch.no_grad():
        before = per_row_nll(model(**batch.inputs).logits, batch.labels)[:3].mean()
    model.model.embed_tokens.weight.requires_grad_(False)  # mixed: only a real restore matches
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    fv = learn_feature_vector(model, model.model.layers[1], batch, hidden_size=H, steps=25)
    assert fv.steps >= 1 and fv.m.shape == (H,)
    with torch.no_grad(), edit_subject_states(
        model.model.layers[1], batch.subject_index, lambda x: x * torch.tanh(fv.m)
    ):
        after = per_row_nll(model(**batch.inputs).logits, batch.labels)[:3].mean()
    assert after < before
    # the model is frozen only while the vector is learned: every flag is back as it was
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    masks = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)
    gate, share = build_gate(masks, threshold=0.3)
    assert gate.tolist() == [True, True, False, False]
    assert share.tolist() == [0.75, 0.5, 0.0, 0.25]
    capped, _ = build_gate(masks, threshold=0.3, sparsity=0.25)
    assert capped.tolist() == [True, False, False, False]


def test_gated_finetune_changes_only_down_proj_and_gates_subject_gradient(model):
    batch = make_batch(rows=2, benign_rows=1)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    layer = model.model.layers[1]
    weight = layer.mlp.down_proj.weight
    gate = torch.zeros(H, dtype=torch.bool)
    gate[:5] = True
    delta, losses = gated_finetune(
        model, layer, weight, [batch], gate, steps=3, lr=1e-2, row_mask=gate
    )
    assert len(losses) == 1
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, params[n])}
    assert changed == {"model.layers.1.mlp.down_proj.weight"}
    rows = (delta != 0).any(1)
    assert rows[:5].all() and not rows[5:].any()

    # Gradient at the subject token alone (labels only depend on it through position 3, since
    # the only target is predicted from the subject position): flows only through gated dims.
    ids = batch.inputs["input_ids"][:1]
    lab = torch.full_like(ids, IGNORE)
    lab[0, 4] = ids[0, 4]
    one = TokenBatch({"input_ids": ids}, torch.tensor([3]), lab)
    weight.requires_grad_(True)
    captured = {}

    def keep_mlp_out(m, i, o):
        o.retain_grad()
        captured["o"] = o

    h = layer.mlp.register_forward_hook(keep_mlp_out)
    with edit_subject_states(layer, one.subject_index, lambda x: torch.where(gate, x, x.detach())):
        out = model(**one.inputs)
    per_row_nll(out.logits, one.labels).sum().backward()
    h.remove()
    g = captured["o"].grad[0, 3]
    assert g[5:].abs().max() == 0 and g[:5].abs().max() > 0
    weight.requires_grad_(False)


def test_finetune_without_gate_reduces_loss(model):
    batch = make_batch(rows=2, benign_rows=1)
    layer = model.model.layers[2]
    with torch.no_grad():
        before = per_row_nll(model(**batch.inputs).logits, batch.labels)[0]
    delta, _ = gated_finetune(model, layer, layer.mlp.down_proj.weight, [batch], None, steps=10, lr=5e-2)
    with torch.no_grad():
        after = per_row_nll(model(**batch.inputs).logits, batch.labels)[0]
    assert after < before
    assert (delta != 0).all(1).any()


def test_integrated_gradients_completeness_and_deactivation(model):
    batch = make_batch(rows=3, benign_rows=0)
    down = {i: model.model.layers[i].mlp.down_proj for i in range(LAYERS)}
    att = depn.attribute(model, down, [batch], steps=16)
    assert att.scores.shape == (3, LAYERS, INTER)
    # completeness: the attributions of one row and layer add up to P(full) - P(zeroed units)
    from gatelang.passes.tensors import target_probability

    one = batch.select([0])
    with torch.no_grad():
        full = target_probability(model(**one.inputs).logits, one.labels)
    predict = torch.zeros_like(one.labels, dtype=torch.bool)
    predict[:, :-1] = one.labels[:, 1:] != IGNORE
    hook = down[1].register_forward_pre_hook(
        lambda m, a: (a[0] * (~predict).unsqueeze(-1),)
    )
    with torch.no_grad():
        zero = target_probability(model(**one.inputs).logits, one.labels)
    hook.remove()
    ig = depn.integrated_gradients(model, down[1], one, steps=64)
    assert torch.allclose(ig.sum(), (full - zero).sum(), atol=2e-3, rtol=0.05)
    units = depn.vote(att, threshold_ratio=0.1, top_k=7)
    assert len(units) == 7 and len(set(units)) == 7
    # plain ints: units are hashed into cross-lingual sets and written to the JSON cache
    assert all(type(layer) is int and type(u) is int for layer, u in units)
    cols = depn.deactivate(down, units)
    for layer, us in cols.items():
        w = down[layer].weight
        assert (w[:, us] == 0).all()
        others = [u for u in range(INTER) if u not in us]
        assert (w[:, others] != 0).any()


def test_cross_lingual_split():
    per = {"en": [(1, 2), (1, 3), (2, 5)], "zh": [(1, 2), (2, 6)], "es": [(1, 2), (1, 3)]}
    split = depn.split_cross_lingual(per)
    assert split.universal == [(1, 2)]
    assert split.specific == {"en": [(2, 5)], "es": [], "zh": [(2, 6)]}
    assert depn.split_cross_lingual(per, min_languages=2).universal == [(1, 2), (1, 3)]
    assert split.union() == [(1, 2), (2, 5), (2, 6)]


def test_unit_budget_confines_the_update_to_salient_columns(model):
    from gatelang.methods.neural_gate.algorithm import select_units

    batch = make_batch(rows=2, benign_rows=1)
    layer = model.model.layers[1]
    weight = layer.mlp.down_proj.weight
    mask, saliency = select_units(model, layer, weight, [batch], None, 4)
    assert int(mask.sum()) == 4 and saliency.shape == (INTER,)
    assert saliency[mask].min() >= saliency[~mask].max()
    assert weight.requires_grad  # the flags are restored as they were
    delta, _ = gated_finetune(model, layer, weight, [batch], None, steps=3, lr=1e-2, col_mask=mask)
    cols = (delta != 0).any(0)
    assert torch.equal(cols, mask)


def test_unit_inputs_retrain_only_the_selected_units_in_full(model):
    """`extra` parameters train under their masks: the selected units' input rows change,
    every other row of gate/up stays bit-identical."""
    from gatelang.methods.neural_gate.algorithm import select_units
    from gatelang.models.families.llama import LlamaAdapter

    batch = make_batch(rows=2, benign_rows=1)
    layer = model.model.layers[1]
    weight = layer.mlp.down_proj.weight
    mask, _ = select_units(model, layer, weight, [batch], None, 3)
    adapter = LlamaAdapter(model, _Tok())
    inputs = adapter.mlp_input_weights(1)
    assert [n for n, _m in inputs] == ["model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight"]
    before = {n: m.weight.detach().clone() for n, m in inputs}
    extra = [(m.weight, mask.unsqueeze(1).float().expand_as(m.weight)) for _n, m in inputs]
    delta, _ = gated_finetune(model, layer, weight, [batch], None, steps=3, lr=1e-2,
                              col_mask=mask, extra=extra)
    assert torch.equal((delta != 0).any(0), mask)
    for n, m in inputs:
        rows = (m.weight.detach() != before[n]).any(1)
        assert rows.any() and not rows[~mask].any(), n


class _Tok:
    pad_token_id = 0
    eos_token = "</s>"
    padding_side = "left"


def test_footprint_counts_a_unit_once_whether_its_inputs_or_output_changed(model):
    from types import SimpleNamespace

    from gatelang.models.families.llama import LlamaAdapter
    from gatelang.passes.requirements import footprint

    params = {n: p.detach() for n, p in model.named_parameters()}
    ctx = SimpleNamespace(loaded=SimpleNamespace(adapter=LlamaAdapter(model, _Tok())),
                          base_value=lambda name: params[name])
    down = params["model.layers.1.mlp.down_proj.weight"].clone()
    down[:, [2, 5]] += 1.0  # units 2 and 5 write differently ...
    down[7, 2] += 1.0  # ... into residual dims (all of them: a whole column moved)
    up = params["model.layers.1.mlp.up_proj.weight"].clone()
    up[[5, 9]] += 1.0  # units 5 (again) and 9 read differently
    fp = footprint(ctx, {"model.layers.1.mlp.down_proj.weight": down,
                         "model.layers.1.mlp.up_proj.weight": up})
    assert fp["neurons_touched"] == 3 and fp["per_layer"]["1"]["units"] == 3
    assert fp["dims_touched"] == H and fp["neurons_total"] == LAYERS * INTER
    assert fp["params_changed"] == 2 * H + 2 * H


def test_quiet_units_are_the_least_active_on_real_tokens(model):
    from gatelang.methods.neural_gate.algorithm import quiet_units

    batch = make_batch(rows=3, benign_rows=1)
    down = model.model.layers[2].mlp.down_proj
    seen: list[torch.Tensor] = []
    h = down.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach().abs()))
    with torch.no_grad():
        model(**batch.inputs)
    h.remove()
    mask, activity = quiet_units(model, down, [batch], 5)
    keep = batch.inputs["attention_mask"].unsqueeze(-1).float()
    expected = (seen[0] * keep).sum((0, 1)) / keep.sum()
    assert torch.allclose(activity, expected, atol=1e-6)
    assert int(mask.sum()) == 5 and activity[mask].max() <= activity[~mask].min()
