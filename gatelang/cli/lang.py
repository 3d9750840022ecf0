"""Language commands: check, fmt, convert, plan, diff, schema.

Each command parses arguments, calls the public API and prints; problems in a policy are
diagnostics on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from gatelang.errors import (
    EXIT_FAILURE,
    EXIT_INVALID,
    EXIT_OK,
    Diagnostic,
    DiagnosticError,
    GatelangError,
)

POLICY_SUFFIXES = (".gate", ".yaml", ".yml")
# The commands registered here: they read untrusted policy text, and `gatelang.cli.main` turns
# any unexpected exception in them into a message and exit 1 instead of a traceback.
COMMANDS = ("check", "fmt", "convert", "plan", "diff", "schema")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check policy files (syntax and semantics)",
                       description="Check policy files and report every problem with its "
                       "location. Directories are searched for .gate and gatelang YAML files.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--root", help="folder that `use` and subject files may not leave "
                   "(default: the folder given on the command line, else each policy's folder)")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument("--skip-non-policy", action="store_true",
                   help="skip YAML files without a top-level `gatelang:` key (for hooks that "
                   "see every YAML file in a repository)")
    p.add_argument("--format", choices=("text", "json"), default="text", dest="output")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("fmt", help="rewrite policy files in canonical layout",
                       description="Rewrite policy files in canonical layout (comments kept).")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 and list the files that would change")
    p.add_argument("--diff", action="store_true", help="print a unified diff instead of writing")
    p.add_argument("--skip-non-policy", action="store_true",
                   help="skip YAML files without a top-level `gatelang:` key (for hooks that "
                   "see every YAML file in a repository)")
    p.set_defaults(func=cmd_fmt)

    p = sub.add_parser("convert", help="convert a policy between .gate and YAML",
                       description="Print (or write) a policy in the other syntax; the result "
                       "is checked to mean exactly the same.")
    p.add_argument("path", metavar="POLICY")
    p.add_argument("--to", choices=("gate", "yaml"), help="target syntax (default: the other)")
    p.add_argument("-o", "--output", help="write here instead of stdout")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("plan", help="show the pass graph a policy compiles to",
                       description="Compile a policy to its plan: the probe, localize, gate and "
                       "verify passes, what they touch, and their estimated cost.")
    p.add_argument("path", metavar="POLICY")
    p.add_argument("--model", default="tiny-llava",
                   help="built-in model name (tiny-llava, tiny-clip), or any model spec "
                   "`gatelang.load_model` accepts (its config, tokenizer and processor are read; not its weights)")
    p.add_argument("--format", choices=("text", "json", "dot", "mermaid"), default="text",
                   dest="output_format")
    p.add_argument("-o", "--output", help="write here instead of stdout")
    p.add_argument("--root", help="folder that `use` and subject files may not leave")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("diff", help="semantic differences between two policy versions",
                       description="Show what changed in meaning: subjects, attributes, "
                       "languages, modalities, thresholds (tightened/loosened), method.")
    p.add_argument("old", metavar="OLD")
    p.add_argument("new", metavar="NEW", nargs="?")
    p.add_argument("--git", metavar="REV",
                   help="compare OLD as it is in git revision REV with the working tree")
    p.add_argument("--format", choices=("text", "json"), default="text", dest="output")
    p.add_argument("--exit-code", action="store_true",
                   help="exit 1 when anything loosened (for CI gates)")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("schema", help="print a JSON Schema: policy YAML, report, lock or audit",
                       description="Print the JSON Schema (draft 2020-12) of a policy's YAML form "
                       "(for editors), or of report.json, gate.lock or audit.json (for tools "
                       "that read them), generated from the models gatelang itself validates "
                       "with.")
    p.add_argument("--kind", choices=("policy", "report", "lock", "audit"), default="policy",
                   help="which document (default: policy)")
    p.add_argument("-o", "--output", help="write here instead of stdout")
    p.set_defaults(func=cmd_schema)


# -- helpers ---------------------------------------------------------------------------------


def _write(path: str | None, text: str) -> None:
    if path is None:
        sys.stdout.write(text)
        return
    from gatelang.runtime.atomic import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise GatelangError(f"cannot write {path}: {exc.strerror or exc}") from None


def _is_yaml_policy(path: Path) -> bool:
    from gatelang.syntax.source import read_regular

    try:
        # The head only, and only of a regular file: a FIFO named x.yaml must not block.
        head = read_regular(path, 4096, head=True).decode("utf-8", errors="ignore")
    except (OSError, ValueError):
        return False
    return any(line.startswith("gatelang:") for line in head.splitlines())


def _is_regular(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given, and policy files found under directories (sorted, hidden skipped)."""
    return [f for f, _root in _expand(paths)]


