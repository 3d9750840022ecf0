"""Execute a plan: topological order, content-addressed cache, progress with ETA, determinism.

Each node runs with its own seed derived from the run seed and the node id, so a node gives the
same result whether its siblings ran in this process or came from the cache; that is what makes a
resumed run byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch

from gatelang.errors import GatelangError, PlanError
from gatelang.passes.base import NodeSpec, PassContext, PassResult, Progress, get_pass
from gatelang.runtime.cache import Cache, cache_key


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


def plan_graph(plan: Any) -> nx.DiGraph:
    """The plan's networkx DAG, whether given a Plan object or the graph itself."""
    if isinstance(plan, nx.DiGraph):
        return plan
    for name in ("graph", "dag", "g"):
        g = getattr(plan, name, None)
        if isinstance(g, nx.DiGraph):
            return g
    raise PlanError(f"cannot execute a {type(plan).__name__}: it has no networkx graph")


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
        for parent in sorted(g.predecessors(nid)):
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


def tqdm_progress(enabled: bool | None = None) -> Callable[[int, str], Progress]:
    """A progress factory: one tqdm bar (with ETA) per pass, on stderr, only on a terminal."""
    from tqdm import tqdm

    show = sys.stderr.isatty() if enabled is None else enabled

    def make(total: int, desc: str) -> Progress:
        return tqdm(total=total, desc=desc, disable=not show, leave=False, file=sys.stderr,
                    dynamic_ncols=True)

    return make


class Executor:
    def __init__(
        self,
        ctx: PassContext,
        *,
        cache: Cache | None = None,
        fingerprint: str = "",
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.cache = cache or Cache(None)
        self.fingerprint = fingerprint
        self.log = log or (lambda _msg: None)

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
        for spec in specs:
            if spec.id in overrides:
                out.results[spec.id] = overrides[spec.id]
                out.nodes.append(NodeRun(spec.id, spec.op, spec.label, 0.0, True))
                continue
            cls = get_pass(spec.op)
            key = cache_key(spec.id, fingerprint=self.fingerprint, version=f"{cls.op}@{cls.version}")
            hit = self.cache.get(key)
            if hit is not None:
                out.results[spec.id] = hit
                out.nodes.append(NodeRun(spec.id, spec.op, spec.label, hit.seconds, True))
                self.log(f"  {spec.op:<24} cached")
                continue
            inputs = {}
            for role, parent_ids in spec.parents.items():
                for i, pid in enumerate(parent_ids):
                    inputs[role if len(parent_ids) == 1 else f"{role}.{i}"] = out.results[pid]
            # Weight edits reach every descendant of a gate, not only its children, so a
            # report node sees what the patch changes without the plan drawing extra edges.
            direct = {pid for ids in spec.parents.values() for pid in ids}
            for aid in sorted(nx.ancestors(graph, spec.id)):
                if aid not in direct and kinds.get(aid) == "gate" and aid in out.results:
                    inputs[f"upstream.{aid}"] = out.results[aid]
            set_determinism(node_seed(self.ctx.seed, spec.id))
            t0 = time.perf_counter()
            try:
                result = cls().run(self.ctx, spec, inputs)
            except GatelangError:
                raise
            except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - needs a GPU
                raise GatelangError(f"{spec.op}: out of GPU memory ({exc})") from None
            result.seconds = time.perf_counter() - t0
            self.cache.put(key, result)
            out.results[spec.id] = result
            out.nodes.append(NodeRun(spec.id, spec.op, spec.label, result.seconds, False))
            self.log(f"  {spec.op:<24} {result.seconds:6.1f}s")
        return out
