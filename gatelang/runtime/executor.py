"""Execute a plan: contracts checked first, then topological order, content-addressed cache,
progress with ETA, determinism.

Each node runs with its own seed derived from the run seed and the node id, so a node gives the
same result whether its siblings ran in this process or came from the cache; that is what makes a
resumed run byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch

from gatelang.errors import GatelangError, PlanError
from gatelang.passes.base import NodeSpec, Pass, PassContext, PassResult, get_pass
from gatelang.runtime.cache import Cache, cache_key
from gatelang.runtime.fingerprint import code_fingerprint
from gatelang.runtime.progress import PlanProgress

# Passes that produce the patch run with this many intra-op threads, whatever the run's thread
# count: a floating-point reduction's order depends on how many threads split it, and the patch
# must be byte-identical across `--threads` settings (and machines with different core counts).
EDIT_THREADS = 1
PINNED_KINDS = ("localize", "edit")


def node_seed(seed: int, node_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{node_id}".encode()).hexdigest()[:8], 16)


def set_determinism(seed: int) -> None:
    torch.manual_seed(seed)
    import random

    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _node(graph: nx.DiGraph, nid: str) -> Any:
    data = graph.nodes[nid]
    return data.get("node", data)


def plan_graph(plan: Any) -> nx.DiGraph:
    """The plan's networkx DAG, whether given a Plan object or the graph itself."""
    if isinstance(plan, nx.DiGraph):
        return plan
    g = getattr(plan, "graph", None)
    if isinstance(g, nx.DiGraph):
        return g
    raise PlanError(f"cannot execute a {type(plan).__name__}: it has no networkx graph")


def check_contracts(specs: list[NodeSpec]) -> dict[str, type[Pass]]:
    """Check every node against its pass's declared contract before anything runs.

    Each op must be registered with the node's kind; every incoming role must be declared, with
    a parent whose pass produces an artifact the role accepts; every required role must be drawn
    and a single-valued role drawn once. Returns the pass class of each node.
    """
    classes = {s.id: get_pass(s.op) for s in specs}
    problems: list[str] = []
    for s in specs:
        cls = classes[s.id]
        if cls.kind != s.kind:
            problems.append(f"{s.op} ({s.id}): the pass is a {cls.kind} pass, the node a {s.kind}")
        for role, parents in s.parents.items():
            want = cls.inputs.get(role)
            if want is None:
                problems.append(f"{s.op} ({s.id}): input role {role!r} is not one the pass reads "
                                f"({', '.join(cls.inputs) or 'none'})")
                continue
            if len(parents) > 1 and not want.many:
                problems.append(f"{s.op} ({s.id}): role {role!r} is drawn {len(parents)} times")
            for pid in parents:
                made = classes[pid].output if pid in classes else None
                if made is not None and made not in want.accepts:
                    accepts = " or ".join(a.name for a in want.accepts)
                    problems.append(f"{s.op} ({s.id}): role {role!r} needs {accepts}, its "
                                    f"parent {pid} makes {made.name}")
        for role, want in cls.inputs.items():
            if want.required and role not in s.parents:
                problems.append(f"{s.op} ({s.id}): required input {role!r} is not in the plan")
    if problems:
        raise PlanError("the plan breaks pass contracts:\n  " + "\n  ".join(problems))
    return classes


def node_specs(plan: Any) -> list[NodeSpec]:
    """Plan nodes as NodeSpecs in a deterministic topological order."""
    g = plan_graph(plan)
    if not nx.is_directed_acyclic_graph(g):
        raise PlanError("the plan has a cycle")
    specs = []
    for nid in nx.lexicographical_topological_sort(g):
        data = g.nodes[nid]
        node = data.get("node", data)
        parents: dict[str, list[str]] = {}
        for parent in sorted(g.predecessors(nid),
                             key=lambda p, nid=nid: (g.edges[p, nid].get("order", 0), p)):
            role = g.edges[parent, nid].get("role") or "input"
            parents.setdefault(str(role), []).append(str(parent))
        params = _attr(node, "params", {}) or {}
        specs.append(
            NodeSpec(
                id=str(_attr(node, "id", nid)),
                op=str(_attr(node, "op")),
                kind=str(_attr(node, "kind", "")),
                params=dict(params),
                label=str(_attr(node, "label", "") or ""),
                parents={k: tuple(v) for k, v in parents.items()},
            )
        )
    return specs


@dataclass
class NodeRun:
    id: str
    op: str
    label: str
    seconds: float
    cached: bool


@dataclass
class RunResult:
    results: dict[str, PassResult]
    nodes: list[NodeRun] = field(default_factory=list)
    specs: list[NodeSpec] = field(default_factory=list)

    def by_op(self, op: str) -> list[tuple[NodeSpec, PassResult]]:
        return [(s, self.results[s.id]) for s in self.specs if s.op == op]


