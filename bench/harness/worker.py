"""One `apply` in its own process: `python -m bench.harness.worker POLICY --model M --out DIR`.

The harness calls the public Python API here rather than the `gatelang` command so that
options the CLI does not expose (e.g. `max_items` for quick runs) can be passed, while each run
still gets a fresh process for honest wall time and peak memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.harness.worker")
    p.add_argument("policy")
    p.add_argument("--model", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--options", default="{}", help="JSON dict passed as apply(options=...)")
    args = p.parse_args(argv)
    import gatelang
    from gatelang.errors import GatelangError

    kwargs = dict(model=args.model, out=args.out, device=args.device, seed=args.seed,
                  options=json.loads(args.options), progress=False)
    # Runs live in WORK/<policy>/<method>/out; a marker in WORK remembers that a method's pass
    # results cannot be cached, so later runs of that method skip the doomed first attempt.
    out = Path(args.out).resolve()
    marker = out.parents[2] / f".no-cache-{out.parent.name}"
    try:
        if marker.exists():
            print("note: this method's results cannot be cached; running without the cache",
                  file=sys.stderr)
            result = gatelang.apply(args.policy, cache=False, **kwargs)
        else:
            try:
                result = gatelang.apply(args.policy, **kwargs)
            except TypeError as exc:
                # A pass whose result the cache cannot store (not JSON-serialisable) still
                # runs without the cache; the run then has only the report's cells, no items.
                if "JSON serializable" not in str(exc):
                    raise
                print(f"note: result cache failed ({exc}); re-running without the cache",
                      file=sys.stderr)
                marker.touch()
                result = gatelang.apply(args.policy, cache=False, **kwargs)
    except GatelangError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    print(result.report.get("summary", ""))
    return int(result.exit_code)


if __name__ == "__main__":
    sys.exit(main())
