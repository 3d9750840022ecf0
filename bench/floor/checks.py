"""The generation checks of a policy's verification alone (refusal, locality, utility), timed.

    python bench/floor/checks.py --model smollm2-135m --policy bench/floor/smollm2-deactivate.gate \
        --options "$(cat options.json)"

The verification the benchmark's real row measured (docs/benchmarks.md) was these three
passes; the attack passes came later and are timed by `run.py` with the rest of the plan. To
time the checks without running localize and edit, the plan's edit nodes are given a stand-in
edit: the last decoder layer's down projection with its first `--zeroed` columns set to zero,
so the edited model answers (and decodes) like the unedited one and the cache cannot reuse its
answers. One intra-op thread, no pass cache, answers decoded in this process only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.harness.machine import describe_machine, machine_line  # noqa: E402

CHECKS = ("verify.refusal", "verify.locality", "verify.utility")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llava")
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--options", default="{}", help="PassOptions as JSON")
    parser.add_argument("--zeroed", type=int, default=8)
    parser.add_argument("--load-note", default="")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from gatelang.ir import load as load_ir
    from gatelang.models import load_model
    from gatelang.passes import PassContext, PassResult
    from gatelang.passes.base import WEIGHT_PREFIX, pass_options
    from gatelang.planner import plan as build_plan
    from gatelang.runtime.cache import Cache
    from gatelang.runtime.executor import Executor, node_specs
    from gatelang.world import load_world

    torch.set_num_threads(1)
    loaded = load_model(args.model, device="cpu")
    options = json.loads(args.options)
    adapter = loaded.adapter
    module = adapter.module(f"down_proj({adapter.num_layers - 1})")
    name = next(n for n, p in loaded.model.named_parameters() if p is module.weight)
    weight = dict(loaded.model.named_parameters())[name].detach().clone()
    weight[:, : args.zeroed] = 0
    torch.manual_seed(0)
    the_plan = build_plan(load_ir(args.policy), loaded.capabilities())
    specs = node_specs(the_plan)
    ctx = PassContext(loaded=loaded, seed=0, world=load_world(seed=0),
                      options=pass_options(options))
    overrides = {s.id: PassResult(data={"method": "stand-in"},
                                  tensors={WEIGHT_PREFIX + name: weight})
                 for s in specs if s.kind == "edit"}
    ids = [s.id for s in specs if s.op in CHECKS]
    t0 = time.perf_counter()
    result = Executor(ctx, cache=Cache(None), fingerprint="floor-checks").run(
        the_plan, only=ids, overrides=overrides)
    wall = time.perf_counter() - t0
    rows = [{"op": n.op, "label": n.label, "wall_s": round(n.seconds, 2)}
            for n in result.nodes if n.id in ids]
    out = {"model": args.model, "policy": str(args.policy), "options": options, "threads": 1,
           "machine_line": machine_line(describe_machine()), "load": args.load_note,
           "checks": rows, "total_s": round(wall, 2),
           "answers": dict(ctx.answers.stats)}
    for r in rows:
        print(f"{r['op']:18s} {r['wall_s']:8.2f}  {r['label']}")
    print(f"total {wall:.2f} s, answers {ctx.answers.stats}")
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n",
                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
