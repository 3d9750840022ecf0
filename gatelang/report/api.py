"""The public `apply`, `load_patch` and `verify_lock` entry points.

`apply` compiles a policy, plans it for the model, runs the plan through the runtime (cache in
``OUT/.gatelang-cache``), and writes the patch, report and lock. A run that misses a `require`
threshold still writes every artifact, but its patch is written as
``patch.rejected.safetensors`` and marked rejected in the report and lock, so nothing that
looks like a publishable patch exists for a failed run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gatelang.errors import EXIT_OK, EXIT_REQUIREMENT, GatelangError, ModelError
from gatelang.report.document import REPORT_SCHEMA_VERSION, write_documents
from gatelang.report.lock import LockError, package_versions, read_lock, sha256_file, write_lock
from gatelang.report.patch import (
    Patch,
    PatchError,
    apply_patch,
    make_patch,
    read_patch,
    write_patch,
)

ACCEPTED_PATCH = "patch.safetensors"
REJECTED_PATCH = "patch.rejected.safetensors"
CACHE_DIR = ".gatelang-cache"


@dataclass
class ApplyResult:
    passed: bool
    out_dir: Path
    report: dict[str, Any]
    patch_path: Path
    lock_path: Path
    files: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_REQUIREMENT


def _ir_sha256(ir: Any) -> str:
    dump = json.dumps(ir.semantic_dump(), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(dump.encode()).hexdigest()


def _policy_sha256(ir: Any, path: Path) -> str:
    """Hash of the entry file and every file the compiler read for it, in a stable order.

    ``ir.inputs`` lists imports at any depth and subject files (CSV, JSON, text), so editing a
    subject list or a nested import shows up as drift, not only editing the entry file. Names are
    hashed entry-relative so the lock does not depend on where the repository is checked out.
    """
    digest = hashlib.sha256()
    entry = Path(path)
    files = [(entry.name, entry)] + [(rel, entry.parent / rel) for rel in sorted(ir.inputs)]
    for rel, f in files:
        try:
            digest.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
        except OSError:
            digest.update(rel.encode() + b"\0missing\0")
    return digest.hexdigest()


def make_plan(ir: Any, loaded: Any, world: Any) -> Any:
    """The planner's DAG for this model; a built-in fallback when the planner is absent."""
    try:
        from gatelang import planner as _planner

        build = getattr(_planner, "build_plan", None) or getattr(_planner, "plan", None)
    except ImportError:
        build = None
    if build is not None:
        try:
            return build(ir, loaded.capabilities())
        except TypeError:
            pass
    from gatelang.runtime.plan_fallback import build_plan

    return build_plan(ir, [s.name for s in world.subjects], list(world.languages))


def _fingerprint(loaded: Any, seed: int, options: dict[str, Any]) -> str:
    opts = json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha256(
        f"{loaded.weights_sha256}|{seed}|{loaded.device.type}|{loaded.dtype}|{opts}".encode()
    ).hexdigest()


def _final_weights(run: Any) -> dict[str, torch.Tensor]:
    from gatelang.passes.base import weights_of

    weights: dict[str, torch.Tensor] = {}
    for spec in run.specs:
        if spec.kind == "gate" and spec.id in run.results:
            weights.update(weights_of({"gate": run.results[spec.id]}))
    return weights


def _headline(requirements: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, Any]:
    head: dict[str, Any] = {r["name"]: r["value"] for r in requirements}
    unseen = [m for m in metrics if m["split"] == "unseen_language" and m["metric"] == "refusal_rate"]
    n = sum(m["n"] for m in unseen)
    if n:
        head["refusal(unseen_language)"] = round(
            100 * sum((m["after"] or 0) * m["n"] for m in unseen) / n, 4)
    return head


