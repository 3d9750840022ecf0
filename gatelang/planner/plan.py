"""The plan: a DAG of typed pass nodes with content-hash ids, and its serialisations.

A node's id hashes its kind, op, params, its parents' ids (with edge roles) and the stdlib
version, so ids are stable across runs and machines and a changed policy changes exactly the
nodes whose inputs changed. JSON is sorted and versioned; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, Literal

import networkx as nx
from pydantic import BaseModel, ConfigDict

from gatelang.errors import Diagnostic, DiagnosticError, Span
from gatelang.planner.capabilities import ModelCapabilities

SCHEMA_VERSION = 2
ID_LENGTH = 16  # hex digits of the sha256 content hash shown as a node id

Kind = Literal["data", "localize", "edit", "verify", "report"]
KINDS: tuple[str, ...] = ("data", "localize", "edit", "verify", "report")
# Ops every plan may use; each method adds its own localize and edit ops (`known_ops`).
SHARED_OPS: tuple[str, ...] = (
    "data.queries",
    "verify.refusal",
    "verify.locality",
    "verify.utility",
    "verify.identity_inference",
    "report.requirements",
)


def known_ops() -> tuple[str, ...]:
    """The shared ops, the attack checks and every registered method's localize and edit ops."""
    from gatelang.methods import methods
    from gatelang.planner.build import ATTACKS

    ops = list(SHARED_OPS) + [f"verify.{a}" for a in ATTACKS]
    for spec in methods().values():
        for op in (spec.localize, *spec.edit.values()):
            if op and op not in ops:
                ops.append(op)
    return tuple(ops)


