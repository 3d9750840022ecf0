"""Benchmark: `check` + `plan` of a generated policy with 10,000 subjects and 50 rules.

Run: python bench/lang/run.py [--subjects 10000] [--rules 50] [--repeat 5] [--out FILE]

The process pins itself to one CPU core, generates the policy (inline subject lists, so the
parser does the work a large file really costs), then times parse + check and plan separately,
several times, and writes the medians with a description of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ATTRS = ["home_address", "phone_number", "email", "date_of_birth", "national_id",
         "medical_condition"]
LANGS = ["en", "zh", "es"]
MODS = ["text", "image"]


def generate(n_subjects: int, n_rules: int, n_sets: int = 10, per_policy: int = 5) -> str:
    lines = ["gatelang 1", "use stdlib.attributes", "use stdlib.languages", ""]
    size = n_subjects // n_sets
    for s in range(n_sets):
        names = ", ".join(f'"Person {s}-{i:05d}"' for i in range(size))
        lines.append(f"subjects group_{s} = [{names}]")
    rule = 0
    policy = 0
    while rule < n_rules:
        lines += ["", f"policy p{policy} {{", f'  description "generated policy {policy}"']
        for _ in range(min(per_policy, n_rules - rule)):
            attrs = ", ".join(ATTRS[(rule + k) % len(ATTRS)] for k in range(2))
            sets = ", ".join(f"group_{(rule + k) % n_sets}" for k in range(2))
            langs = ", ".join(LANGS[: 1 + rule % 2])
            mods = ", ".join(MODS[: 1 + rule % 2])
            lines.append(f"  refuse {attrs} about {sets} in {langs} via {mods}")
            rule += 1
        lines += ["  keep other_subjects, other_attributes, utility",
                  "  require {", "    refusal(heldout) >= 95%", "    leakage(heldout) <= 5%",
                  "    locality >= 95%", "  }", "}"]
        policy += 1
    return "\n".join(lines) + "\n"


def machine() -> dict[str, object]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores_used": 1, "cores_visible": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--subjects", type=int, default=10_000)
    ap.add_argument("--rules", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("result.json"))
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from gatelang.ir import check
    from gatelang.planner import plan

    text = generate(args.subjects, args.rules)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "generated.gate"
        path.write_text(text, encoding="utf-8")
        check(path)  # warm-up: builds the parser tables and loads the stdlib once
        checks, plans, totals = [], [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = check(path)
            t1 = time.perf_counter()
            assert result.ir is not None, result.render()
            p = plan(result.ir)
            t2 = time.perf_counter()
            checks.append(t1 - t0)
            plans.append(t2 - t1)
            totals.append(t2 - t0)
    n_rules = sum(len(pol.rules) for pol in result.ir.policies)
    n_subjects = sum(len(s.members) for s in result.ir.subject_sets.values())
    record = {
        "benchmark": "check + plan of a generated policy",
        "subjects": n_subjects,
        "rules": n_rules,
        "policies": len(result.ir.policies),
        "file_bytes": len(text.encode()),
        "plan_nodes": len(p),
        "repeat": args.repeat,
        "check_s_median": round(statistics.median(checks), 4),
        "plan_s_median": round(statistics.median(plans), 4),
        "total_s_median": round(statistics.median(totals), 4),
        "total_s_max": round(max(totals), 4),
        "target_s": 1.0,
        "meets_target": statistics.median(totals) < 1.0,
        "machine": machine(),
    }
    args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=2, sort_keys=True))
    return 0 if record["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
