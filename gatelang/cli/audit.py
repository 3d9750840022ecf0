"""`gatelang audit`: measure how much a model leaks what a policy protects, without editing it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="measure leakage, refusal, locality and utility before any edit")
    p.add_argument("policy", help="policy file (.gate or .yaml)")
    p.add_argument("--model", default=None,
                   help="alias, local folder, .gguf file or cached hub id (default: tiny-llava)")
    p.add_argument("--json", action="store_true", help="print the cells and summary as JSON")
    p.add_argument("--out", default=None, help="write audit.json and audit_items.jsonl here")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a checkpoint's own modelling code to run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--include-edit", action="store_true",
                   help="also measure the templates an edit would train on")
    p.add_argument("--per-cell", type=int, default=None, metavar="N",
                   help="cap target items per cell (evenly spread; default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--attacks", action="store_true",
                   help="also run the attacks apply verifies with (docs/robustness.md): how much "
                        "leaks today under sampling, prefills, quantization, relearning, ...")
    p.add_argument("--attack-items", type=int, default=None, metavar="N",
                   help="protected questions per attack (default: the stdlib's, 24)")
    p.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    from gatelang.errors import GatelangError
    from gatelang.measure.audit import audit

    if args.batch_size < 1 or args.max_new_tokens < 1 or (args.per_cell is not None and args.per_cell < 1):
        raise _usage("--batch-size, --max-new-tokens and --per-cell must be positive")
    from gatelang.ir import load

    try:
        policy = load(args.policy)  # a bad policy is reported before any model is loaded
    except FileNotFoundError as exc:
        raise GatelangError(f"error: {exc}") from None
    if args.model is None:
        print("model: tiny-llava (built-in; pass --model to choose another)", file=sys.stderr)
    try:
        report = audit(
            policy, args.model, device=args.device, dtype=args.dtype,
            trust_remote_code=args.trust_remote_code, batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens, include_edit=args.include_edit,
            target_per_cell=args.per_cell, progress=not args.quiet and sys.stderr.isatty(),
            attacks=args.attacks, attack_items=args.attack_items,
        )
    except FileNotFoundError as exc:
        raise GatelangError(f"error: {exc}") from None
    written = report.write(args.out) if args.out else []
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        m = report.model
        print(f"audit of {report.policy_source} on {m['name']} ({m['family']}, {m['device']}, {m['dtype']})")
        if report.cells:
            print(report.table())
            print(report.headline())
        else:
            print("nothing to measure: the file has no refuse rules")
        if report.attacks:
            print("\nunder attack (unedited model; rows of questions it answers plainly):")
            print(report.attack_table())
        for note in report.notes:
            print(f"note: {note}")
        print(f"{len(report.items)} answers in {report.timing.get('total_s', 0):.1f}s")
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _usage(msg: str) -> Exception:
    from gatelang.errors import GatelangError

    err = GatelangError(f"error: {msg}")
    err.exit_code = 2
    return err
