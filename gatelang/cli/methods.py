"""`gatelang methods`: the registered editing methods, their parameters and profiles.

A thin layer over `gatelang.methods.docs`, which renders the same information for
docs/methods.md; nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gatelang.errors import EXIT_INVALID, EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("methods", help="list editing methods, or show one's parameters and profiles",
                       description="List the registered editing methods, or show one method's "
                       "parameters (kind, default, range, group, help), profiles and renamed "
                       "parameters.")
    p.add_argument("name", nargs="?", metavar="NAME", help="a method (default: list them all)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true",
                     help="print the Markdown docs/methods.md is generated from")
    out.add_argument("--json", action="store_true",
                     help="print name, family, description, params, profiles and renamed as JSON")
    p.set_defaults(func=cmd_methods)


def cmd_methods(args: argparse.Namespace) -> int:
    from gatelang.methods import UnknownMethodError, docs, get_method

    names = None
    if args.name is not None:
        try:
            names = [get_method(args.name).name]
        except UnknownMethodError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_INVALID
    if args.json:
        data = docs.methods_to_json(names)
        doc: Any = data[0] if names else {"methods": data}
        print(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
    elif args.markdown:
        sys.stdout.write(docs.render_methods_markdown(names))
    elif names:
        sys.stdout.write(docs.render_method_text(get_method(names[0])))
    else:
        sys.stdout.write(docs.render_methods_list())
    return EXIT_OK
