"""`audit`: how much an unedited model leaks what a policy protects, with no edit made.

An audit is the first thing a privacy team runs: it shows which protected values the model
discloses today, by language, modality and split, and that the locality and utility checks
`apply` will hold it to are answerable in the first place.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatelang.measure.run import Cell, ItemResult, aggregate, evaluate, summarize
from gatelang.measure.sets import build_eval_sets

AUDIT_SCHEMA_VERSION = 1


@dataclass
class AuditReport:
    policy_source: str
    policies: list[str]
    model: dict[str, Any]
    stdlib_version: str
    world_seed: int
    cells: list[Cell]
    items: list[ItemResult]
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    # With `attacks`: the attack passes' metric records on the unedited model (docs/robustness.md)
    attacks: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, *, items: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": AUDIT_SCHEMA_VERSION,
            "policy": self.policy_source,
            "policies": self.policies,
            "model": self.model,
            "stdlib_version": self.stdlib_version,
            "world_seed": self.world_seed,
            "summary": self.summary,
            "cells": [c.to_dict() for c in self.cells],
            "notes": self.notes,
            "timing": self.timing,
        }
        if self.attacks:
            out["attacks"] = self.attacks
        if items:
            out["items"] = [r.to_dict() for r in self.items]
        return out

    def table(self) -> str:
        """The per-cell table printed on the terminal."""
        head = ("role", "subjects", "attribute", "lang", "modality", "split", "leak", "refuse", "acc", "n")
        rows = [head]
        for c in self.cells:
            rows.append((c.role, c.subject_set, c.attribute, c.language, c.modality, c.split,
                         _pct(c.leak_rate), _pct(c.refusal_rate), _pct(c.accuracy), str(c.n)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        right = {6, 7, 8, 9}
        lines = []
        for n, r in enumerate(rows):
            cells = [r[i].rjust(widths[i]) if i in right else r[i].ljust(widths[i]) for i in range(len(r))]
            lines.append("  ".join(cells).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def attack_table(self) -> str:
        """Per attack: the share of answers that state a protected value on the unedited model,
        and the share of known questions with at least one such answer."""
        pooled: dict[str, dict[str, float]] = {}
        for m in self.attacks:
            if m["metric"] not in ("leak_rate", "leak_any") or not m["n"]:
                continue
            acc = pooled.setdefault(m["split"], {})
            acc[m["metric"] + "_hits"] = acc.get(m["metric"] + "_hits", 0) + m["after"] * m["n"]
            acc[m["metric"] + "_n"] = acc.get(m["metric"] + "_n", 0) + m["n"]
        rows = [("attack", "leak (answers)", "n", "questions leaking at least once")]
        for split, acc in pooled.items():
            rate = acc["leak_rate_hits"] / acc["leak_rate_n"]
            anyq = (f"{100 * acc['leak_any_hits'] / acc['leak_any_n']:.1f}%"
                    if acc.get("leak_any_n") else "–")
            rows.append((split, _pct(rate), str(int(acc["leak_rate_n"])), anyq))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def headline(self) -> str:
        parts = []
        t = self.summary.get("target")
        if t:
            parts.append(f"targets leak {_pct(t['leak_rate'])} and are refused {_pct(t['refusal_rate'])} "
                         f"(n={t['n']})")
        for role, label in (("locality", "locality accuracy"), ("utility", "utility accuracy")):
            s = self.summary.get(role)
            if s:
                parts.append(f"{label} {_pct(s['accuracy'])} (n={s['n']})")
        return "; ".join(parts)

    def write(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """`audit.json` (cells and summary) and `audit_items.jsonl` (every answer), atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary = out / "audit.json"
        items = out / "audit_items.jsonl"
        _atomic_write(summary, json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")
        _atomic_write(items, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in self.items))
        return [summary, items]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def audit(
    policy: Any,
    model: Any = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    batch_size: int = 16,
    max_new_tokens: int = 24,
    include_edit: bool = False,
    target_per_cell: int | None = None,
    locality_per_cell: int | None = 8,
    utility_per_cell: int | None = 16,
    world_seed: int = 0,
    progress: bool = True,
    attacks: bool = False,
    attack_items: int | None = None,
) -> AuditReport:
    """Measure a policy's targets, locality and utility on an unedited model.

    `policy` is a path or a checked `PolicyFile`; `model` an alias, path, hub id or an
    already `LoadedModel` (default: the built-in tiny-llava). With `attacks`, the attack passes
    `apply` verifies with (docs/robustness.md) also run on the unedited model: how much leaks
    today under each attack, against which an edit is later measured.
    """
    from gatelang.ir import load
    from gatelang.models import load_model
    from gatelang.stdlib import load_stdlib
    from gatelang.world import load_world

    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    pf = load(policy) if isinstance(policy, (str, os.PathLike)) else policy
    if hasattr(model, "adapter") and hasattr(model, "weights_sha256"):
        loaded = model
    else:
        t = time.perf_counter()
        loaded = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        timing["load_s"] = time.perf_counter() - t
    caps = loaded.capabilities()
    world = load_world(world_seed)
    t = time.perf_counter()
    sets = build_eval_sets(
        pf, world, languages=caps.languages, modalities=caps.modalities,
        include_edit=include_edit, target_per_cell=target_per_cell,
        locality_per_cell=locality_per_cell, utility_per_cell=utility_per_cell,
    )
    timing["sets_s"] = time.perf_counter() - t
    t = time.perf_counter()
    results = evaluate(loaded, sets.all(), batch_size=batch_size, max_new_tokens=max_new_tokens,
                       progress=progress)
    timing["generate_s"] = time.perf_counter() - t
    attack_records: list[dict[str, Any]] = []
    if attacks:
        t = time.perf_counter()
        attack_records = _attacks(pf, loaded, world, attack_items)
        timing["attacks_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - t0
    n_tokens = len(results)
    if n_tokens:
        timing["items_per_s"] = n_tokens / max(timing["generate_s"], 1e-9)
    return AuditReport(
        policy_source=str(getattr(pf, "source", policy)),
        policies=[p.name for p in getattr(pf, "policies", ())],
        model={"name": loaded.name, "family": loaded.family, "weights_sha256": loaded.weights_sha256,
               "device": str(loaded.device), "dtype": str(loaded.dtype).replace("torch.", "")},
        stdlib_version=load_stdlib().version,
        world_seed=world_seed,
        cells=aggregate(results),
        items=results,
        summary=summarize(results),
        notes=sets.notes,
        timing={k: round(v, 3) for k, v in timing.items()},
        attacks=attack_records,
    )


def _attacks(pf: Any, loaded: Any, world: Any, attack_items: int | None) -> list[dict[str, Any]]:
    """The plan's attack nodes, run with every edit replaced by "no edit"."""
    from gatelang.passes import PassContext, PassResult
    from gatelang.planner import plan
    from gatelang.runtime.executor import Executor

    the_plan = plan(pf, loaded.capabilities())
    edits = {n.id: PassResult(data={"method": "none"}) for n in the_plan.by_kind("edit")}
    targets = [n.id for n in the_plan.by_kind("verify") if n.op not in _PLAIN_CHECKS]
    if not targets:
        return []
    ctx = PassContext(loaded=loaded, world=world,
                      options={"attack_items": attack_items} if attack_items else {})
    run = Executor(ctx).run(the_plan, only=targets, overrides=edits)
    out: list[dict[str, Any]] = []
    for nid in targets:
        node = the_plan.node(nid)
        for m in run.results[nid].data.get("metrics", []):
            out.append({**m, "policy": node.policy})
    return out


_PLAIN_CHECKS = ("verify.refusal", "verify.locality", "verify.utility",
                 "verify.identity_inference")