def _walk(folder: Path) -> list[Path]:
    """Every file under `folder`, sorted; symbolic links to folders are not followed."""
    import os

    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath)
        found.extend(base / name for name in filenames if not name.startswith("."))
    return sorted(found)


def _expand(paths: list[str]) -> list[tuple[Path, Path | None]]:
    """(file, root): a folder given on the command line is the root of the files in it."""
    out: list[tuple[Path, Path | None]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in _walk(p):
                if f.suffix == ".gate":
                    out.append((f, p))
                elif f.suffix in (".yaml", ".yml") and (
                        f.is_symlink() or not _is_regular(f) or _is_yaml_policy(f)):
                    # A link or a FIFO is not opened to sniff it: `_outside` / the reader
                    # report it instead of silently skipping (or blocking on) it.
                    out.append((f, p))
        else:
            out.append((p, None))
    return out


def _outside(f: Path, folder: Path | None, root: str | None = None) -> Diagnostic | None:
    """G120 when a file found under `folder` is a symbolic link that leaves it (or `root`).

    Only regular files inside the folder are read: a link to /etc/passwd would otherwise be
    parsed and its lines quoted in the diagnostics, a link to /dev/zero read forever. Files
    named on the command line are read as asked (`folder` None).
    """
    from gatelang.errors import Span

    root = root or folder
    if folder is None or root is None or not f.is_symlink():
        return None
    try:
        f.resolve().relative_to(Path(root).resolve())
    except (ValueError, OSError, RuntimeError):
        return Diagnostic("G120", f"{f} is a symbolic link that leaves {root}", Span.point(str(f)),
                          "only files inside the folder are checked; copy the policy in, or "
                          "name the link's target on the command line")
    return None


def _print_diags(diags: list[Diagnostic], sources: dict[str, str]) -> None:
    for d in diags:
        print(d.render(sources.get(d.span.file) if d.span else None), file=sys.stderr)


# -- commands --------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from gatelang.ir import CheckResult, check

    files = _expand(args.paths)
    if args.skip_non_policy:
        files = [(f, r) for f, r in files
                 if f.suffix not in (".yaml", ".yml") or _outside(f, r, args.root)
                 or _is_yaml_policy(f)]
        if not files:
            return EXIT_OK
    if not files:
        print("error: no policy files found", file=sys.stderr)
        return EXIT_INVALID
    errors = warnings = 0
    report = []
    for f, folder in files:
        refused = _outside(f, folder, args.root)
        if refused is not None:
            result = CheckResult(None, [refused], {str(f): ""})
        else:
            result = check(f, root=args.root or folder)
        errors += len(result.errors)
        warnings += len(result.warnings)
        if args.output == "json":
            report.append({"file": str(f), "ok": result.ok, "diagnostics": [
                {"code": d.code, "severity": d.severity, "message": d.message, "hint": d.hint,
                 "span": d.span.model_dump() if d.span else None} for d in result.diagnostics]})
        else:
            _print_diags(result.diagnostics, result.sources)
    failed = errors or (args.strict and warnings)
    if args.output == "json":
        print(json.dumps({"files": report, "errors": errors, "warnings": warnings},
                         indent=2, ensure_ascii=False))
    else:
        status = "failed" if failed else "ok"
        print(f"{len(files)} file(s) checked: {errors} error(s), {warnings} warning(s) — {status}",
              file=sys.stderr)
    return EXIT_INVALID if failed else EXIT_OK


def cmd_fmt(args: argparse.Namespace) -> int:
    import difflib

    from gatelang.syntax.format import fmt
    from gatelang.syntax.source import read_source

    files = _expand(args.paths)
    if args.skip_non_policy:
        files = [(f, r) for f, r in files
                 if f.suffix not in (".yaml", ".yml") or _outside(f, r) or _is_yaml_policy(f)]
    changed = []
    bad = 0
    for f, folder in files:
        refused = _outside(f, folder)
        if refused is not None:  # never rewrite (or read) a file outside the folder
            print(refused.render(""), file=sys.stderr)
            bad += 1
            continue
        try:
            before = read_source(f)
            after = fmt(f)
        except DiagnosticError as exc:
            print(str(exc), file=sys.stderr)
            bad += 1
            continue
        if before == after:
            continue
        changed.append(f)
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(
                before.splitlines(keepends=True), after.splitlines(keepends=True),
                f"{f} (before)", f"{f} (formatted)"))
        elif not args.check:
            _write(str(f), after)
    for f in changed:
        verb = "would reformat" if (args.check or args.diff) else "reformatted"
        print(f"{verb} {f}", file=sys.stderr)
    if bad:
        return EXIT_INVALID
    if (args.check or args.diff) and changed:
        return EXIT_FAILURE
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from gatelang.ir import check, check_text
    from gatelang.syntax.format import convert
    from gatelang.syntax.source import syntax_of

    source_syntax = syntax_of(args.path)
    target = args.to or ("gate" if source_syntax == "yaml" else "yaml")
    text = convert(args.path, target)
    # The conversion must not change meaning; prove it when the source itself checks.
    original = check(args.path)
    if original.ir is not None:
        shown = str(Path(args.path).with_suffix(".gate" if target == "gate" else ".yaml"))
        converted = check_text(text, shown, target, root=Path(args.path).parent)
        if converted.ir is None or converted.ir.semantic_dump() != original.ir.semantic_dump():
            raise GatelangError(f"{args.path}: conversion would change the policy's meaning; "
                                "please report this with the file")
    _write(args.output, text)
    return EXIT_OK


