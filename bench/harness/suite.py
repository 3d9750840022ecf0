"""Run a benchmark suite: every method on every policy of the grid, plus the cost curves."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import api
from .grid import METHODS, PolicySpec, applies_to, cost_policies, method_params, policy_grid
from .machine import describe_machine, load_average
from .metrics import summarize
from .page import SCHEMA
from .runner import RunOutcome, apply_once, verified_items

Log = Callable[[str], None]
# Methods whose `apply` cost is measured against the number of targets: the default and the
# published Neural Gate.
COST_METHODS = ("refusal_patch", "neural_gate")


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True, ensure_ascii=False)
        fh.write("\n")
    os.replace(tmp, path)


def chosen_gate(report: dict[str, Any] | None) -> tuple[float | None, int | None]:
    """(gate size / hidden size, layer) that neural_gate chose, from its report's localization."""
    loc = (report or {}).get("localization") or {}
    layer = loc.get("layer")
    layer = int(layer) if isinstance(layer, (int, float)) else None
    dims = loc.get("gate dims")
    fraction = None
    if isinstance(dims, str) and " of " in dims:
        size, _, total = dims.partition(" of ")
        try:
            fraction = int(size) / int(total)
        except (ValueError, ZeroDivisionError):
            fraction = None
    return fraction, layer


def pass_seconds(timing: dict[str, Any] | None) -> dict[str, float]:
    """Seconds per pass family (probe, localize, gate, verify, ...) plus model load and total."""
    if not timing:
        return {}
    out: dict[str, float] = {}
    if timing.get("model_load_s") is not None:
        out["model_load"] = float(timing["model_load_s"])
    for node in timing.get("passes") or []:
        family = str(node.get("op", "other")).split(".", 1)[0]
        out[family] = round(out.get(family, 0.0) + float(node.get("seconds") or 0.0), 3)
    if timing.get("total_s") is not None:
        out["total"] = float(timing["total_s"])
    return out


def search_record(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """A self-configuring method's search, from its report's `edits`: the targets, how many
    configurations it trained and in how long, the one it chose and its selection numbers."""
    for edit in (report or {}).get("edits") or []:
        search = edit.get("search") if isinstance(edit, dict) else None
        if not isinstance(search, dict) or not search.get("trials"):
            continue
        trials = search["trials"]
        chosen = search.get("chosen")
        best = trials[chosen] if isinstance(chosen, int) and 0 <= chosen < len(trials) else {}
        return {
            "method": edit.get("method"),
            "met": search.get("met"),
            "stopped": search.get("stopped"),
            "seconds": search.get("seconds"),
            "edit_seconds": edit.get("seconds"),
            "trials": len(trials),
            "chosen": chosen,
            "chosen_config": search.get("chosen_config"),
            "method_block": search.get("method_block"),
            "targets": search.get("targets"),
            "selection": search.get("selection"),
            "selection_metrics": {k: v for k, v in (best.get("metrics") or {}).items()
                                  if not k.startswith(("n:", "n_"))},
            "selection_n": {k[2:]: v for k, v in (best.get("metrics") or {}).items()
                            if k.startswith("n:")},
            "failed": [sorted(t.get("failed") or {}) for t in trials],
            "units": edit.get("units_selected"),
        }
    return None


def run_record(outcome: RunOutcome, params: dict[str, object], seed: int, spec: PolicySpec
               ) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "policy": outcome.policy,
        "method": outcome.method,
        "params": params,
        "exit_code": outcome.exit_code,
        "status": outcome.status,
        "wall_s": round(outcome.wall_s, 3),
        "peak_rss_mb": round(outcome.peak_rss_mb, 1),
    }
    rep = outcome.report
    if rep is not None:
        items = verified_items(outcome.out_dir)
        rec["summary"] = summarize(rep, items=items, attributes=spec.attributes, seed=seed)
        rec["items"] = len(items)
        rec["timing"] = pass_seconds(rep.get("timing"))
        patch = dict(rep.get("patch") or {})
        patch.pop("per_layer", None)
        rec["patch"] = patch
        rec["localization"] = rep.get("localization")
        rec["metrics"] = rep.get("metrics")
        search = search_record(rep)
        if search:
            rec["search"] = search
    else:
        rec["error"] = outcome.stderr_tail
    return rec


def source_state(root: Path | None = None) -> dict[str, Any]:
    """The commit the library ran from and the library files that differed from it, if git can
    say: a results file from a working tree names what it measured."""
    import subprocess

    root = root or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = (git("rev-parse", "HEAD") or "").strip() or None
    changed = git("status", "--porcelain", "--", "gatelang", "stdlib")
    return {"commit": commit,
            "changed": [line[3:] for line in (changed or "").splitlines() if line.strip()]}


def _header(suite: str, model: str, seed: int, options: dict[str, Any], notes: str = ""
            ) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "suite": suite,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": describe_machine(),
        "model": model,
        "seed": seed,
        "gatelang_version": api.gatelang_version(),
        "stdlib_version": api.stdlib_version(),
        "source": source_state(),
        "notes": notes,
        "options": options,
        "policies": [],
        "runs": [],
        "cost": {},
    }