class Executor:
    def __init__(
        self,
        ctx: PassContext,
        *,
        cache: Cache | None = None,
        fingerprint: str = "",
        log: Callable[[str], None] | None = None,
        display: PlanProgress | None = None,
    ) -> None:
        self.ctx = ctx
        self.cache = cache or Cache(None)
        self.fingerprint = fingerprint
        self.log = log or (lambda _msg: None)
        # The whole-plan display (pass i of N, ETA); the passes' own bars should come from
        # `display.bar` through the context so both show in one place.
        self.display = display

    def run(
        self,
        plan: Any,
        *,
        only: Iterable[str] | None = None,
        overrides: dict[str, PassResult] | None = None,
    ) -> RunResult:
        """Run the plan (or the nodes in `only` and what they need).

        `overrides` supplies results for some nodes instead of running them (e.g. a gate node's
        weights read back from a patch); their ancestors are then not needed.
        """
        specs = node_specs(plan)
        graph = plan_graph(plan)
        classes = check_contracts(specs)
        kinds = {s.id: s.kind for s in specs}
        overrides = dict(overrides or {})
        if only is not None:
            keep: set[str] = set()
            stack = list(only)
            while stack:
                nid = stack.pop()
                if nid in keep:
                    continue
                keep.add(nid)
                if nid not in overrides:
                    stack.extend(graph.predecessors(nid))
            specs = [s for s in specs if s.id in keep]
        out = RunResult(results={}, specs=specs)
        self.ctx.attach_run(specs, out.results)  # lets verify passes batch their siblings' asks
        display = self.display
        if display is not None:
            display.begin([(s.id, s.op, s.label, _attr(_node(graph, s.id), "cost"))
                           for s in specs])
        for spec in specs:
            if display is not None:
                display.start(spec.id)
            if spec.id in overrides:
                out.results[spec.id] = overrides[spec.id]
                out.nodes.append(NodeRun(spec.id, spec.op, spec.label, 0.0, True))
                if display is not None:
                    display.finish(spec.id, 0.0, cached=True)
                continue
            cls = classes[spec.id]
            # The executor's own code is part of the key: how it hands a node its inputs is
            # part of what the node computes (a fix there must not be masked by old results).
            key = cache_key(spec.id, fingerprint=self.fingerprint,
                            version=f"{cls.op}@{code_fingerprint(cls.__module__)}"
                                    f"@{code_fingerprint(__name__)}")
            hit = self.cache.get(key)
            if hit is not None:
                out.results[spec.id] = hit
                out.nodes.append(NodeRun(spec.id, spec.op, spec.label, hit.seconds, True))
                self.log(f"  {spec.op:<24} cached")
                if display is not None:
                    display.finish(spec.id, hit.seconds, cached=True)
                continue
            inputs = {}
            # Weight edits reach every descendant of an edit, not only its children, so a
            # report node sees what the patch changes without the plan drawing extra edges.
            # They come first, oldest edit first, and the node's own parents last: where two
            # edits set the same tensor, `weights_of` keeps the later one, which must be the
            # edit the node verifies (a second policy's edit includes the first's values).
            direct = {pid for ids in spec.parents.values() for pid in ids}
            ancestors = nx.ancestors(graph, spec.id)
            for aid in nx.lexicographical_topological_sort(graph.subgraph(ancestors)):
                if aid not in direct and kinds.get(aid) == "edit" and aid in out.results:
                    inputs[f"upstream.{aid}"] = out.results[aid]
            for role, parent_ids in spec.parents.items():
                for i, pid in enumerate(parent_ids):
                    inputs[role if len(parent_ids) == 1 else f"{role}.{i}"] = out.results[pid]
            set_determinism(node_seed(self.ctx.seed, spec.id))
            t0 = time.perf_counter()
            threads = torch.get_num_threads()
            pin = spec.kind in PINNED_KINDS and threads != EDIT_THREADS
            if pin:
                torch.set_num_threads(EDIT_THREADS)
            try:
                result = cls().run(self.ctx, spec, inputs)
            except GatelangError:
                raise
            except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - needs a GPU
                raise GatelangError(f"{spec.op}: out of GPU memory ({exc})") from None
            finally:
                if pin:
                    torch.set_num_threads(threads)
            result.seconds = time.perf_counter() - t0
            missing = cls.output.missing(result)
            if missing:
                raise PlanError(f"{spec.op} ({spec.id}) returned a {cls.output.name} without "
                                f"{', '.join(missing)}")
            self.cache.put(key, result)
            out.results[spec.id] = result
            out.nodes.append(NodeRun(spec.id, spec.op, spec.label, result.seconds, False))
            self.log(f"  {spec.op:<24} {result.seconds:6.1f}s")
            if display is not None:
                display.finish(spec.id, result.seconds, cached=False)
        return out
