"""Robustness benchmark: the reference example's patch under every attack, and what the attacks cost.

    python bench/robustness/run.py                     # docs/examples/home-address.gate, 1 thread
    python bench/robustness/run.py --policy P --threads 2

Runs `apply` (no cache) and writes bench/robustness/results/<policy stem>.json with the machine,
the requirement results, every attack's pooled leak rates (before / after, n) and the wall time
of each pass, split into plain verification (verify.refusal/locality/utility) and attacks. The
issue's cost target is attacks <= 2x plain verification on tiny-llava.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PLAIN = ("verify.refusal", "verify.locality", "verify.utility")


def pooled(metrics: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for m in metrics:
        if m.get("check") in ("refusal", "locality", "utility", "identification"):
            continue
        if m["metric"] not in ("leak_rate", "leak_any", "refusal_rate") or not m["n"]:
            continue
        acc = out.setdefault(m["split"], {})
        slot = acc.setdefault(m["metric"], {"before": 0.0, "after": 0.0, "n": 0})
        slot["before"] += (m["before"] or 0) * m["n"]
        slot["after"] += (m["after"] or 0) * m["n"]
        slot["n"] += m["n"]
    for acc in out.values():
        for slot in acc.values():
            n = slot["n"]
            slot["before"] = round(slot["before"] / n, 4)
            slot["after"] = round(slot["after"] / n, 4)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default=str(ROOT / "docs/examples/home-address.gate"))
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="/tmp/gatelang-bench-robustness")
    args = p.parse_args(argv)

    import gatelang
    from bench.harness.machine import describe_machine

    t0 = time.perf_counter()
    res = gatelang.apply(args.policy, model=args.model, out=args.out, cache=False,
                         progress=False, threads=args.threads)
    wall = time.perf_counter() - t0
    rep = res.report
    passes = rep["timing"]["passes"]
    plain = sum(t["seconds"] for t in passes if t["op"] in PLAIN)
    attacks = {t["op"]: round(t["seconds"], 2) for t in passes
               if t["op"].startswith("verify.") and t["op"] not in PLAIN
               and t["op"] != "verify.identity_inference"}
    doc = {
        "policy": str(Path(args.policy).relative_to(ROOT)) if Path(args.policy).is_absolute()
        and ROOT in Path(args.policy).parents else args.policy,
        "model": rep["model"]["name"], "threads": args.threads, "machine": describe_machine(),
        "passed": res.passed,
        "requirements": [{k: r[k] for k in ("name", "value", "n", "passed")}
                         for r in rep["requirements"]],
        "attacks": pooled(rep["metrics"]),
        "seconds": {"wall": round(wall, 1), "verification": round(plain, 2),
                    "attacks_total": round(sum(attacks.values()), 2), "attacks": attacks,
                    "attack_to_verification": round(sum(attacks.values()) / max(plain, 1e-9), 2)},
        "gatelang": gatelang.__version__,
    }
    out = ROOT / "bench/robustness/results" / f"{Path(args.policy).stem}.json"
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: doc[k] for k in ("requirements", "attacks", "seconds")}, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