def run_methods(
    policies: Sequence[PolicySpec],
    methods: Sequence[str],
    *,
    results: dict[str, Any],
    out_path: Path,
    work_dir: Path,
    model: str,
    seed: int,
    quick: bool,
    threads: int | None,
    options: dict[str, Any],
    log: Log,
) -> None:
    """Every method on every policy; the results file is rewritten after each run."""
    t_start = time.perf_counter()
    for spec in policies:
        results["policies"].append(spec.to_json())
        fraction = layer = None
        for method in [m for m in METHODS if m in methods and applies_to(m, spec)]:
            params = method_params(method, quick=quick, gate_fraction=fraction, layer=layer)
            log(f"[bench] {spec.id} / {method} {params or ''}")
            outcome = apply_once(spec, method, params, work_dir=work_dir, model=model,
                                 seed=seed, options=options, threads=threads)
            if method == "neural_gate":
                fraction, layer = chosen_gate(outcome.report)
            rec = run_record(outcome, params, seed, spec)
            results["runs"].append(rec)
            results.setdefault("machine", {}).setdefault("load_average", []).append(
                load_average())
            log(f"[bench]   exit {outcome.exit_code}, {outcome.wall_s:.1f} s, "
                f"{outcome.peak_rss_mb:.0f} MiB" + ("" if rec.get("summary") else
                                                    f"\n{outcome.stderr_tail}"))
            results["duration_s"] = round(time.perf_counter() - t_start, 1)
            write_json_atomic(out_path, results)


def run_cost_targets(
    subject_names: Sequence[str],
    counts: Sequence[int],
    *,
    results: dict[str, Any],
    out_path: Path,
    work_dir: Path,
    model: str,
    seed: int,
    quick: bool,
    threads: int | None,
    options: dict[str, Any],
    log: Log,
    methods: Sequence[str] = ("neural_gate",),
) -> None:
    """`apply` wall time and peak memory as the number of targets grows."""
    points = results["cost"].setdefault("apply_vs_targets", [])
    for spec in cost_policies(subject_names, counts):
        for method in methods:
            # the grid already ran this exact policy (to a patch, or to a search's stop): reuse it
            done = next((r for r in results["runs"] if r["policy"] == spec.id
                         and r["method"] == method and (r.get("summary") or r.get("exit_code")
                                                        == 3)), None)
            if done is not None:
                nt = ((done.get("summary") or {}).get("after", {}).get("neurons_touched")
                      or {}).get("value")
                points.append({"method": method, "targets": len(spec.subjects),
                               "wall_s": done["wall_s"], "peak_rss_mb": done["peak_rss_mb"],
                               "exit_code": done["exit_code"], "timing": done.get("timing"),
                               "neurons_touched": nt})
                continue
            params = method_params(method, quick=quick)
            log(f"[bench] cost {spec.id} / {method}")
            outcome = apply_once(spec, method, params, work_dir=work_dir / "cost", model=model,
                                 seed=seed, options=options, threads=threads)
            patch = (outcome.report or {}).get("patch") or {}
            nt = None
            if outcome.report is None and outcome.exit_code == 3:
                log(f"[bench]   stopped before verification: {outcome.stderr_tail[-300:]}")
            if patch.get("neurons_total"):
                nt = patch.get("neurons_touched", 0) / patch["neurons_total"]
            point = {
                "method": method,
                "targets": len(spec.subjects),
                "wall_s": round(outcome.wall_s, 3),
                "peak_rss_mb": round(outcome.peak_rss_mb, 1),
                "exit_code": outcome.exit_code,
                "timing": pass_seconds((outcome.report or {}).get("timing")),
                "neurons_touched": nt,
            }
            if outcome.report is None:
                point["error"] = outcome.stderr_tail
            points.append(point)
            write_json_atomic(out_path, results)


def run_suite(
    *,
    quick: bool,
    methods: Sequence[str],
    model: str,
    seed: int,
    out_path: Path,
    work_dir: Path,
    threads: int | None,
    options: dict[str, Any],
    with_cost: bool,
    log: Log = print,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    suite = "quick" if quick else "full"
    results = _header(suite, model, seed, options)
    names = api.subject_names(seed)
    policies = policy_grid(names, quick=quick)
    if with_cost:
        log("[bench] compile + plan timing")
        results["cost"]["compile_plan"] = api.compile_plan_curve(names, quick=quick)
        write_json_atomic(out_path, results)
    if with_cost:
        try:
            results["cost"]["probe_overhead"] = api.probe_overhead(model, seed)
        except api.Unavailable as exc:
            log(f"[bench] probe overhead not measured: {exc}")
        write_json_atomic(out_path, results)
    run_methods(policies, methods, results=results, out_path=out_path, work_dir=work_dir,
                model=model, seed=seed, quick=quick, threads=threads, options=options,
                log=log)
    if with_cost:
        counts = (1,) if quick else (1, 5, 20, 48)
        run_cost_targets(names, counts, results=results, out_path=out_path, work_dir=work_dir,
                         model=model, seed=seed, quick=quick, threads=threads,
                         options=options, log=log,
                         methods=[m for m in COST_METHODS if m in methods])
    results["duration_s"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(out_path, results)
    return results
