"""`gatelang zoo`: list, build and evaluate the built-in models."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="built-in models: list, build, eval")
    zsub = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")

    ls = zsub.add_parser("list", help="list the built-in models and whether weights are present")
    ls.set_defaults(func=_list)

    b = zsub.add_parser("build", help="train a built-in model from scratch (deterministic, CPU)")
    b.add_argument("name", help="built-in model, e.g. tiny-llava")
    b.add_argument("--reduced", action="store_true", help="the small recipe used by the tests")
    b.add_argument("--out", help="output folder (default: the package's shipped weights folder)")
    b.set_defaults(func=_build)

    e = zsub.add_parser("eval", help="base-quality exact-match table of a built-in model")
    e.add_argument("name", help="built-in model, e.g. tiny-llava")
    e.add_argument("--json", action="store_true", help="print one JSON record per cell")
    e.add_argument("--model-dir", help="evaluate this folder instead of the shipped weights")
    e.add_argument(
        "--max-per-cell", type=int, default=None, help="sample at most N queries per cell"
    )
    e.set_defaults(func=_eval)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _list(args: argparse.Namespace) -> int:
    from gatelang import zoo

    for name in zoo.names():
        entry = zoo.get(name)
        present = (entry.folder / "config.json").is_file()
        print(f"{name:12s} {'shipped' if present else 'not built'}  {entry.description}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from gatelang import zoo

    recipe = "reduced" if args.reduced else "full"
    out = zoo.build(args.name, recipe=recipe, out=args.out, log=lambda m: print(m, file=sys.stderr))
    print(out)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from gatelang import zoo

    if args.max_per_cell is not None and args.max_per_cell < 1:
        from gatelang.zoo import ZooError

        raise ZooError(f"--max-per-cell must be at least 1, got {args.max_per_cell}")
    records = zoo.evaluate(args.name, folder=args.model_dir, max_per_cell=args.max_per_cell)
    if args.json:
        print(json.dumps(records, ensure_ascii=False, indent=1))
        return 0
    print(format_table(records))
    return 0


def format_table(records: list[dict]) -> str:
    """Accuracy per task/attribute/modality with languages and splits as columns."""
    from collections import defaultdict

    rows: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
    cols: list[str] = []
    for r in records:
        col = f"{r['language']}/{r['split']}"
        if col not in cols:
            cols.append(col)
        rows[(r["task"], r["attribute"], r["modality"])][col] = f"{100 * r['accuracy']:.0f}%"
    cols.sort()
    head = f"| task | attribute | modality | {' | '.join(cols)} |"
    lines = [head, "|" + "---|" * (3 + len(cols))]
    for key in sorted(rows):
        cells = [rows[key].get(c, "") for c in cols]
        lines.append(f"| {' | '.join(key)} | {' | '.join(cells)} |")
    return "\n".join(lines)
