"""The whole-plan progress display: pass i of N, ETA from the plan's cost estimate, plain lines
and heartbeats when stderr is not a terminal, and nothing with --quiet."""

from __future__ import annotations

import io
import time

import networkx as nx

from gatelang.passes import base
from gatelang.passes.base import Artifact, Pass, PassContext, PassResult
from gatelang.runtime.executor import Executor
from gatelang.runtime.progress import PlanProgress, choose_mode, cost_weight, format_seconds


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _display(clock: Clock, **kw) -> tuple[PlanProgress, io.StringIO]:
    out = io.StringIO()
    return PlanProgress("plain", stream=out, clock=clock, heartbeat_s=0, **kw), out


def test_eta_comes_from_the_plan_cost():
    clock = Clock()
    d, out = _display(clock)
    d.begin([("a", "data.queries", "", {"forward_passes": 0}),
             ("b", "edit.x", "edit", {"forward_passes": 99}),
             ("c", "verify.y", "verify", {"forward_passes": 99, "backward_passes": 0})])
    assert d.eta_seconds() is None  # no rate yet
    d.start("a")
    clock.t = 1.0
    d.finish("a", 1.0, cached=False)  # 1 unit of cost took 1 s
    assert d.eta_seconds() == 200.0  # 200 units left
    d.start("b")
    bar = d.bar(10, "edit steps")
    clock.t = 51.0
    bar.update(5)  # half of b (50 units) in 50 s: still 1 s a unit
    assert d.eta_seconds() == 150.0
    assert "[2/3] edit.x: edit steps 50%" in d.heartbeat_line()
    assert "ETA 2m30s" in d.heartbeat_line() and "51s elapsed" in d.heartbeat_line()
    bar.close()
    d.finish("b", 100.0, cached=False)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/3] data.queries 1s")
    assert lines[1].startswith("[2/3] edit.x (edit) 1m40s")


def test_cached_nodes_leave_the_estimate():
    clock = Clock()
    d, out = _display(clock)
    d.begin([("a", "localize.x", "", {"forward_passes": 1000}),
             ("b", "verify.y", "", {"forward_passes": 9})])
    d.start("a")
    d.finish("a", 0.0, cached=True)
    d.start("b")
    bar = d.bar(2, "answers")
    clock.t = 5.0
    bar.update(1)
    assert d.eta_seconds() == 5.0  # half of b took 5 s; the cached 1001 units cost nothing
    assert "[1/2] localize.x cached" in out.getvalue()


def test_heartbeat_when_not_a_terminal():
    out = io.StringIO()
    d = PlanProgress("plain", stream=out, heartbeat_s=0.05)
    try:
        d.begin([("a", "localize.x", "layer search", None)])
        d.start("a")
        bar = d.bar(4, "layer search")
        bar.update(1)
        deadline = time.monotonic() + 5
        while out.getvalue().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        d.close()
    beats = [line for line in out.getvalue().splitlines() if line.startswith("…")]
    assert len(beats) >= 2, out.getvalue()
    assert "[1/1] localize.x: layer search 25%" in beats[0]


def test_modes():
    tty, pipe = io.StringIO(), io.StringIO()
    tty.isatty = lambda: True  # type: ignore[method-assign]
    assert choose_mode(False, tty) == "off"
    assert choose_mode(True, tty) == choose_mode(None, tty) == "rich"
    assert choose_mode(True, pipe) == "plain"  # the CLI: heartbeats in CI logs
    assert choose_mode(None, pipe) == "off"  # the library, when nobody watches
    quiet = io.StringIO()
    d = PlanProgress("off", stream=quiet)
    d.begin([("a", "x", "", None)])
    d.start("a")
    d.finish("a", 1.0, cached=False)
    d.close()
    assert quiet.getvalue() == ""


def test_rich_display_renders_and_clears():
    out = io.StringIO()
    d = PlanProgress("rich", stream=out)
    d.begin([("a", "data.queries", "", None), ("b", "edit.x", "", {"forward_passes": 3})])
    d.start("a")
    d.finish("a", 0.5, cached=False)
    d.start("b")
    bar = d.bar(3, "steps")
    bar.update(3)
    bar.close()
    d.finish("b", 1.0, cached=False)
    d.close()
    assert "[1/2] data.queries" in out.getvalue() and "[2/2] edit.x" in out.getvalue()


def test_cost_weight_and_durations():
    assert cost_weight(None) == 1.0
    assert cost_weight({"forward_passes": 10, "backward_passes": 5}) == 21.0
    assert [format_seconds(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]


class _Tick(Pass):
    op = "test.progress_tick"
    kind = "data"
    output = Artifact("Ticks")

    def run(self, ctx, node, inputs):
        bar = ctx.progress(2, "ticks")
        bar.update(2)
        bar.close()
        return PassResult(data={})


def test_executor_reports_every_pass():
    base.register(_Tick)
    try:
        g = nx.DiGraph()
        for nid in ("n1", "n2"):
            g.add_node(nid, id=nid, op="test.progress_tick", kind="data", params={}, label=nid,
                       cost={"forward_passes": 1})
        out = io.StringIO()
        display = PlanProgress("plain", stream=out, heartbeat_s=0)
        ctx = PassContext(loaded=None, seed=0, progress=display.bar)
        Executor(ctx, display=display).run(g)
        display.close()
    finally:
        base.REGISTRY.pop("test.progress_tick", None)
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["[1/2]", "[2/2]"]
    assert lines[0].startswith("[1/2] test.progress_tick (n1)")


def test_a_pass_without_a_known_total_counts_down_its_own_estimate():
    clock = Clock()
    d, _ = _display(clock)
    d.begin([("a", "data.queries", "", {"forward_passes": 9}),
             ("b", "edit.x", "", {"forward_passes": 99})])
    d.start("a")
    clock.t = 10.0
    d.finish("a", 10.0, cached=False)  # 1 s a unit
    d.start("b")
    d.bar(0, "caching states").update(500)  # steps, but no total: no fraction
    clock.t = 40.0
    assert d.eta_seconds() == 70.0  # 100 units at 1 s, 30 s of them spent
    clock.t = 400.0
    assert d.eta_seconds() == 0.0
