"""Passes on a randomly initialised tiny LLaVA loaded through the models layer."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from gatelang.models import load_model
from gatelang.models.tiny import build_tiny_checkpoint
from gatelang.passes import REGISTRY
from gatelang.passes.base import PassContext
from gatelang.runtime.executor import Executor

FAST = {"mask_steps": 3, "steps": 2, "lr": 1e-2, "layer_probe_samples": 1}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llava-random")
    build_tiny_checkpoint("llava", folder, seed=0)
    return load_model(str(folder), device="cpu")


def _plan(method: str = "neural_gate", method_op: str = "edit.neural_gate",
          loc_op: str | None = "localize.neural_gate") -> nx.DiGraph:
    g = nx.DiGraph()
    sel = {"subjects": ["Alice Okafor"], "attributes": ["home_address"], "languages": ["en"],
           "modalities": ["text", "image"]}
    g.add_node("d-edit", id="d-edit", op="data.queries", kind="data",
               params={**sel, "splits": ["edit"], "per_cell_limit": 2})
    g.add_node("d-held", id="d-held", op="data.queries", kind="data",
               params={**sel, "languages": ["en", "es"], "splits": ["heldout"], "per_cell_limit": 2})
    params = dict(FAST) if method == "neural_gate" else {"ig_steps": 2, "top_k": 5}
    g.add_node("gate", id="gate", op=method_op, kind="edit",
               params={"method": method, "params": params})
    g.add_edge("d-edit", "gate", role="edit_set")
    if loc_op:
        g.add_node("loc", id="loc", op=loc_op, kind="localize",
                   params={"method": method, "params": params, "cross_lingual": False})
        g.add_edge("d-edit", "loc", role="edit_set")
        g.add_edge("loc", "gate", role="localize")
    g.add_node("ver", id="ver", op="verify.refusal", kind="verify", params={"rule_languages": ["en"]})
    g.add_edge("gate", "ver", role="edited")
    g.add_edge("d-held", "ver", role="queries")
    return g


def test_every_planned_op_has_a_pass_of_its_kind():
    from gatelang.passes import get_pass
    from gatelang.planner import known_ops

    ops = known_ops()
    assert {"edit.neural_gate", "edit.finetune", "edit.deactivate", "localize.random",
            "edit.remap_image", "verify.refusal", "report.requirements"} <= set(ops)
    for op in ops:
        cls = get_pass(op)
        assert cls.op == op and cls.kind == op.split(".")[0], op
        assert op in REGISTRY


def test_neural_gate_plan_edits_only_one_down_proj(loaded):
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    run = Executor(PassContext(loaded=loaded, seed=0)).run(_plan())
    loc = run.results["loc"]
    layer = loc.data["layer"]
    assert 0 <= layer < loaded.adapter.num_layers
    assert loc.tensors["gate"].shape == (loaded.adapter.hidden_size,)
    edits = {k for k in run.results["gate"].tensors if k.startswith("weight:")}
    assert edits == {f"weight:{loaded.adapter.site(f'down_proj({layer})').path}.weight"}
    # passes leave the model unedited; the edit travels as tensors
    for n, p in loaded.model.named_parameters():
        assert torch.equal(p, before[n]), n
    items = run.results["ver"].data["items"]
    assert {i["split"] for i in items} == {"heldout", "unseen_language"}
    assert all(i["before"] in ("leak", "refuse", "other") for i in items)


def test_deactivate_plan_zeroes_columns(loaded):
    run = Executor(PassContext(loaded=loaded, seed=0)).run(
        _plan("deactivate", "edit.deactivate", "localize.privacy_neurons"))
    units = run.results["loc"].data["units"]
    assert 0 < len(units) <= 5
    for key, value in run.results["gate"].tensors.items():
        name = key.split(":", 1)[1]
        layer = int(name.split(".layers.")[1].split(".")[0])
        cols = [u for li, u in units if li == layer]
        assert (value[:, cols] == 0).all()


def test_method_overrides_keyed_by_method_do_not_leak_into_other_methods() -> None:
    from types import SimpleNamespace

    from gatelang.errors import PlanError
    from gatelang.methods import get_method
    from gatelang.passes.base import NodeSpec, method_config, pass_options

    def node(method: str) -> NodeSpec:
        return NodeSpec(id="n", op="edit.x", kind="edit", params={"method": method, "params": {}})

    keyed = SimpleNamespace(options=pass_options({"method_overrides": {
        "neural_gate": {"steps": 1, "lr": 0.02}, "remap": {"lr": 0.003}}}))
    assert method_config(keyed, node("neural_gate")).steps == 1
    remap = method_config(keyed, node("remap"))
    assert remap.steps == get_method("remap").defaults()["steps"] and remap.lr == 0.003
    with pytest.raises(PlanError, match="keyed by method name"):
        pass_options({"method_overrides": {"steps": {"x": 1}}})
    with pytest.raises(PlanError, match="no parameter 'stepz'"):
        method_config(SimpleNamespace(options=pass_options(
            {"method_overrides": {"remap": {"stepz": 1}}})), node("remap"))
    with pytest.raises(PlanError, match="unknown method 'nope'"):
        method_config(keyed, node("nope"))
    with pytest.raises(PlanError, match="run option max_itemz"):
        pass_options({"max_itemz": 3})


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_unit_budget_rewrites_exactly_the_selected_units(family, tmp_path):
    """`unit_budget` + `unit_inputs` on Linear (llama) and Conv1D (GPT-2) layouts: the patch
    changes k units' output columns and input rows and nothing else, and the footprint says k."""
    from gatelang.passes.requirements import footprint

    build_tiny_checkpoint(family, tmp_path, seed=0)
    lm = load_model(str(tmp_path), device="cpu")
    g = nx.DiGraph()
    g.add_node("d", id="d", op="data.queries", kind="data", params={
        "subjects": ["Alice Okafor"], "attributes": ["home_address"], "languages": ["en"],
        "modalities": ["text"], "splits": ["edit"], "per_cell_limit": 2})
    for select in ("quiet", "salient"):
        params = {"steps": 2, "lr": 1e-2, "layer": 1, "unit_budget": 0.05,
                  "unit_select": select, "unit_inputs": True}
        g.add_node(select, id=select, op="edit.finetune", kind="edit",
                   params={"method": "finetune", "params": params})
        g.add_edge("d", select, role="edit_set")
    ctx = PassContext(loaded=lm, seed=0)
    run = Executor(ctx).run(g)
    k = int(0.05 * lm.adapter.num_layers * lm.adapter.intermediate_size)
    for select in ("quiet", "salient"):
        res = run.results[select]
        weights = {key.split(":", 1)[1]: v for key, v in res.tensors.items() if key.startswith("weight:")}
        assert len(weights) == 1 + len(lm.adapter.mlp_input_weights(1)), sorted(weights)
        fp = footprint(ctx, weights)
        assert fp["neurons_touched"] == k == res.data["units_selected"], (select, fp)
        assert res.data["cols_changed"] == k


def test_unit_share_sizes_the_ablation_relative_to_the_model(loaded):
    g = _plan("deactivate", "edit.deactivate", "localize.privacy_neurons")
    g.nodes["loc"]["params"] = {"method": "deactivate", "cross_lingual": False,
                                "params": {"ig_steps": 2, "top_k": 50, "unit_share": 0.02}}
    run = Executor(PassContext(loaded=loaded, seed=0)).run(g)
    total = loaded.adapter.num_layers * loaded.adapter.intermediate_size
    assert len(run.results["loc"].data["units"]) == max(1, round(0.02 * total)) < 50
