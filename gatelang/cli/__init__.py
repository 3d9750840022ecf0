"""The `gatelang` command line: a thin layer over the public Python API.

Each command group lives in its own module and registers its subcommands here; commands do
argument parsing and printing only. Any `GatelangError` becomes a message and its exit code,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gatelang import __version__
from gatelang.errors import EXIT_FAILURE, GatelangError

# Modules that register subcommands: each exposes `register(subparsers)`, and each subcommand
# sets `func(args) -> int` as its handler.
_COMMAND_MODULES = (
    "gatelang.cli.lang",  # check, fmt, convert, plan, diff, schema
    "gatelang.cli.zoo",  # zoo list, zoo build, zoo eval
    "gatelang.cli.apply",  # apply, patch apply, verify
    "gatelang.cli.audit",  # audit
    "gatelang.cli.methods",  # methods
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="gatelang",
        description="Compile privacy policies into verified weight edits.",
    )
    parser.add_argument("--version", action="version", version=f"gatelang {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GatelangError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; nothing was published (the cache keeps finished passes)", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; try --device cpu with a smaller batch, or a larger machine",
              file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
