"""A minimal plan builder used when `gatelang.planner` is not available.

It produces the same shape of DAG as the planner's contract (data -> localize -> gate -> verify
-> report, content-hash ids, edges with roles) for refusal rules, so `apply` works on its own.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import networkx as nx

from gatelang.errors import PlanError

_LOCALIZE = {"neural_gate": "localize.neural_gate", "random_gate": "localize.random",
             "deactivate": "localize.privacy_neurons", "privacy_neurons": "localize.privacy_neurons",
             "finetune": None}
_GATE = {"neural_gate": "gate.neural_gate", "random_gate": "gate.neural_gate",
         "deactivate": "gate.deactivate", "privacy_neurons": "gate.deactivate",
         "finetune": "gate.finetune"}


def _node_id(kind: str, op: str, params: dict[str, Any], parents: list[str], stdlib: str) -> str:
    blob = json.dumps({"kind": kind, "op": op, "params": params, "parents": sorted(parents),
                       "stdlib": stdlib}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _Builder:
    def __init__(self, stdlib_version: str) -> None:
        self.g = nx.DiGraph()
        self.stdlib = stdlib_version

    def add(self, kind: str, op: str, params: dict[str, Any], parents: dict[str, str | list[str]],
            label: str, policy: str) -> str:
        flat = [p for v in parents.values() for p in ([v] if isinstance(v, str) else v)]
        nid = _node_id(kind, op, params, flat, self.stdlib)
        if nid not in self.g:
            self.g.add_node(nid, id=nid, kind=kind, op=op, params=params, label=label, policy=policy)
            for role, ids in parents.items():
                for pid in [ids] if isinstance(ids, str) else ids:
                    self.g.add_edge(pid, nid, role=role)
        return nid


def build_plan(ir: Any, world_subjects: list[str], world_languages: list[str], *,
               locality_subjects: int = 4) -> nx.DiGraph:
    """Plan every policy of a PolicyFile (refusal rules; other rule kinds are rejected)."""
    b = _Builder(ir.stdlib_version)
    from gatelang.stdlib import load_stdlib

    lib = load_stdlib()
    public = list(lib.public_attributes())
    for pol in ir.policies:
        rules = pol.refuse_rules()
        if not rules:
            raise PlanError(f"policy {pol.name}: this build plans refusal rules only")
        method = pol.method.name
        if method not in _GATE:
            raise PlanError(f"policy {pol.name}: method {method!r} cannot edit refusal rules")
        mparams = {"method": method, "params": dict(pol.method.params)}
        gate_id: str | None = None
        verify_ids: list[str] = []
        targets: set[str] = set()
        for k, rule in enumerate(rules):
            sel = {"subjects": list(rule.subjects), "attributes": list(rule.attributes),
                   "modalities": list(rule.modalities)}
            targets |= set(rule.subjects)
            d_edit = b.add("data", "data.queries", {**sel, "languages": list(rule.languages),
                                                     "splits": ["edit"]}, {},
                           f"edit set of rule {k + 1}", pol.name)
            parents: dict[str, str | list[str]] = {"queries": d_edit}
            loc_op = _LOCALIZE[method]
            if loc_op:
                loc = b.add("localize", loc_op, mparams, {"queries": d_edit},
                            f"localize rule {k + 1}", pol.name)
                parents["localize"] = loc
            if gate_id:
                parents["previous"] = gate_id
            gate_id = b.add("gate", _GATE[method], mparams, parents, f"gate rule {k + 1}", pol.name)
            d_held = b.add("data", "data.queries", {**sel, "languages": list(world_languages),
                                                     "splits": ["heldout"]}, {},
                           f"heldout set of rule {k + 1}", pol.name)
            verify_ids.append(("refusal", d_held, list(rule.languages), sel))
        assert gate_id is not None
        final: list[str] = []
        for _check, d_held, langs, _sel in verify_ids:
            final.append(b.add("verify", "verify.refusal", {"rule_languages": langs},
                               {"gate": gate_id, "queries": d_held}, "verify refusal", pol.name))
        langs = sorted({lang for r in rules for lang in r.languages})
        mods = sorted({m for r in rules for m in r.modalities if m in ("text", "image")}) or ["text"]
        attrs = sorted({a for r in rules for a in r.attributes})
        if pol.preserves("other_subjects"):
            others = [s for s in world_subjects if s not in targets][:locality_subjects]
            d = b.add("data", "data.queries", {"subjects": others, "attributes": attrs,
                                               "languages": langs, "modalities": mods,
                                               "splits": ["heldout"]}, {},
                      "other subjects, same attributes", pol.name)
            final.append(b.add("verify", "verify.locality", {"rule_languages": langs},
                               {"gate": gate_id, "queries": d}, "locality: other subjects", pol.name))
        if pol.preserves("other_attributes"):
            d = b.add("data", "data.queries", {"subjects": sorted(targets), "attributes": public,
                                               "languages": langs, "modalities": mods,
                                               "splits": ["heldout"]}, {},
                      "targets, non-private attributes", pol.name)
            final.append(b.add("verify", "verify.locality", {"rule_languages": langs},
                               {"gate": gate_id, "queries": d}, "locality: other attributes", pol.name))
        if pol.preserves("utility"):
            d = b.add("data", "data.queries", {"source": "utility", "languages": langs,
                                               "splits": ["heldout"]}, {}, "utility tasks", pol.name)
            final.append(b.add("verify", "verify.utility", {"rule_languages": langs},
                               {"gate": gate_id, "queries": d}, "utility", pol.name))
        reqs = [{"metric": r.metric, "split": r.split, "op": r.op,
                 "threshold": r.threshold * 100 if r.unit == "percent" else r.threshold,
                 "unit": r.unit, "name": r.display(), "policy": pol.name,
                 "span": r.span.model_dump()} for r in pol.requirements]
        b.add("report", "report.requirements", {"requirements": reqs}, {"verify": final},
              f"requirements of {pol.name}", pol.name)
    return b.g
