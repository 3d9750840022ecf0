"""The harness's only doorway into gatelang's Python API.

Everything the benchmark needs from the package (the world's subject names, compile and plan
timing, the probe overhead measurement) goes through here, so a change in the public API is
one edit in one file. `Unavailable` means a layer is missing, which the suite reports instead of
crashing.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .grid import LANGUAGES, PRIVATE_ATTRIBUTES, make_policy, render_gate

# Names docs/architecture.md guarantees are subjects of the world at seed 0 (used only when the
# world module cannot be imported, which limits the grid to 5 subjects).
_DOCUMENTED_SUBJECTS = ("Alice Okafor", "Chen Moreau", "Priya Raman", "Tomás Herrera", "王秀英")


class Unavailable(RuntimeError):
    """A part of gatelang the benchmark needs is not importable or not usable here."""


def gatelang_version() -> str:
    import gatelang

    return gatelang.__version__


def stdlib_version() -> str | None:
    try:
        from gatelang.stdlib import load_stdlib
    except ImportError:
        return None
    return load_stdlib().version


def subject_names(seed: int = 0) -> list[str]:
    """The world's subjects in its own (deterministic) order; targets are a prefix of this."""
    try:
        from gatelang.world import load_world
    except ImportError:
        return list(_DOCUMENTED_SUBJECTS)
    world = load_world(seed=seed)
    return [s.name for s in world.subjects]


def _multi_rule_source(names: Sequence[str], n_rules: int) -> tuple[str, int]:
    """A policy with `n_rules` distinct refuse rules (attribute x language), and its cell count."""
    combos = [(a, lang) for a in PRIVATE_ATTRIBUTES for lang in LANGUAGES][:n_rules]
    spec = make_policy(names, PRIVATE_ATTRIBUTES[:1], ("en",), ("text", "image"))
    base = render_gate(spec, "neural_gate").splitlines()
    start = next(i for i, line in enumerate(base) if line.strip().startswith("refuse "))
    rules = [f"  refuse {a} about targets in {lang} via text, image" for a, lang in combos]
    lines = base[:start] + rules + base[start + 4:]
    return "\n".join(lines), len(names) * len(combos) * 2


def _time_compile_plan(source: str, folder: Path, repeats: int) -> tuple[float, float]:
    """Best of `repeats` (a fresh file each time, so no cache keyed by path can help)."""
    import gatelang

    caps = gatelang.TINY_LLAVA_CAPABILITIES
    best_c = best_p = float("inf")
    for k in range(repeats):
        path = folder / f"policy_{k}.gate"
        path.write_text(source + f"# run {k}\n", encoding="utf-8")
        t0 = time.perf_counter()
        ir = gatelang.load(path)
        t1 = time.perf_counter()
        gatelang.plan(ir, caps)
        t2 = time.perf_counter()
        best_c, best_p = min(best_c, t1 - t0), min(best_p, t2 - t1)
    return best_c, best_p


def compile_plan_curve(names: Sequence[str], *, quick: bool) -> list[dict[str, Any]]:
    """Parse+check and plan time (best of 3) as the policy grows in subjects and in rules."""
    import gatelang

    try:
        gatelang.load, gatelang.plan, gatelang.TINY_LLAVA_CAPABILITIES  # noqa: B018
    except (AttributeError, ImportError) as exc:
        raise Unavailable(f"the language front end or planner is missing: {exc}") from exc
    points = []
    subjects = (1, 5, 20) if quick else (1, 5, 20, 48)
    rules = (1, 4) if quick else (1, 4, 12)
    with tempfile.TemporaryDirectory() as tmp:
        for n in subjects:
            for r in rules:
                if n > len(names):
                    continue
                source, cells = _multi_rule_source(names[:n], r)
                c, p = _time_compile_plan(source, Path(tmp), 3)
                points.append({"subjects": n, "rules": r, "cells": cells,
                               "compile_s": round(c, 5), "plan_s": round(p, 5),
                               "total_s": round(c + p, 5)})
    return points


def probe_overhead(model: str, seed: int, *, n_prompts: int = 48, batch_size: int = 16,
                   repeats: int = 3) -> dict[str, Any]:
    """Time of a forward pass with probe hooks at every decoder layer and MLP site, vs bare.

    The hooks keep only the subject token's row, as the probe pass does; the figure is the best
    of `repeats` over the same batches, so it measures the hooks, not the machine's noise.
    """
    try:
        import torch

        from gatelang.models import load_model
        from gatelang.models.generation import capture
        from gatelang.world import load_world
    except ImportError as exc:
        raise Unavailable(f"the models layer is missing: {exc}") from exc
    loaded = load_model(model, device="cpu")
    adapter = loaded.adapter
    world = load_world(seed=0)
    qs = world.queries(subjects=[s.id for s in world.subjects[:8]], attributes=["home_address"],
                       languages=["en"], modalities=["text"], splits=["heldout"])[:n_prompts]
    batches = [adapter.encode(qs[i:i + batch_size]) for i in range(0, len(qs), batch_size)]
    sites = [f"decoder_layer({i})" for i in range(adapter.num_layers)] + [
        f"mlp_act({i})" for i in range(adapter.num_layers)]

    def forward_all(hooked: bool) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for b in batches:
                idx = b.subject_index.clamp(min=0)
                rows = torch.arange(len(b))
                if hooked:
                    with capture(adapter, sites, reduce=lambda _n, t, idx=idx, rows=rows:
                                 t[rows, idx].clone()):
                        loaded.model(**b.model_inputs())
                else:
                    loaded.model(**b.model_inputs())
        return time.perf_counter() - t0

    forward_all(False)  # warm-up
    bare = min(forward_all(False) for _ in range(repeats))
    hooked = min(forward_all(True) for _ in range(repeats))
    return {"model": model, "prompts": len(qs), "batch_size": batch_size, "sites": len(sites),
            "bare_s": round(bare, 4), "hooked_s": round(hooked, 4),
            "overhead": round(hooked / bare - 1.0, 4)}
