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

# The `model` extra (pyproject.toml): what only commands that load a model need.
MODEL_PACKAGES = frozenset({"torch", "transformers", "tokenizers", "safetensors", "PIL", "numpy",
                            "matplotlib", "tqdm", "jinja2", "markdown_it"})

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
    except ImportError as exc:
        # The language commands need only the core install; the model stack is the `model`
        # extra, so a command that runs a model says how to get it instead of a traceback.
        root = (exc.name or "").split(".")[0]
        if root not in MODEL_PACKAGES:
            raise
        print(f"error: `gatelang {args.command}` needs the model stack ({root} is not "
              "installed); install it with: pip install 'gatelang[model]'", file=sys.stderr)
        return EXIT_FAILURE
    except MemoryError:
        print("error: out of memory; try --device cpu with a smaller batch, or a larger machine",
              file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        # Language commands read untrusted policy text: whatever slips past the checks must
        # still end with a message and a documented exit code, never a traceback.
        from gatelang.cli.lang import COMMANDS

        if args.command not in COMMANDS:
            raise
        if isinstance(exc, BrokenPipeError):  # `gatelang plan ... | head`: the reader left
            _quiet_stdout()
            return EXIT_FAILURE
        detail = str(exc).encode("utf-8", "backslashreplace").decode("utf-8")
        print(f"error: internal error in `gatelang {args.command}` "
              f"({type(exc).__name__}: {detail}); this is a bug in gatelang, please report it "
              "with the input file", file=sys.stderr)
        return EXIT_FAILURE


def _quiet_stdout() -> None:
    """Point stdout at devnull so the interpreter's final flush does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
