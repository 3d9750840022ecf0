"""Executor, cache and atomic writes, with throwaway passes registered for the test."""

from __future__ import annotations

import os

import networkx as nx
import pytest
import torch

from gatelang.errors import PlanError
from gatelang.passes import base
from gatelang.passes.base import Artifact, Input, Pass, PassContext, PassResult
from gatelang.runtime import atomic
from gatelang.runtime.cache import Cache
from gatelang.runtime.executor import Executor, node_specs

CALLS: list[str] = []


NUMBER = Artifact("Number", data=("x",))
OTHER = Artifact("Other")


class _Source(Pass):
    op = "test.source"
    kind = "data"
    output = NUMBER

    def run(self, ctx, node, inputs):
        CALLS.append(node.id)
        return PassResult(data={"x": node.params["x"]}, tensors={"r": torch.rand(3)})


class _Add(Pass):
    op = "test.add"
    kind = "verify"
    inputs = {"a": Input((NUMBER,)), "b": Input((NUMBER,))}
    output = NUMBER

    def run(self, ctx, node, inputs):
        CALLS.append(node.id)
        if node.params.get("fail") and os.environ.get("GATELANG_TEST_FAIL"):
            raise KeyboardInterrupt
        return PassResult(data={"x": inputs["a"].data["x"] + inputs["b"].data["x"]})


@pytest.fixture(autouse=True)
def _registered():
    base.register(_Source)
    base.register(_Add)
    CALLS.clear()
    yield
    base.REGISTRY.pop("test.source", None)
    base.REGISTRY.pop("test.add", None)


def _plan(fail: bool = False) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node("n1", id="n1", op="test.source", kind="data", params={"x": 2})
    g.add_node("n2", id="n2", op="test.source", kind="data", params={"x": 5})
    g.add_node("n3", id="n3", op="test.add", kind="verify", params={"fail": fail})
    g.add_edge("n1", "n3", role="a")
    g.add_edge("n2", "n3", role="b")
    return g


def test_topological_order_and_roles():
    specs = node_specs(_plan())
    assert [s.id for s in specs] == ["n1", "n2", "n3"]
    assert specs[2].parents == {"a": ("n1",), "b": ("n2",)}
    run = Executor(PassContext(loaded=None, seed=3)).run(_plan())
    assert run.results["n3"].data == {"x": 7}


def test_seeds_are_per_node_and_cache_resumes(tmp_path, monkeypatch):
    cache = Cache(tmp_path / "cache")
    first = Executor(PassContext(loaded=None, seed=1), cache=cache).run(_plan())
    again = Executor(PassContext(loaded=None, seed=1), cache=Cache(None)).run(_plan())
    # a node's randomness depends only on the seed and its id, not on what ran before it
    assert torch.equal(first.results["n2"].tensors["r"], again.results["n2"].tensors["r"])
    other = Executor(PassContext(loaded=None, seed=2), cache=Cache(None)).run(_plan())
    assert not torch.equal(first.results["n2"].tensors["r"], other.results["n2"].tensors["r"])

    CALLS.clear()
    second = Executor(PassContext(loaded=None, seed=1), cache=cache).run(_plan())
    assert CALLS == [] and all(n.cached for n in second.nodes)
    assert torch.equal(second.results["n1"].tensors["r"], first.results["n1"].tensors["r"])

    # an interrupted run keeps what finished; the next run recomputes only the rest
    CALLS.clear()
    monkeypatch.setenv("GATELANG_TEST_FAIL", "1")
    cache2 = Cache(tmp_path / "c2")
    with pytest.raises(KeyboardInterrupt):
        Executor(PassContext(loaded=None, seed=1), cache=cache2).run(_plan(fail=True))
    monkeypatch.delenv("GATELANG_TEST_FAIL")
    CALLS.clear()
    Executor(PassContext(loaded=None, seed=1), cache=cache2).run(_plan(fail=True))
    assert CALLS == ["n3"]


