"""Executor, cache and atomic writes, with throwaway passes registered for the test."""

from __future__ import annotations

import os

import networkx as nx
import pytest
import torch

from gatelang.passes import base
from gatelang.passes.base import Pass, PassContext, PassResult
from gatelang.runtime import atomic
from gatelang.runtime.cache import Cache
from gatelang.runtime.executor import Executor, node_specs

CALLS: list[str] = []


class _Source(Pass):
    op = "test.source"
    kind = "data"
    outputs = ("x",)

    def run(self, ctx, node, inputs):
        CALLS.append(node.id)
        return PassResult(data={"x": node.params["x"]}, tensors={"r": torch.rand(3)})


class _Add(Pass):
    op = "test.add"
    kind = "probe"
    inputs = ("a", "b")

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
    g.add_node("n3", id="n3", op="test.add", kind="probe", params={"fail": fail})
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
