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

    k = zsub.add_parser(
        "knowledge",
        help="which real people's public facts a model knows (the probe set, docs/knowledge.md)",
    )
    k.add_argument("--model", required=True, help="alias, folder or .gguf file, e.g. smollm2-135m")
    k.add_argument("--languages", default="en,zh,es", help="comma-separated (default en,zh,es)")
    k.add_argument("--attributes", default=None, help="comma-separated (default: all six)")
    k.add_argument("--limit", type=int, default=None, help="ask only the first N people")
    k.add_argument("--max-new-tokens", type=int, default=24)
    k.add_argument("--batch-size", type=int, default=32)
    k.add_argument("--device", default="auto")
    k.add_argument("--no-cache", action="store_true", help="ask again even if cached")
    k.add_argument("--json", action="store_true", help="print the known set as JSON")
    k.add_argument("--out", help="also write the JSON record to this file")
    k.add_argument("--subjects-out", help="write the known people as a subject file (.txt)")
    k.set_defaults(func=_knowledge)
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


def _knowledge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gatelang.models import load_model
    from gatelang.stdlib.people import ATTRIBUTES
    from gatelang.zoo import ZooError
    from gatelang.zoo.knowledge import format_summary, known_set, subject_file_text

    if args.limit is not None and args.limit < 1:
        raise ZooError(f"--limit must be at least 1, got {args.limit}")
    langs = [x.strip() for x in args.languages.split(",") if x.strip()]
    attrs = [x.strip() for x in args.attributes.split(",")] if args.attributes else ATTRIBUTES
    loaded = load_model(args.model, device=args.device)
    try:
        result = known_set(loaded, languages=langs, attributes=attrs, limit=args.limit,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           use_cache=not args.no_cache,
                           log=lambda m: print(m, file=sys.stderr))
    except ValueError as exc:
        raise ZooError(str(exc)) from None
    record = json.dumps(result.to_json(), ensure_ascii=False, indent=1)
    if args.out:
        Path(args.out).write_text(record + "\n", encoding="utf-8")
    if args.subjects_out:
        Path(args.subjects_out).write_text(subject_file_text(result), encoding="utf-8")
    print(record if args.json else format_summary(result))
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