def test_fingerprint_separates_models(tmp_path):
    cache = Cache(tmp_path)
    Executor(PassContext(loaded=None), cache=cache, fingerprint="a").run(_plan())
    CALLS.clear()
    Executor(PassContext(loaded=None), cache=cache, fingerprint="b").run(_plan())
    assert CALLS == ["n1", "n2", "n3"]


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    dest = tmp_path / "out" / "report.json"
    atomic.atomic_write_json(dest, {"b": 1, "a": [1, 2]})
    assert dest.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        atomic.atomic_write_text(dest, "half")
    assert dest.read_text().startswith("{")  # the old file is intact
    assert [p.name for p in dest.parent.iterdir()] == ["report.json"]  # no temp file left


def test_unknown_op_is_a_plan_error():
    from gatelang.errors import PlanError

    g = nx.DiGraph()
    g.add_node("z", id="z", op="nope.op", kind="data", params={})
    with pytest.raises(PlanError, match="nope.op"):
        Executor(PassContext(loaded=None)).run(g)


def test_edited_weights_restore_base():
    lin = torch.nn.Linear(2, 2)

    class _L:
        model = lin

    ctx = PassContext(loaded=_L())
    before = lin.weight.detach().clone()
    with ctx.edited_weights({"weight": torch.zeros(2, 2)}):
        assert torch.count_nonzero(lin.weight) == 0
        assert torch.equal(ctx.base_value("weight"), before)
    assert torch.equal(lin.weight, before)


def test_contracts_are_checked_before_anything_runs():
    g = _plan()
    g.edges["n2", "n3"]["role"] = "c"  # a role the pass does not read; "b" is now missing
    with pytest.raises(PlanError) as exc:
        Executor(PassContext(loaded=None)).run(g)
    assert "input role 'c' is not one the pass reads" in str(exc.value)
    assert "required input 'b' is not in the plan" in str(exc.value)
    assert CALLS == []  # nothing ran

    g = _plan()
    g.nodes["n3"]["kind"] = "edit"
    with pytest.raises(PlanError, match="the pass is a verify pass, the node a edit"):
        Executor(PassContext(loaded=None)).run(g)


def test_a_parent_of_the_wrong_artifact_is_refused():
    class _Other(Pass):
        op = "test.other"
        kind = "data"
        output = OTHER

        def run(self, ctx, node, inputs):
            return PassResult()

    base.register(_Other)
    try:
        g = _plan()
        g.nodes["n2"]["op"] = "test.other"
        with pytest.raises(PlanError, match="role 'b' needs Number, its parent n2 makes Other"):
            Executor(PassContext(loaded=None)).run(g)
    finally:
        base.REGISTRY.pop("test.other", None)


def test_a_result_missing_its_artifact_fields_is_an_error():
    class _Broken(Pass):
        op = "test.broken"
        kind = "data"
        output = NUMBER

        def run(self, ctx, node, inputs):
            return PassResult(data={"y": 1})

    base.register(_Broken)
    try:
        g = nx.DiGraph()
        g.add_node("z", id="z", op="test.broken", kind="data", params={})
        with pytest.raises(PlanError, match=r"returned a Number without data\['x'\]"):
            Executor(PassContext(loaded=None)).run(g)
    finally:
        base.REGISTRY.pop("test.broken", None)


