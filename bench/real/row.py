"""The real-checkpoint row: SmolLM2-135M-Instruct, taught, then edited by each method.

Steps (each cached in the work directory, so a re-run redoes only what is missing):
1. convert the shipped GGUF checkpoint to a safetensors folder (`smol.base_folder`);
2. teach it a few world subjects (`teach.py`, recipe in its docstring and in `teach.json`);
3. measure general ability (factual QA, arithmetic, perplexity on bench/real/heldout_english.txt)
   of the base and the taught model;
4. for each method, `apply` a text-only policy on the taught model (targets: the first three
   taught subjects; their home address and phone number; English) and measure general ability
   again on the patched model. "Retained" counts only questions the taught model got right.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.harness.grid import METHODS, make_policy, method_params
from bench.harness.machine import describe_machine
from bench.harness.page import SCHEMA
from bench.harness.runner import apply_once
from bench.harness.suite import chosen_gate, run_record, write_json_atomic

from . import smol
from .teach import TeachConfig, teach

N_TARGETS = 3


def _utility_cached(folder: Path, model: Any, tok: Any, name: str) -> dict[str, Any]:
    path = folder / f"utility-{name}.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    res = smol.utility(model, tok).to_json()
    res["seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(path, res)
    return res


def _retained(after: dict[str, Any], before: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for kind in ("factual", "arithmetic"):
        b, a = before[f"{kind}_correct"], after[f"{kind}_correct"]
        known = [i for i, ok in enumerate(b) if ok]
        out[f"{kind}_retained"] = (sum(1 for i in known if a[i]) / len(known)) if known else None
    return out


def _row(name: str, util: dict[str, Any], taught: dict[str, Any] | None) -> dict[str, Any]:
    row = {"name": name, "factual": util["factual"], "arithmetic": util["arithmetic"],
           "perplexity": util["perplexity"]}
    if taught is not None:
        row.update(_retained(util, taught))
    return row


def run_real_row(*, methods: Sequence[str], out_path: Path, work_dir: Path, seed: int,
                 quick: bool, threads: int | None, log: Callable[[str], None] = print
                 ) -> dict[str, Any]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    t_start = time.perf_counter()
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg = TeachConfig(seed=seed, threads=threads)
    base = smol.base_folder(work_dir)
    taught = work_dir / f"smollm2-taught-s{cfg.n_subjects}-e{cfg.epochs}-seed{cfg.seed}"
    if not (taught / "teach.json").exists():
        log(f"[real] teaching {base.name} -> {taught.name}")
        teach(base, taught, cfg, log=log)
    recipe = json.loads((taught / "teach.json").read_text(encoding="utf-8"))
    recipe.pop("losses", None)

    log("[real] general ability: base and taught models")
    model, tok = smol.load(base)
    util_base = _utility_cached(base, model, tok, "base")
    model, tok = smol.load(taught)
    util_taught = _utility_cached(taught, model, tok, "taught")
    del model

    from gatelang.world import load_world

    names = [s.name for s in load_world(0).subjects]
    spec = make_policy(names[:N_TARGETS], cfg.private, ("en",), ("text",), "real")
    results: dict[str, Any] = {
        "schema": SCHEMA, "suite": "real", "model": "SmolLM2-135M-Instruct (taught)",
        "seed": seed, "machine": describe_machine(), "policies": [spec.to_json()], "runs": [],
        "cost": {}, "options": {}, "teach": recipe,
        "real": {
            "description": (
                f"SmolLM2-135M-Instruct taught {cfg.n_subjects} world subjects "
                f"({', '.join(cfg.private + cfg.public)}; English; {recipe['steps']} steps, "
                f"{recipe['train_s']:.0f} s, lr {cfg.lr}, seed {cfg.seed}); the policy protects "
                f"the first {N_TARGETS}. Factual QA ({len(util_base['factual_correct'])} "
                f"questions) and arithmetic ({len(util_base['arithmetic_correct'])}) are "
                "greedy answers checked for the expected word; *retained* is the share of "
                "questions the taught model answered correctly that the edited model still "
                "answers correctly. Perplexity is on bench/real/heldout_english.txt "
                "(2,269 words written for this benchmark)."),
            "rows": [_row("base (before teaching)", util_base, None),
                     _row("taught (unedited)", util_taught, util_taught)],
        },
    }
    write_json_atomic(out_path, results)
    fraction = layer = None
    for method in [m for m in METHODS if m in methods]:
        params = method_params(method, quick=quick, gate_fraction=fraction, layer=layer)
        log(f"[real] apply {method} {params or ''}")
        outcome = apply_once(spec, method, params, work_dir=work_dir / "runs", model=str(taught),
                             seed=seed, options={"max_items": 48} if quick else {},
                             threads=threads)
        if method == "neural_gate":
            fraction, layer = chosen_gate(outcome.report)
        rec = run_record(outcome, params, seed, spec)
        results["runs"].append(rec)
        log(f"[real]   exit {outcome.exit_code}, {outcome.wall_s:.1f} s")
        patch = next((p for p in (outcome.out_dir / "patch.safetensors",
                                  outcome.out_dir / "patch.rejected.safetensors") if p.exists()),
                     None)
        if patch is not None:
            import gatelang

            loaded = gatelang.load_patch(str(taught), patch, device="cpu", allow_rejected=True)
            util = smol.utility(loaded.model, tok).to_json()
            results["real"]["rows"].append(_row(method, util, util_taught))
            del loaded
        results["duration_s"] = round(time.perf_counter() - t_start, 1)
        write_json_atomic(out_path, results)
    results["duration_s"] = round(time.perf_counter() - t_start, 1)
    results["teach_config"] = asdict(cfg)
    write_json_atomic(out_path, results)
    return results
