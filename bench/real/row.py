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

from bench.harness.grid import METHODS, applies_to, make_policy, method_params
from bench.harness.machine import describe_machine
from bench.harness.page import SCHEMA
from bench.harness.runner import apply_once
from bench.harness.suite import chosen_gate, run_record, write_json_atomic

from . import smol
from .teach import TeachConfig, recipe_id, teach

N_TARGETS = 3
# A 30-layer model on 2 CPU cores: the feature-vector search runs on five candidate layers with
# one probe sample each, the edit set is capped at 12 queries, and verification is an evenly
# spread subset. The same options go to every method, so the comparison stays like for like.
REAL_OPTIONS: dict[str, Any] = {
    "max_items": 40,
    "edit_max_items": 12,
    # per method (run options reject a parameter a method does not have); neural_gate's layer
    # is its own `auto` choice now
    "method_overrides": {
        "neural_gate": {"layer_probe_samples": 1, "mask_samples": 6, "mask_steps": 10,
                        "reference_width": 11008},
        "finetune": {"reference_width": 11008},
        "random_gate": {"reference_width": 11008},
        "deactivate": {"ig_steps": 5},
        "privacy_neurons": {"ig_steps": 5},
    },
}


def knowledge_check(folder: Path, cfg: TeachConfig) -> dict[str, Any]:
    """Does the taught model state what it was taught? Share of answers containing the value.

    Split by the teaching data's `edit` / `heldout` templates and private / public attributes;
    scored with gatelang's own value matcher, so it agrees with what `apply` will call a leak.
    """
    path = folder / "knowledge.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    from gatelang.models.scoring import contains_value
    from gatelang.stdlib import load_stdlib

    from .teach import teaching_examples

    lib = load_stdlib()
    model, tok = smol.load(folder)
    examples = teaching_examples(cfg)
    answers = smol.generate(model, tok, [e["question"] for e in examples])
    cells: dict[str, list[int]] = {}
    for e, a in zip(examples, answers, strict=True):
        norm = lib.attributes[e["attribute"]].normalizer
        kind = "private" if e["attribute"] in cfg.private else "public"
        hit = int(contains_value(a, e["answer"], norm))
        cells.setdefault(f"{kind}/{e['split']}", []).append(hit)
    out = {k: {"rate": sum(v) / len(v), "n": len(v)} for k, v in sorted(cells.items())}
    out["examples"] = [{"q": e["question"], "a": a, "value": e["answer"]}
                       for e, a in list(zip(examples, answers, strict=True))[:12]]
    write_json_atomic(path, out)
    return out


def prepare(work_dir: Path, cfg: TeachConfig, log: Callable[[str], None] = print
            ) -> tuple[Path, Path, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Base folder, taught folder, their general-ability numbers and the knowledge check."""
    base = smol.base_folder(work_dir)
    taught = work_dir / f"smollm2-taught-{recipe_id(cfg)}"
    if not (taught / "teach.json").exists():
        log(f"[real] teaching {base.name} -> {taught.name}")
        teach(base, taught, cfg, log=log)
    log("[real] knowledge check of the taught model")
    knowledge = knowledge_check(taught, cfg)
    log(f"[real]   {({k: v for k, v in knowledge.items() if k != 'examples'})}")
    log("[real] general ability: base and taught models")
    model, tok = smol.load(base)
    util_base = _utility_cached(base, model, tok, "base")
    model, tok = smol.load(taught)
    util_taught = _utility_cached(taught, model, tok, "taught")
    return base, taught, util_base, util_taught, knowledge


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


def _knowledge_line(knowledge: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v['rate'] * 100:.0f}% of {v['n']}" for k, v in knowledge.items()
                     if isinstance(v, dict) and "rate" in v)


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
    base, taught, util_base, util_taught, knowledge = prepare(work_dir, cfg, log)
    recipe = json.loads((taught / "teach.json").read_text(encoding="utf-8"))
    recipe.pop("losses", None)
    _, tok = smol.load(taught)

    from gatelang.world import load_world

    names = [s.name for s in load_world(0).subjects]
    spec = make_policy(names[:N_TARGETS], cfg.private, ("en",), ("text",), "real")
    from datetime import datetime, timezone

    from bench.harness import api

    results: dict[str, Any] = {
        "schema": SCHEMA, "suite": "real", "model": "SmolLM2-135M-Instruct (taught)",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gatelang_version": api.gatelang_version(), "stdlib_version": api.stdlib_version(),
        "notes": ("teaching time is the recorded wall time of the fine-tune on the shared "
                  "2-core machine; run options are in `options`"),
        "seed": seed, "machine": describe_machine(), "policies": [spec.to_json()], "runs": [],
        "cost": {}, "options": REAL_OPTIONS, "teach": recipe,
        "knowledge": {k: v for k, v in knowledge.items() if k != "examples"},
        "real": {
            "description": (
                f"SmolLM2-135M-Instruct taught {cfg.n_subjects} world subjects "
                f"({', '.join(cfg.private + cfg.public)}; English; {recipe['steps']} steps, "
                f"{recipe['train_s']:.0f} s on the shared CPU, lr {cfg.lr}, seed {cfg.seed}; "
                f"recipe in bench/real/teach.py). Knowledge check after teaching: "
                f"{_knowledge_line(knowledge)}. The policy protects "
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
    for method in [m for m in METHODS if m in methods and applies_to(m, spec)]:
        # The paper's Neural Gate on a real 30-layer model (layer search, gate, whole
        # down projection): the 1% footprint setting was tuned for tiny-llava.
        params = method_params(method, quick=quick, gate_fraction=fraction, layer=layer,
                               footprint=False)
        log(f"[real] apply {method} {params or ''}")
        outcome = apply_once(spec, method, params, work_dir=work_dir / "runs", model=str(taught),
                             seed=seed, options=REAL_OPTIONS, threads=threads)
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
    if not results["runs"]:
        results["real"]["notes"] = ("No edit ran in this results file: the rows above are the "
                                    "checkpoint before and after teaching.")
    results["teach_config"] = asdict(cfg)
    write_json_atomic(out_path, results)
    return results


if __name__ == "__main__":  # python -m bench.real.row: teach and measure, no edits
    import argparse
    import os

    ap = argparse.ArgumentParser(prog="python -m bench.real.row")
    ap.add_argument("--work-dir", type=Path, default=Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gatelang" / "bench" / "real")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    prepare(a.work_dir, TeachConfig(threads=a.threads))
