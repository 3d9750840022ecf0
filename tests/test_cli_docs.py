"""docs/cli.md covers every command (read from the argparse tree, so a new subcommand or flag
without docs fails here) and every name of the public Python API."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import gatelang
from gatelang.cli import build_parser

DOC = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
HEADINGS = "\n".join(line for line in DOC.splitlines() if line.startswith("### "))


def _commands(parser: argparse.ArgumentParser, prefix: str = "gatelang"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}")
            return
    yield prefix, parser


def test_every_command_and_flag_has_a_heading():
    missing = []
    for command, parser in _commands(build_parser()):
        if command == "gatelang":
            continue
        if f"`{command}" not in HEADINGS:
            missing.append(command)
            continue
        heading = next(h for h in HEADINGS.splitlines() if f"`{command}" in h)
        for action in parser._actions:
            flags = [o for o in action.option_strings if o not in ("-h", "--help")]
            if flags and not any(re.search(re.escape(f) + r"(?![\w-])", heading)
                                 for f in flags):
                missing.append(f"{command} {flags[0]}")
    assert not missing, f"docs/cli.md lacks: {missing}"


def test_every_public_name_is_documented():
    skip = {"__version__", "PolicyFile", "CheckResult", "Plan", "ModelCapabilities",
            "TINY_LLAVA_CAPABILITIES", "GatelangError", "DiagnosticError", "PlanError",
            "RunRecord"}
    missing = [n for n in gatelang.__all__ if n not in skip and f"`gatelang.{n}`" not in DOC]
    assert not missing, f"docs/cli.md's API tables lack: {missing}"
