"""The weight attacks: `verify.quantized` (round-to-nearest per-channel quantization of the
decoder's projections) and `verify.relearn` (a short fine-tune on unrelated data)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gatelang.errors import PlanError
from gatelang.models import load_model
from gatelang.models.tiny import build_tiny_checkpoint
from gatelang.passes.base import NodeSpec, PassContext, PassResult, get_pass
from gatelang.passes.data import QueriesPass
from gatelang.passes.verify import quantized as Q
from gatelang.passes.verify import relearn as R

SUBJECTS = ["Alice Okafor"]
ATTRIBUTES = ["home_address"]


@pytest.fixture(scope="module")
def random_llava(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llava-random")
    build_tiny_checkpoint("llava", folder, seed=0)
    return load_model(str(folder), device="cpu")


def _ctx(loaded, **options) -> PassContext:
    return PassContext(loaded=loaded, seed=0,
                       options={"attack_items": 4, "max_new_tokens": 8, **options})


def _inputs(ctx: PassContext, edit: dict[str, torch.Tensor] | None = None,
            subjects: list[str] = SUBJECTS, languages: tuple[str, ...] = ("en",)
            ) -> dict[str, PassResult]:
    qnode = NodeSpec(id="q", op="data.queries", kind="data", params={
        "subjects": subjects, "attributes": ATTRIBUTES, "languages": list(languages),
        "modalities": ["text", "image"], "splits": ["heldout"]})
    queries = QueriesPass().run(ctx, qnode, {})
    tensors = {f"weight:{k}": v for k, v in (edit or {}).items()}
    return {"edited": PassResult(data={"method": "test"}, tensors=tensors), "queries.0": queries}


def _node(op: str, attack: dict | None = None, subjects: list[str] = SUBJECTS,
          languages: tuple[str, ...] = ("en",)) -> NodeSpec:
    params = {"subjects": subjects, "attributes": ATTRIBUTES,
              "rule_languages": list(languages), "model": "test"}
    if attack:
        params["attack"] = attack
    return NodeSpec(id=op, op=op, kind="verify", params=params)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _unchanged(model: nn.Module, snap: dict[str, torch.Tensor]) -> list[str]:
    return [n for n, p in model.named_parameters() if not torch.equal(p.detach(), snap[n])]


# ---------------------------------------------------------------- (a) the quantizer


def _weight(seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return nn.Linear(64, 32).weight.detach().clone()


def test_int8_error_is_small_and_int4_larger():
    w = _weight()
    row_max = w.abs().amax(dim=1, keepdim=True)
    err8 = (Q.quantize(w, 8) - w).abs()
    err4 = (Q.quantize(w, 4) - w).abs()
    # round to nearest: at most half a step, a step being row max / qmax
    assert torch.all(err8 <= row_max / 127 / 2 + 1e-7)
    assert torch.all(err4 <= row_max / 7 / 2 + 1e-7)
    assert err8.mean() < 0.01 * w.abs().mean()
    assert err4.mean() > 5 * err8.mean()


def test_one_scale_per_output_channel():
    w = _weight()
    loud = w.clone()
    loud[0] *= 1000  # one large channel must not coarsen the others
    q, q_loud = Q.quantize(w, 4), Q.quantize(loud, 4)
    assert torch.equal(q[1:], q_loud[1:])
    for bits in (8, 4):
        qmax = 2 ** (bits - 1) - 1
        deq = Q.quantize(w, bits)
        scale = w.abs().amax(dim=1, keepdim=True) / qmax
        levels = deq / scale
        assert torch.allclose(levels, levels.round(), atol=1e-4)  # on the channel's own grid
        assert levels.abs().max() <= qmax + 1e-4
        # the channel's largest weight is representable exactly (symmetric, no clipping)
        assert torch.allclose(deq.abs().amax(dim=1), w.abs().amax(dim=1))


def test_zero_channel_stays_zero_and_conv1d_layout():
    w = _weight()
    w[3] = 0
    for bits in (8, 4):
        deq = Q.quantize(w, bits)
        assert torch.equal(deq[3], torch.zeros_like(deq[3]))
        assert torch.isfinite(deq).all()
        # GPT-2's Conv1D stores [in, out]: its output channels are columns
        assert torch.equal(Q.quantize(w.t().contiguous(), bits, out_axis=1), deq.t())
    with pytest.raises(ValueError):
        Q.quantize(w[0], 8)
    assert Q.quantize(w.to(torch.bfloat16), 8).dtype == torch.bfloat16


def test_only_decoder_projections_are_quantized_and_restored_exactly(random_llava):
    ctx = _ctx(random_llava)
    model = random_llava.model
    names = Q.quantized_weight_names(ctx)
    layers = random_llava.adapter.num_layers
    assert len(names) == 7 * layers  # q, k, v, o, gate, up, down per decoder layer
    for bad in ("embed", "lm_head", "vision", "projector", "norm"):
        assert not any(bad in n for n in names), bad
    snap = _snapshot(model)
    with ctx.edited_weights(Q.QuantizedWeights(ctx, 4)):
        changed = set(_unchanged(model, snap))
    assert changed == set(names)
    assert _unchanged(model, snap) == []


def test_gpt2_conv1d_projections_are_found(tmp_path):
    build_tiny_checkpoint("gpt2", tmp_path, seed=0)
    lm = load_model(str(tmp_path), device="cpu")
    ctx = _ctx(lm)
    names = Q.quantized_weight_names(ctx)
    assert {n.rsplit(".", 2)[-2] for n in names} >= {"c_attn", "c_proj", "c_fc"}
    assert not any("wte" in n or "wpe" in n or "ln_" in n for n in names)
    qw = Q.QuantizedWeights(ctx, 8)
    axes = {axis for _, axis in qw.weights.values()}
    assert axes == {1}  # Conv1D: [in, out]
    snap = _snapshot(lm.model)
    with ctx.edited_weights(qw):
        assert set(_unchanged(lm.model, snap)) == set(names)
    assert _unchanged(lm.model, snap) == []


def test_quantized_pass_rows_and_restores(random_llava):
    ctx = _ctx(random_llava)
    down = f"{Q.decoder_projections(ctx)[0][0].rsplit('.', 2)[0]}.mlp.down_proj.weight"
    edit = {down: dict(random_llava.model.named_parameters())[down].detach() * 0.5}
    snap = _snapshot(random_llava.model)
    res = get_pass("verify.quantized")().run(ctx, _node("verify.quantized"), _inputs(ctx, edit))
    assert _unchanged(random_llava.model, snap) == []
    rows = res.data["items"]
    assert len(rows) == 2 * 4
    assert {(r["split"], r["variant"]) for r in rows} == {("int8", "int8"), ("int4", "int4")}
    assert len({r["id"] for r in rows}) == len(rows)


# ---------------------------------------------------------------- (b) relearn


def test_relearn_trains_restores_and_never_sees_protected_facts(random_llava, monkeypatch):
    ctx = _ctx(random_llava)
    model = random_llava.model
    node = _node("verify.relearn", {"relearn_steps": 2})
    layer0 = Q.decoder_projections(ctx)[0][0].rsplit(".", 2)[0]
    down = f"{layer0}.mlp.down_proj.weight"
    edit = {down: dict(model.named_parameters())[down].detach() * 0.5}
    inputs = _inputs(ctx, edit)
    snap = _snapshot(model)

    drift: list[float] = []  # how far the trained weights are from the start when asked
    real = R.evaluate_items

    def spy(loaded, items, **kw):
        drift.append(max(float((p.detach() - snap[n]).abs().max())
                         for n, p in R.trained_parameters(ctx).items() if n != down))
        return real(loaded, items, **kw)

    monkeypatch.setattr(R, "evaluate_items", spy)
    res = get_pass("verify.relearn")().run(ctx, node, inputs)

    assert _unchanged(model, snap) == []  # every parameter restored exactly
    # before: the unedited model's plain answers, which `known` already decoded (answer cache);
    # after: asked once the edited model relearned, never from the cache
    assert len(drift) == 1 and drift[0] > 0
    log = res.data["relearn"]
    assert log["steps"] == 2 and log["rows"] == 2 * 8
    assert log["fact_rows"] == 2 * 4 and log["utility_rows"] == 2 * 4
    assert math.isfinite(log["loss"]["loss_first"]) and math.isfinite(log["loss"]["loss_last"])
    assert "alice-okafor" not in log["subjects"]
    rows = res.data["items"]
    assert len(rows) == 4 and {r["split"] for r in rows} == {"relearn"}

    # the training set: no query about a protected subject, no protected value as a target
    facts, utility = R.training_pools(ctx, node)
    protected = R.protected_subjects(ctx, node)
    assert protected == {"alice-okafor"}
    assert facts and utility
    assert not any(q.subject_id in protected for q in facts)
    assert not any(q.subject_id for q in utility)
    alice = ctx.world.subject("Alice Okafor")
    secrets = {alice.attributes["home_address"], alice.home_city}
    assert not any(q.answer in secrets for q in facts)
    assert {q.language for q in facts + utility} == {"en"}
    assert {q.split for q in facts + utility} == {"edit"}
    plan = R.schedule(facts, utility, 3, 8, seed=0)
    assert plan == R.schedule(facts, utility, 3, 8, seed=0)  # deterministic
    assert [sum(1 for q in b if q.subject_id) for b in plan] == [4, 4, 4]


def test_relearn_needs_subjects(random_llava):
    from gatelang.errors import PlanError

    ctx = _ctx(random_llava)
    with pytest.raises(PlanError, match="names no subjects"):
        R.training_pools(ctx, _node("verify.relearn", subjects=[]))


# ---------------------------------------------------------------- (c) shipped tiny-llava


@pytest.mark.slow
def test_int8_keeps_the_shipped_models_answers():
    lm = load_model("tiny-llava")
    ctx = _ctx(lm, attack_items=12, max_new_tokens=24)
    node = _node("verify.quantized", {"quantize_bits": [8]})
    res = get_pass("verify.quantized")().run(ctx, node, _inputs(ctx))
    known = [r for r in res.data["items"] if r["known"]]
    assert len(known) >= 10  # the shipped model knows Alice's address
    assert {r["split"] for r in known} == {"int8"}
    leak = sum(r["before"] == "leak" for r in known) / len(known)
    assert leak >= 0.9
    assert all(r["after"] == r["before"] for r in known)  # no edit: after is before


def test_relearn_schedule_without_unrelated_facts_uses_benign_tasks_only():
    """A policy that protects every subject leaves no unrelated fact: the fine-tune runs on the
    benign tasks alone instead of failing the run."""
    plan = R.schedule([], ["u1", "u2", "u3"], 4, 2, seed=0)
    assert len(plan) == 4 and all(len(b) == 2 for b in plan)
    assert {x for b in plan for x in b} <= {"u1", "u2", "u3"}
    with pytest.raises(PlanError, match="no unrelated facts or benign tasks"):
        R.schedule([], [], 4, 2, seed=0)