def _capabilities(model: str):
    from gatelang.planner.api import capabilities_for
    from gatelang.planner.capabilities import BUILTIN_CAPABILITIES

    if model in BUILTIN_CAPABILITIES:
        return capabilities_for(model)
    try:
        from gatelang.models import describe_model
    except ImportError as exc:  # pragma: no cover - the models layer ships with gatelang
        raise GatelangError(f"cannot read model {model!r}: {exc}") from None
    return describe_model(model)


def cmd_plan(args: argparse.Namespace) -> int:
    from gatelang.ir import load
    from gatelang.planner import plan, render

    ir = load(args.path, root=args.root)
    if not ir.policies:
        # `check` only warns (G205); a plan of nothing would look like success.
        raise DiagnosticError([Diagnostic(
            "G205", "the file defines no policy: there is nothing to plan", ir.span,
            "a policy starts with `policy NAME {` (in YAML: under `policies:`)")])
    result = plan(ir, _capabilities(args.model))
    _write(args.output, render(result, args.output_format))
    return EXIT_OK


def _git(args: list[str], cwd: Path, what: str) -> bytes:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=True).stdout
    except FileNotFoundError:
        raise GatelangError("git is not installed") from None
    except (ValueError, UnicodeError) as exc:  # a NUL or an unencodable character in argv
        raise GatelangError(f"git: cannot read {what}: {exc}") from None
    except subprocess.CalledProcessError as exc:
        msg = (exc.stderr or b"").decode(errors="replace").strip()
        raise GatelangError(f"git: cannot read {what}: {msg}") from None