def run_policy(
    policy: str | os.PathLike[str],
    *,
    model: str | None = None,
    device: str = "auto",
    seed: int = 0,
    cache_dir: Path | None = None,
    options: dict[str, Any] | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    loaded: Any = None,
    overrides_from_patch: Patch | None = None,
) -> dict[str, Any]:
    """Compile, plan and execute; returns the pieces `apply` and `verify_lock` assemble."""
    from gatelang.ir import load as load_ir
    from gatelang.models import load_model
    from gatelang.passes import PassContext
    from gatelang.runtime.cache import Cache
    from gatelang.runtime.executor import Executor, tqdm_progress
    from gatelang.world import load_world

    t0 = time.perf_counter()
    path = Path(policy)
    ir = load_ir(path)
    t_load = time.perf_counter()
    if loaded is None:
        loaded = load_model(model, device=device)
    load_s = time.perf_counter() - t_load
    torch.manual_seed(seed)
    world = load_world(seed=0)
    plan = make_plan(ir, loaded, world)
    opts = dict(options or {})
    ctx = PassContext(loaded=loaded, seed=seed, world=world, progress=tqdm_progress(progress),
                      options=opts)
    executor = Executor(ctx, cache=Cache(cache_dir), fingerprint=_fingerprint(loaded, seed, opts),
                        log=log)
    overrides = None
    only = None
    if overrides_from_patch is not None:
        from gatelang.passes import PassResult
        from gatelang.passes.base import WEIGHT_PREFIX
        from gatelang.runtime.executor import node_specs

        params = dict(loaded.model.named_parameters())
        weights = {}
        scratch = {e.name: params[e.name].detach().clone() for e in overrides_from_patch.edits
                   if e.name in params}
        for e in overrides_from_patch.edits:
            t = scratch[e.name]
            vals = e.values.to(t.dtype)
            if e.kind == "full":
                t.copy_(vals)
            elif e.kind == "rows":
                t[e.index] = vals
            else:
                t[:, e.index] = vals
            weights[WEIGHT_PREFIX + e.name] = t
        specs = node_specs(plan)
        overrides = {s.id: PassResult(data={"from_patch": True}, tensors=weights)
                     for s in specs if s.kind == "gate"}
        only = [s.id for s in specs if s.kind in ("verify", "report")]
    run = executor.run(plan, only=only, overrides=overrides)
    return {"ir": ir, "path": path, "loaded": loaded, "ctx": ctx, "run": run, "plan": plan,
            "load_s": load_s, "t0": t0}


