"""A policy's localize pass alone, timed with each caching level, on one thread.

    python bench/floor/localize.py --model smollm2-135m --policy bench/floor/smollm2-neural-gate.gate \
        --options "$(cat options.json)" --modes window prefix

The floor table (`run.py`) runs the whole plan, verification included, which on SmolLM2 takes
far longer than the localize pass being tuned; this runs only the localize node and the data
nodes it reads. Modes (each in the same process, on the same loaded model):

- `window`: the current code: frozen prefixes and, where the model allows, the prompt's keys
  and values cached with only the changed window run per step (`models.prefix.FrozenWindow`);
- `prefix`: frozen prefixes only (windows switched off), the code before windows;
- `uncached`: every step a forward through the whole model.

`--layer-candidates` replaces the layers `layer auto` searches (the benchmark's real row
searched 6, 10, 14, 18 and 22 of SmolLM2's 30 through a run option that neural_gate's config no
longer has; without it the search covers every layer but the first and last).

Printed and written (`--out`, JSON): seconds per mode, and whether every mode's result (unit
set, or gate and its per-dim shares) equals the first mode's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.harness.machine import describe_machine, machine_line  # noqa: E402


@contextmanager
def searched(layers: list[int] | None) -> Iterator[None]:
    """`layer auto` searches `layers` during the block (all but the first and last: None)."""
    import gatelang.methods.neural_gate.localize as nl

    saved = nl.candidate_layers
    if layers:
        nl.candidate_layers = lambda n: [i for i in layers if 0 <= i < n]
    try:
        yield
    finally:
        nl.candidate_layers = saved


@contextmanager
def mode(name: str) -> Iterator[None]:
    """Switch the localize passes' caching to `name` for the block."""
    import gatelang.methods.deactivate.attribution as depn
    import gatelang.methods.deactivate.localize as dl
    import gatelang.methods.neural_gate.algorithm as ng
    import gatelang.methods.neural_gate.localize as nl

    saved: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, attr: str, value: Any) -> None:
        saved.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    try:
        if name in ("prefix", "uncached"):
            patch(depn, "frozen_windows", lambda *a, **k: None)
            patch(ng, "subject_window", lambda *a, **k: None)
        if name == "uncached":
            patch(dl, "decoder_stack", lambda adapter: None)
            patch(nl, "decoder_stack", lambda adapter: None)
        yield
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


def localize_once(policy: Path, loaded: Any, options: dict[str, Any]) -> tuple[float, Any]:
    """Seconds of the plan's localize node(s), and their results."""
    from gatelang.ir import load as load_ir
    from gatelang.passes import PassContext
    from gatelang.passes.base import pass_options
    from gatelang.planner import plan as build_plan
    from gatelang.runtime.cache import Cache
    from gatelang.runtime.executor import Executor, node_specs
    from gatelang.world import load_world

    torch.manual_seed(0)
    the_plan = build_plan(load_ir(policy), loaded.capabilities())
    ctx = PassContext(loaded=loaded, seed=0, world=load_world(seed=0),
                      options=pass_options(options))
    executor = Executor(ctx, cache=Cache(None), fingerprint="floor-localize")
    ids = [s.id for s in node_specs(the_plan) if s.kind == "localize"]
    result = executor.run(the_plan, only=ids)
    seconds = sum(n.seconds for n in result.nodes if n.id in ids)
    return seconds, [result.results[i] for i in ids]


def same(a: Any, b: Any) -> bool:
    for x, y in zip(a, b, strict=True):
        keys = ("units", "gate_dims", "layer", "layer_shares")
        if any(x.data.get(k) != y.data.get(k) for k in keys):
            return False
        for name, t in x.tensors.items():
            u = y.tensors[name]
            scale = float(u.float().abs().max()) or 1.0
            if float((t.float() - u.float()).abs().max()) > 1e-4 * scale:
                return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llava")
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--options", default="{}", help="PassOptions as JSON")
    parser.add_argument("--modes", nargs="+", default=["window", "prefix"],
                        choices=("window", "prefix", "uncached"))
    parser.add_argument("--layer-candidates", type=int, nargs="*", default=None)
    parser.add_argument("--load-note", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from gatelang.models import load_model

    torch.set_num_threads(1)
    loaded = load_model(args.model, device="cpu")
    options = json.loads(args.options)
    out: dict[str, Any] = {"model": args.model, "policy": str(args.policy), "options": options,
                           "threads": 1, "machine_line": machine_line(describe_machine()),
                           "layer_candidates": args.layer_candidates,
                           "load": args.load_note, "seconds": {}, "equal": {}}
    first = None
    for name in args.modes:
        with mode(name), searched(args.layer_candidates):
            seconds, results = localize_once(args.policy, loaded, options)
        out["seconds"][name] = round(seconds, 2)
        if first is None:
            first = results
        else:
            out["equal"][name] = same(results, first)
        print(f"{name:10s} {seconds:8.2f} s", flush=True)
    print(json.dumps(out["equal"]))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n",
                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