def _git_tree(rev: str, path: str, into: Path) -> tuple[Path, Path]:
    """Extract the policy's folder as it is at `rev` into `into`; (policy path, its folder).

    The whole folder is taken so imports and subject files are read at the same revision as
    the policy (a changed people.csv shows up in the diff).
    """
    import io
    import tarfile

    _check_revision(rev)
    try:
        p = Path(path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise GatelangError(f"{path}: cannot resolve the path: {exc}") from None
    if not p.parent.is_dir():
        raise GatelangError(f"{path}: its folder does not exist")
    top = Path(_git(["rev-parse", "--show-toplevel"], p.parent, "the repository")
               .decode(errors="surrogateescape").strip()).resolve()
    try:
        folder = p.parent.relative_to(top).as_posix() or "."
    except ValueError:
        raise GatelangError(f"{path} is not inside a git repository") from None
    # The revision cannot be taken for an option (it does not start with `-`), and `--` ends
    # the revisions: what follows is only ever a path.
    data = _git(["archive", "--format=tar", rev, "--", folder], top, f"{folder} at {rev}")
    links: list[str] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            # Regular files and folders only: a committed symbolic link (to /etc/passwd, or
            # absolute) is neither followed nor recreated, so nothing outside is ever read.
            members = []
            for m in tar.getmembers():
                if m.isdir() or m.isreg():
                    members.append(m)
                else:
                    links.append(m.name)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                tar.extractall(into, members=members)  # noqa: S202 - regular files only
    except (tarfile.TarError, OSError) as exc:
        raise GatelangError(f"git: cannot unpack {folder} at {rev}: {exc}") from None
    base = into / folder
    old = base / p.name
    if not old.is_file():
        member = (Path(folder) / p.name).as_posix() if folder != "." else p.name
        if member in links:
            raise GatelangError(f"git: {path} is a symbolic link (or not a regular file) at "
                                f"{rev}; only regular files are read")
        raise GatelangError(f"git: {path} does not exist at {rev}")
    return old, base


class _BadRevision(GatelangError):
    """A `--git` value that is not a revision: invalid input, exit 2."""

    exit_code = EXIT_INVALID


def _check_revision(rev: str) -> None:
    """Refuse a `--git` value git would read as an option (`--output=FILE` truncated FILE)."""
    if not rev or rev.startswith("-"):
        raise _BadRevision(f"error: --git {rev!r} is not a revision (a revision cannot start "
                           "with '-')")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in rev):
        raise _BadRevision(f"error: --git {rev!r} is not a revision (it contains a control "
                           "character)")


def _relabel(exc: DiagnosticError, tmp: Path, label: str) -> DiagnosticError:
    """Diagnostics of the old version name `REV:path`, not the temporary folder."""
    prefix = str(tmp) + "/"

    def fix(name: str) -> str:
        return label + name[len(prefix):] if name.startswith(prefix) else name

    diags = [Diagnostic(d.code, d.message,
                        d.span.model_copy(update={"file": fix(d.span.file)}) if d.span else None,
                        d.hint, d.severity) for d in exc.diagnostics]
    return DiagnosticError(diags, {fix(k): v for k, v in exc.sources.items()})


def cmd_diff(args: argparse.Namespace) -> int:
    from gatelang.ir import load
    from gatelang.ir.diff import diff_ir, render_changes

    if args.git:
        if args.new is not None:
            raise GatelangError("with --git give one file: gatelang diff --git REV POLICY")
        import tempfile

        with tempfile.TemporaryDirectory(prefix="gatelang-diff-") as tmp:
            tmp_path = Path(tmp).resolve()
            old_path, old_root = _git_tree(args.git, args.old, tmp_path)
            try:
                old = load(old_path, root=old_root)
            except DiagnosticError as exc:
                raise _relabel(exc, tmp_path, f"{args.git}:") from None
        new = load(args.old)
    else:
        if args.new is None:
            raise GatelangError("give two files (OLD NEW), or one file and --git REV")
        old, new = load(args.old), load(args.new)
    changes = diff_ir(old, new)
    if args.output == "json":
        print(json.dumps([c.to_dict() for c in changes], indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(render_changes(changes))
    if args.exit_code and any(c.direction == "looser" for c in changes):
        return EXIT_FAILURE
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from gatelang.report.schemas import json_schema

    _write(args.output, json.dumps(json_schema(args.kind), indent=2, sort_keys=True) + "\n")
    return EXIT_OK


__all__ = ["COMMANDS", "expand_paths", "register"]