def apply(
    policy: str | os.PathLike[str],
    model: str | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    seed: int = 0,
    cache: bool = True,
    options: dict[str, Any] | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> ApplyResult:
    """Edit the model so the policy holds, verify it, and write patch + report + lock to `out`.

    Raises DiagnosticError (exit 2) for an invalid policy, ModelError/GatelangError (exit 1) for
    other failures; a run whose requirements fail returns `passed=False` (exit 3).
    """
    path = Path(policy)
    if threads:
        # On a shared or small CPU, fewer intra-op threads than cores avoids oversubscription;
        # results do not depend on it beyond floating-point summation order.
        torch.set_num_threads(int(threads))
    out_dir = Path(out) if out is not None else Path("gatelang-out") / path.stem
    parts = run_policy(path, model=model, device=device, seed=seed,
                       cache_dir=(out_dir / CACHE_DIR) if cache else None, options=options,
                       progress=progress, log=log)
    return _write_artifacts(parts, out_dir, seed=seed, model_spec=model, options=options or {})


def _write_artifacts(parts: dict[str, Any], out_dir: Path, *, seed: int, model_spec: str | None,
                     options: dict[str, Any]) -> ApplyResult:
    ir, path, loaded, ctx, run = parts["ir"], parts["path"], parts["loaded"], parts["ctx"], parts["run"]
    from gatelang.passes.requirements import footprint

    weights = _final_weights(run)
    base = {name: ctx.base_value(name).detach().cpu() for name in weights}
    requirements: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    localization: dict[str, Any] = {}
    methods: list[str] = []
    for spec in run.specs:
        res = run.results[spec.id]
        if spec.op == "report.requirements":
            requirements.extend(res.data.get("requirements", []))
        if spec.kind == "verify":
            for m in res.data.get("metrics", []):
                metrics.append({**m, "node": spec.id, "label": spec.label})
        if spec.kind == "localize":
            d = res.data
            if "layer" in d:
                localization["layer"] = d["layer"]
            if "gate_size" in d:
                localization["gate dims"] = f"{d['gate_size']} of {d.get('hidden_size')}"
            if d.get("layer_shares"):
                localization["layer search (share of gated dims)"] = d["layer_shares"]
            if "universal" in d:
                localization["privacy-universal neurons"] = len(d["universal"])
                localization["language-specific neurons"] = {k: len(v) for k, v in d["specific"].items()}
        if spec.kind == "gate":
            methods.append(str(res.data.get("method", spec.op)))
    passed = bool(requirements) and all(r["passed"] for r in requirements)
    fp = footprint(ctx, weights)
    for r in requirements:
        check = {"refusal": "refusal", "leakage": "refusal", "locality": "locality",
                 "over_refusal": "locality", "utility": "utility", "utility_drop": "utility"}.get(r["metric"])
        if check:
            r["check_anchor"] = f"evidence-{check}"
            r["evidence"] = f"{check} rows"
    meta = {
        "base_model": loaded.name,
        "base_weights_sha256": loaded.weights_sha256,
        "policy": str(path),
        "policy_sha256": _policy_sha256(ir, path),
        "ir_sha256": _ir_sha256(ir),
        "stdlib_version": ir.stdlib_version,
        "seed": str(seed),
        "status": "accepted" if passed else "rejected",
        "methods": ",".join(sorted(set(methods))),
    }
    patch = make_patch(base, {k: v.detach().cpu() for k, v in weights.items()}, meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    patch_name = ACCEPTED_PATCH if passed else REJECTED_PATCH
    patch_path = out_dir / patch_name
    patch_sha = write_patch(patch_path, patch)
    stale = out_dir / (REJECTED_PATCH if passed else ACCEPTED_PATCH)
    if stale.exists():
        stale.unlink()  # never leave a patch that the new report does not describe
    total_s = time.perf_counter() - parts["t0"]
    timing = [{"op": n.op, "label": n.label, "node": n.id, "seconds": round(n.seconds, 3),
               "cached": n.cached} for n in run.nodes]
    rules = []
    for pol in ir.policies:
        for k, rule in enumerate(pol.rules, 1):
            text = " ".join(str(x) for x in (rule.kind, ", ".join(getattr(rule, "attributes", ())),
                                             "about", ", ".join(rule.subjects)))
            rules.append({"policy": pol.name, "rule": k, "text": text,
                          "requirements": [f"R{i}" for i, r in enumerate(requirements, 1)
                                           if r.get("policy") in (None, pol.name)]})
    n_ok = sum(1 for r in requirements if r["passed"])
    summary = (f"{n_ok} of {len(requirements)} requirements hold; "
               f"{fp['neurons_touched']} of {fp['neurons_total']} MLP units touched")
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "passed": passed,
        "status": "accepted" if passed else "rejected",
        "summary": summary,
        "policy": {"path": str(path), "name": ", ".join(p.name for p in ir.policies),
                   "sha256": meta["policy_sha256"], "ir_sha256": meta["ir_sha256"]},
        "model": {"name": loaded.name, "weights_sha256": loaded.weights_sha256,
                  "family": loaded.adapter.family, "num_layers": loaded.adapter.num_layers,
                  "hidden_size": loaded.adapter.hidden_size,
                  "intermediate_size": loaded.adapter.intermediate_size,
                  "device": str(loaded.device), "dtype": str(loaded.dtype).replace("torch.", "")},
        "stdlib": {"version": ir.stdlib_version, "sha256": ir.stdlib_sha256},
        "seed": seed,
        "methods": sorted(set(methods)),
        "requirements": requirements,
        "metrics": metrics,
        "rules": rules,
        "localization": localization,
        "patch": {
            "file": patch_name, "sha256": patch_sha, "status": meta["status"],
            "tensors": [{"name": e.name, "kind": e.kind, "shape": list(e.shape),
                         "count": 0 if e.index is None else int(e.index.numel())} for e in patch.edits],
            "neurons_touched": fp["neurons_touched"], "neurons_total": fp["neurons_total"],
            "neuron_unit": ("MLP intermediate units over all decoder layers whose down-projection column "
                            "or input rows changed"),
            "dims_touched": fp["dims_touched"], "dims_total": fp["dims_total"],
            "params_changed": patch.params_changed(), "per_layer": fp["per_layer"],
        },
        "timing": {"model_load_s": round(parts["load_s"], 3), "passes": timing,
                   "total_s": round(total_s, 3)},
        "options": options,
    }
    files = write_documents(out_dir, report)
    lock_path = out_dir / "gate.lock"
    write_lock(lock_path, {
        "policy": {"path": os.path.relpath(path.resolve(), out_dir.resolve()),
                   "sha256": meta["policy_sha256"], "ir_sha256": meta["ir_sha256"]},
        "stdlib": {"version": ir.stdlib_version, "sha256": ir.stdlib_sha256},
        "model": {"spec": model_spec, "name": loaded.name, "weights_sha256": loaded.weights_sha256},
        "patch": {"file": patch_name, "sha256": patch_sha, "status": meta["status"]},
        "seed": seed,
        "options": options,
        "packages": package_versions(),
        "headline": _headline(requirements, metrics),
        "passed": passed,
    })
    files.update({"gate.lock": str(lock_path), patch_name: str(patch_path)})
    return ApplyResult(passed, out_dir, report, patch_path, lock_path, files)


def load_patch(
    model: str | Any | None,
    patch: str | os.PathLike[str],
    *,
    device: str = "auto",
    allow_rejected: bool = False,
) -> Any:
    """Load a base model (spec or LoadedModel) with a patch applied; refuses a different base."""
    from gatelang.models import load_model

    p = read_patch(patch)
    if p.metadata.get("status") == "rejected" and not allow_rejected:
        raise PatchError(f"{patch}: this patch was rejected by its run's requirements; "
                         "pass allow_rejected (CLI: --allow-rejected) to load it anyway")
    loaded = model if hasattr(model, "weights_sha256") else load_model(model, device=device)
    apply_patch(loaded.model, p, base_sha256=loaded.weights_sha256, source=str(patch))
    return loaded


@dataclass
class VerifyResult:
    passed: bool
    drift: list[dict[str, Any]]
    requirements: list[dict[str, Any]]
    notes: list[str]

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_REQUIREMENT


def verify_lock(
    lock: str | os.PathLike[str],
    *,
    model: str | None = None,
    device: str = "auto",
    tolerance: float = 0.5,
    progress: bool | None = None,
) -> VerifyResult:
    """Re-run verification for a lock's policy on base + patch and report drift.

    Drift is any headline metric that moved by more than `tolerance` percentage points, or a
    changed policy / stdlib / base-weights / patch hash. Verification is recomputed (no cache).
    """
    lock_path = Path(lock)
    doc = read_lock(lock_path)
    root = lock_path.parent
    notes: list[str] = []
    drift: list[dict[str, Any]] = []
    policy_path = (root / doc["policy"]["path"]).resolve()
    if not policy_path.is_file():
        raise LockError(f"{lock_path}: the policy it names ({policy_path}) does not exist")
    patch_path = root / doc["patch"]["file"]
    if not patch_path.is_file():
        raise LockError(f"{lock_path}: the patch it names ({patch_path}) does not exist")
    if sha256_file(patch_path) != doc["patch"]["sha256"]:
        drift.append({"what": "patch", "expected": doc["patch"]["sha256"], "found": sha256_file(patch_path)})
    from gatelang.ir import load as load_ir
    from gatelang.stdlib import load_stdlib

    ir = load_ir(policy_path)
    if _policy_sha256(ir, policy_path) != doc["policy"]["sha256"]:
        drift.append({"what": "policy", "expected": doc["policy"]["sha256"],
                      "found": _policy_sha256(ir, policy_path)})
    lib = load_stdlib()
    if lib.sha256 != doc["stdlib"]["sha256"]:
        drift.append({"what": "stdlib", "expected": doc["stdlib"]["version"], "found": lib.version})
    from gatelang.models import load_model

    spec = model or doc["model"].get("spec")
    loaded = load_model(spec, device=device)
    if loaded.weights_sha256 != doc["model"]["weights_sha256"]:
        raise ModelError(f"{lock_path}: the lock was made on base weights "
                         f"{doc['model']['weights_sha256'][:12]}…, this model is "
                         f"{loaded.weights_sha256[:12]}…")
    patch = read_patch(patch_path)
    parts = run_policy(policy_path, loaded=loaded, seed=int(doc["seed"]), cache_dir=None,
                       options=doc.get("options") or {}, progress=progress,
                       overrides_from_patch=patch)
    run = parts["run"]
    requirements: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    for s in run.specs:
        if s.op == "report.requirements":
            requirements.extend(run.results[s.id].data.get("requirements", []))
        if s.kind == "verify":
            metrics.extend(run.results[s.id].data.get("metrics", []))
    now = _headline(requirements, metrics)
    for key, old in sorted(doc["headline"].items()):
        new = now.get(key)
        if old is None or new is None:
            if old != new:
                drift.append({"what": key, "expected": old, "found": new})
            continue
        if abs(float(new) - float(old)) > tolerance:
            drift.append({"what": key, "expected": old, "found": new})
    passed = not drift and all(r["passed"] for r in requirements)
    if doc.get("patch", {}).get("status") == "rejected":
        notes.append("the lock records a rejected patch")
        passed = False
    return VerifyResult(passed, drift, requirements, notes)


__all__ = ["ApplyResult", "GatelangError", "VerifyResult", "apply", "load_patch", "verify_lock"]
