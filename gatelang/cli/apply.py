"""`gatelang apply`, `gatelang patch apply` and `gatelang verify`: thin calls into the API."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _positive(text: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub: Any) -> None:
    p = sub.add_parser("apply", help="edit a model so a policy holds; write patch, report and lock")
    p.add_argument("policy", help="policy file (.gate or .yaml)")
    p.add_argument("--model", default=None, help="alias, local folder or cached hub id (default: tiny-llava)")
    p.add_argument("--out", "-o", default=None,
                   help="output folder, created if missing (its parent must exist; default: "
                   "gatelang-out/<policy file name without its extension>)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="auto",
                   help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive, default=None,
                   help="CPU threads for torch (default on CPU: half the cores, at most 4; the "
                   "thread count used is recorded in gate.lock)")
    p.add_argument("--batch-size", type=_positive, default=None,
                   help="questions decoded together in verification (default 32; answers do "
                   "not depend on it, memory and speed do)")
    p.add_argument("--budget", type=_positive, default=None, metavar="PASSES",
                   help="the most forward + backward passes the plan may be estimated at "
                   "(default: 1,000,000); a larger plan is refused before the model is loaded")
    p.add_argument("--no-cache", action="store_true", help="recompute every pass")
    p.add_argument("--json", action="store_true", help="print report.json's requirements and status")
    p.add_argument("--quiet", action="store_true",
                   help="no progress display (by default: a live display on a terminal, a "
                   "heartbeat line at least every 30 s otherwise)")
    p.set_defaults(func=_apply)

    pt = sub.add_parser("patch", help="work with patches")
    psub = pt.add_subparsers(dest="patch_command", metavar="SUBCOMMAND")
    pa = psub.add_parser("apply", help="load a base model with a patch (refuses a different base)")
    pa.add_argument("--model", default=None, help="the base model the patch was made for")
    pa.add_argument("--patch", required=True, help="patch.safetensors")
    pa.add_argument("--out", default=None,
                    help="save the patched model here: an HF folder `from_pretrained` loads, "
                    "with a model card (README.md: policy, measured requirements, lock digest)")
    pa.add_argument("--device", default="auto")
    pa.add_argument("--allow-rejected", action="store_true",
                    help="load a patch whose run failed its requirements")
    pa.add_argument("--allow-unknown-base", action="store_true",
                    help="apply a patch that does not name the base weights it was made for")
    pa.set_defaults(func=_patch_apply)
    pe = psub.add_parser("export", help="write a patch in a form other tools load",
                         description="Write a patch for use without gatelang. state-dict: a "
                         "safetensors file with the full new value of every tensor the patch "
                         "changes (only those), loadable with "
                         "model.load_state_dict(safetensors.torch.load_file(FILE), strict=False).")
    pe.add_argument("--model", default=None, help="the base model the patch was made for "
                    "(default: tiny-llava); it supplies the unchanged part of each tensor")
    pe.add_argument("--patch", required=True, help="patch.safetensors")
    pe.add_argument("--format", choices=("state-dict",), default="state-dict", dest="export_format")
    pe.add_argument("-o", "--out", required=True, help="the file to write (.safetensors)")
    pe.add_argument("--device", default="cpu")
    pe.add_argument("--allow-rejected", action="store_true",
                    help="export a patch whose run failed its requirements")
    pe.add_argument("--allow-unknown-base", action="store_true",
                    help="export a patch that does not name the base weights it was made for")
    pe.set_defaults(func=_patch_export)
    pt.set_defaults(func=lambda args: (pt.print_help(), 2)[1])

    pv = sub.add_parser("verify", help="re-run a lock's verification and report drift")
    pv.add_argument("--lock", required=True, help="gate.lock written by `gatelang apply`")
    pv.add_argument("--policy", default=None,
                    help="the policy file, when it is no longer at the path recorded in the lock "
                    "(relative to the lock), e.g. for a copied or archived output folder")
    pv.add_argument("--model", default=None, help="override the model spec recorded in the lock")
    pv.add_argument("--device", default="auto")
    pv.add_argument("--tolerance", type=float, default=0.5, help="allowed drift, in points")
    pv.add_argument("--json", action="store_true")
    pv.add_argument("--quiet", action="store_true", help="no progress display")
    pv.set_defaults(func=_verify)


def _fmt(v: Any, metric: str) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1f}{' pts' if metric == 'utility_drop' else '%'}"


def _apply(args: argparse.Namespace) -> int:
    from gatelang.driver import apply

    if args.model is None and not args.json:
        print("model: tiny-llava (built-in; pass --model to choose another)", file=sys.stderr)
    result = apply(args.policy, model=args.model, out=args.out, device=args.device,
                   dtype=args.dtype, seed=args.seed, cache=not args.no_cache,
                   progress=not args.quiet, threads=args.threads, budget=args.budget,
                   options={"batch_size": args.batch_size} if args.batch_size else None)
    rep = result.report
    if args.json:
        print(json.dumps({"status": rep["status"], "passed": rep["passed"],
                          "exit_code": result.exit_code, "requirements": rep["requirements"],
                          "patch": {k: rep["patch"][k] for k in ("file", "sha256", "status",
                                                                 "neurons_touched",
                                                                 "neurons_total",
                                                                 "params_changed")},
                          "out": str(result.out_dir), "files": result.files},
                         indent=2, ensure_ascii=False))
    else:
        for r in rep["requirements"]:
            mark = "ok  " if r["passed"] else "FAIL"
            print(f"  {mark} {r['name']:<32} {_fmt(r['value'], r['metric']):>10}  (n={r['n']})")
        p = rep["patch"]
        print(f"  patch: {p['neurons_touched']}/{p['neurons_total']} MLP units, "
              f"{p['params_changed']} parameters, {rep['timing']['total_s']:.1f}s")
        status = "accepted" if result.passed else "REJECTED (a requirement failed)"
        print(f"{status}: {result.out_dir}/{p['file']}, report.md, report.html, report.json, gate.lock")
    return result.exit_code


def _patch_apply(args: argparse.Namespace) -> int:
    from gatelang.driver import load_patch, save_patched

    loaded = load_patch(args.model, args.patch, device=args.device,
                        allow_rejected=args.allow_rejected,
                        allow_unknown_base=args.allow_unknown_base)
    if args.out:
        out = save_patched(loaded, args.patch, args.out)
        print(f"patched model written to {out} (model card: {out / 'README.md'})")
    else:
        print(f"patch applies cleanly to {loaded.name} ({loaded.weights_sha256[:12]}…)")
    return 0


def _patch_export(args: argparse.Namespace) -> int:
    from gatelang.driver import export_patch

    out = export_patch(args.model, args.patch, args.out, format=args.export_format,
                       device=args.device, allow_rejected=args.allow_rejected,
                       allow_unknown_base=args.allow_unknown_base)
    print(f"wrote {out}: load with model.load_state_dict(safetensors.torch.load_file(...), "
          "strict=False)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from gatelang.driver import verify_lock

    res = verify_lock(args.lock, model=args.model, device=args.device, tolerance=args.tolerance,
                      policy=args.policy, progress=not args.quiet)
    if args.json:
        print(json.dumps({"status": "ok" if res.passed else "failed",
                          "passed": res.passed, "drift": res.drift, "requirements": res.requirements,
                          "notes": res.notes}, indent=2, ensure_ascii=False, default=str))
    else:
        for r in res.requirements:
            print(f"  {'ok  ' if r['passed'] else 'FAIL'} {r['name']:<32} {_fmt(r['value'], r['metric']):>10}")
        for d in res.drift:
            print(f"  drift: {d['what']}: locked {d['expected']}, now {d['found']}")
        for n in res.notes:
            print(f"  note: {n}")
        print("no drift; requirements hold" if res.passed else "verification FAILED")
    return res.exit_code