def test_changed_pass_source_reruns_the_node(tmp_path, monkeypatch):
    """The cache key hashes the pass's source and what it imports: editing the code of a pass
    (or of a helper module it imports) makes the node run again instead of replaying."""
    import importlib
    import sys

    from gatelang.runtime.fingerprint import code_fingerprint

    pkg = tmp_path / "toypass"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("SCALE = 2\n")
    (pkg / "node.py").write_text(
        "from gatelang.passes.base import Artifact, Pass, PassResult, register\n"
        "from toypass.helper import SCALE\n"
        "OUT = Artifact('Toy', data=('x',))\n"
        "CALLS = []\n"
        "@register\n"
        "class Toy(Pass):\n"
        "    op = 'test.toy'\n"
        "    kind = 'data'\n"
        "    output = OUT\n"
        "    def run(self, ctx, node, inputs):\n"
        "        CALLS.append(1)\n"
        "        return PassResult(data={'x': SCALE})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    node = importlib.import_module("toypass.node")
    g = nx.DiGraph()
    g.add_node("t", id="t", op="test.toy", kind="data", params={})
    cache = Cache(tmp_path / "cache")
    try:
        first = code_fingerprint("toypass.node")
        Executor(PassContext(loaded=None), cache=cache).run(g)
        Executor(PassContext(loaded=None), cache=cache).run(g)
        assert node.CALLS == [1]  # the second run replayed the cached result
        (pkg / "helper.py").write_text("SCALE = 3  # changed\n")
        assert code_fingerprint("toypass.node") != first
        run = Executor(PassContext(loaded=None), cache=cache).run(g)
        assert node.CALLS == [1, 1] and not run.nodes[0].cached
    finally:
        base.REGISTRY.pop("test.toy", None)
        for name in ("toypass.node", "toypass.helper", "toypass"):
            sys.modules.pop(name, None)


def test_nested_edited_weights_restore_the_outer_edit():
    lin = torch.nn.Linear(2, 2)

    class _L:
        model = lin

    ctx = PassContext(loaded=_L())
    base = lin.weight.detach().clone()
    with ctx.edited_weights({"weight": base * 2}):
        with ctx.edited_weights({"weight": base * 3}):
            assert torch.equal(lin.weight, base * 3)
        assert torch.equal(lin.weight, base * 2)  # the outer edit is back, not the base
        assert torch.equal(ctx.base_value("weight"), base)
    assert torch.equal(lin.weight, base)


class _Edit(Pass):
    """Sets tensor `w` to its `value`, on top of an upstream edit's tensors (as edits do)."""

    op = "test.edit"
    kind = "edit"
    inputs = {"weights": Input((base.WEIGHT_EDIT,), required=False)}
    output = base.WEIGHT_EDIT

    def run(self, ctx, node, inputs):
        tensors = dict(inputs["weights"].tensors) if "weights" in inputs else {}
        tensors[base.WEIGHT_PREFIX + "w"] = torch.tensor([float(node.params["value"])])
        return PassResult(data={"method": "test"}, tensors=tensors)


class _Seen(Pass):
    op = "test.seen"
    kind = "verify"
    inputs = {"edited": Input((base.WEIGHT_EDIT,))}
    output = NUMBER

    def run(self, ctx, node, inputs):
        return PassResult(data={"x": float(base.weights_of(inputs)["w"])})


def test_a_node_sees_the_edit_it_verifies_not_an_older_upstream_one():
    """Two policies' edits set the same tensor; the second policy's check must see the second
    value, although the first edit reaches it too (as an upstream edit)."""
    base.register(_Edit)
    base.register(_Seen)
    try:
        g = nx.DiGraph()
        g.add_node("e1", id="e1", op="test.edit", kind="edit", params={"value": 1})
        g.add_node("e2", id="e2", op="test.edit", kind="edit", params={"value": 2})
        g.add_node("v1", id="v1", op="test.seen", kind="verify", params={})
        g.add_node("v2", id="v2", op="test.seen", kind="verify", params={})
        g.add_edge("e1", "e2", role="weights")
        g.add_edge("e1", "v1", role="edited")
        g.add_edge("e2", "v2", role="edited")
        run = Executor(PassContext(loaded=None)).run(g)
        assert run.results["v1"].data["x"] == 1.0
        assert run.results["v2"].data["x"] == 2.0
    finally:
        base.REGISTRY.pop("test.edit", None)
        base.REGISTRY.pop("test.seen", None)