class Cost(BaseModel):
    """Estimated work: sequence-level forward/backward passes and prompt+answer tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    forward_passes: int = 0
    backward_passes: int = 0
    tokens: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            forward_passes=self.forward_passes + other.forward_passes,
            backward_passes=self.backward_passes + other.backward_passes,
            tokens=self.tokens + other.tokens,
        )


class PlanNode(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    kind: Kind
    op: str
    params: dict[str, Any]
    label: str
    policy: str | None = None
    span: Span | None = None
    cost: Cost = Cost()


# -- hashing ---------------------------------------------------------------------------------

_BIG = 64  # lists longer than this are hashed once and referenced by digest


@lru_cache(maxsize=4096)
def _digest_tuple(items: tuple) -> str:
    # Only reached for long lists; the key is the tuple itself, so equal lists hash once.
    return "sha256:" + hashlib.sha256(
        json.dumps(list(items), ensure_ascii=False, separators=(",", ":")).encode()
    ).hexdigest()


def _canonical(value: Any) -> Any:
    """A JSON-ready form for hashing in which long string lists become their digest.

    Ten thousand subject names appear in many nodes of a large plan; hashing them once keeps
    planning linear in the policy's size rather than in size times node count.
    """
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) > _BIG:
            try:
                return _digest_tuple(tuple(value))
            except TypeError:  # unhashable items (dicts): hash them in place
                pass
        return [_canonical(v) for v in value]
    return value


def node_id(kind: str, op: str, params: dict[str, Any], parents: list[tuple[str, str]],
            stdlib_version: str) -> str:
    payload = {
        "kind": kind,
        "op": op,
        "params": _canonical(params),
        "parents": sorted([role, pid] for role, pid in parents),
        "stdlib": stdlib_version,
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# -- the plan --------------------------------------------------------------------------------


class Plan:
    """A typed wrapper around the networkx DAG (`graph`); nodes hold a `PlanNode` under "node"."""

    def __init__(self, graph: nx.DiGraph, *, model: ModelCapabilities, stdlib_version: str,
                 stdlib_sha256: str, source: str, policies: tuple[str, ...]) -> None:
        self.graph = graph
        self.model = model
        self.stdlib_version = stdlib_version
        self.stdlib_sha256 = stdlib_sha256
        self.source = source
        self.policies = policies

    # -- access ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def __contains__(self, nid: object) -> bool:
        return nid in self.graph

    def node(self, nid: str) -> PlanNode:
        return self.graph.nodes[nid]["node"]

    def nodes(self) -> list[PlanNode]:
        """Nodes in a deterministic topological order (ties broken by id)."""
        return [self.node(n) for n in nx.lexicographical_topological_sort(self.graph)]

    def __iter__(self) -> Iterator[PlanNode]:
        return iter(self.nodes())

    def edges(self) -> list[tuple[str, str, str]]:
        return sorted((u, v, d["role"]) for u, v, d in self.graph.edges(data=True))

    def parents(self, nid: str) -> dict[str, list[str]]:
        """Parent ids by edge role, each role's parents in the order the planner drew them."""
        out: dict[str, list[str]] = {}
        preds = sorted(self.graph.predecessors(nid),
                       key=lambda p: (self.graph.edges[p, nid].get("order", 0), p))
        for p in preds:
            out.setdefault(self.graph.edges[p, nid]["role"], []).append(p)
        return out

    def by_op(self, op: str) -> list[PlanNode]:
        return [n for n in self.nodes() if n.op == op]

    def by_kind(self, kind: str) -> list[PlanNode]:
        return [n for n in self.nodes() if n.kind == kind]

    def total_cost(self) -> Cost:
        total = Cost()
        for n in self.nodes():
            total = total + n.cost
        return total

    # -- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "stdlib_version": self.stdlib_version,
            "stdlib_sha256": self.stdlib_sha256,
            "model": self.model.model_dump(mode="json"),
            "policies": list(self.policies),
            "nodes": [_jsonable(n.model_dump(mode="json")) for n in self.nodes()],
            "edges": [{"from": u, "to": v, "role": r,
                       "order": self.graph.edges[u, v].get("order", 0)}
                      for u, v, r in self.edges()],
            "total_cost": self.total_cost().model_dump(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, verify: bool = True) -> Plan:
        """Rebuild a plan; with `verify`, every id is recomputed so a hand-edited plan fails."""
        where = "plan"
        try:
            version = data["schema_version"]
            if version != SCHEMA_VERSION:
                raise ValueError(f"unsupported plan schema_version {version!r}")
            g = nx.DiGraph()
            nodes = [PlanNode.model_validate(n) for n in data["nodes"]]
            for n in nodes:
                g.add_node(n.id, node=n)
            for e in data["edges"]:
                if e["from"] not in g or e["to"] not in g:
                    raise ValueError(f"edge {e['from']} -> {e['to']} names an unknown node")
                g.add_edge(e["from"], e["to"], role=e["role"], order=int(e.get("order", 0)))
            if not nx.is_directed_acyclic_graph(g):
                raise ValueError("the plan has a cycle")
            plan = cls(g, model=ModelCapabilities.model_validate(data["model"]),
                       stdlib_version=data["stdlib_version"],
                       stdlib_sha256=data["stdlib_sha256"], source=data["source"],
                       policies=tuple(data["policies"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DiagnosticError([Diagnostic("G005", f"malformed plan JSON: {exc}", None)]) \
                from None
        if verify:
            for n in plan.nodes():
                parents = [(r, p) for r, ps in plan.parents(n.id).items() for p in ps]
                expect = node_id(n.kind, n.op, n.params, parents, plan.stdlib_version)
                if expect != n.id:
                    raise DiagnosticError([Diagnostic(
                        "G005", f"{where}: node {n.id} does not match its content "
                        f"(expected id {expect}); the plan was edited", None)])
        return plan

    @classmethod
    def from_json(cls, text: str, *, verify: bool = True) -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DiagnosticError([Diagnostic(
                "G005", f"malformed plan JSON: {exc.msg}",
                Span.point("<plan>", exc.lineno, exc.colno))]) from None
        if not isinstance(data, dict):
            raise DiagnosticError([Diagnostic("G005", "malformed plan JSON: not an object",
                                              None)])
        return cls.from_dict(data, verify=verify)
