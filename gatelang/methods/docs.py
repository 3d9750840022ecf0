"""Documentation of the registered methods, generated from their specs and configs.

A method's pydantic config is the single source of its parameters, so the parameter tables in
docs/methods.md are not written by hand: they are the block between the markers below, rendered
here and checked by the test suite. After changing a method's config or profiles, regenerate it:

    python -m gatelang.methods.docs docs/methods.md

`gatelang methods` prints the same information (as a table, Markdown or JSON). Nothing here
imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gatelang.methods import DEFAULT_METHOD, methods
from gatelang.methods.base import MethodSpec, ParamInfo

BEGIN = "<!-- BEGIN GENERATED: methods -->"
END = "<!-- END GENERATED: methods -->"
DOC_PATH = "docs/methods.md"
REGENERATE = f"python -m gatelang.methods.docs {DOC_PATH}"

NONE = "—"


# -- shared pieces ---------------------------------------------------------------------------
def _specs(names: Iterable[str] | None = None) -> list[MethodSpec]:
    known = methods()
    if names is None:
        return list(known.values())
    return [known[n] for n in sorted(names)]


def _bound(info: ParamInfo, value: float) -> str:
    if info.kind == "int":
        return str(int(value))
    return info.display(value)


def param_range(info: ParamInfo, code: bool = False) -> str:
    """A parameter's range or choices as a policy writes them (`0%–100%`, `salient, quiet`).

    With `code`, each value a policy may write is wrapped in Markdown backticks.
    """
    def c(text: str) -> str:
        return f"`{text}`" if code else text

    if info.choices:
        return ", ".join(c(choice) for choice in info.choices)
    if info.kind == "bool":
        return f"{c('true')}, {c('false')}"
    if info.kind == "layer":
        return f"layer index or {c('auto')}"
    if info.min is not None and info.max is not None:
        return f"{c(_bound(info, info.min))}–{c(_bound(info, info.max))}"
    if info.min is not None:
        return f"≥ {c(_bound(info, info.min))}"
    if info.max is not None:
        return f"≤ {c(_bound(info, info.max))}"
    return NONE


def _profile_param(spec: MethodSpec, key: str) -> ParamInfo | None:
    return spec.params().get(spec.config.renamed.get(key, key))


def _display(spec: MethodSpec, key: str, value: Any) -> str:
    info = _profile_param(spec, key)
    return _show(info, value) if info is not None else json.dumps(value)


def _default(spec: MethodSpec, key: str) -> str:
    info = _profile_param(spec, key)
    return _show(info, info.default) if info is not None else NONE


def plan_ops(spec: MethodSpec) -> list[tuple[str, str, str]]:
    """(stage, op, fixed params) of the method's passes: localize, then one edit op per target."""
    ops: list[tuple[str, str, str]] = []
    if spec.localize:
        extra = ", ".join(f"{k} {_json_value(v)}" for k, v in spec.localize_params.items())
        ops.append(("localize", spec.localize, extra))
    for target, op in spec.edit.items():
        ops.append((f"edit ({target})", op, ""))
    return ops


def _json_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _show(info: ParamInfo, value: Any) -> str:
    """A value as a policy writes it; strings quoted, as a policy must write them."""
    return json.dumps(value, ensure_ascii=False) if info.kind == "str" else info.display(value)


def default_for(spec: MethodSpec) -> list[str]:
    """The rule kinds for which this method is what a policy gets with no `method` block."""
    return [kind for kind, name in DEFAULT_METHOD.items() if name == spec.name]


def summary(spec: MethodSpec, width: int = 72) -> str:
    """The description's first sentence, shortened to `width` characters."""
    text = " ".join(spec.description.split())
    first = text.split(". ", 1)[0].rstrip(".")
    return textwrap.shorten(first, width=width, placeholder=" …")


# -- JSON ------------------------------------------------------------------------------------
def method_to_dict(spec: MethodSpec) -> dict[str, Any]:
    """A method as a JSON-able document: what `gatelang methods NAME --json` prints."""
    return {
        "name": spec.name,
        "family": spec.family,
        "description": spec.description,
        "paper": spec.paper or None,
        "default_for": default_for(spec),
        "plan": {
            "localize": spec.localize,
            "localize_params": dict(spec.localize_params),
            "edit": dict(spec.edit),
        },
        "params": [
            {
                "name": info.name,
                "kind": info.kind,
                "default": info.default,
                "display_default": _show(info, info.default),
                "min": info.min,
                "max": info.max,
                "choices": list(info.choices) if info.choices else None,
                "group": info.group,
                "help": info.help,
            }
            for info in spec.params().values()
        ],
        "profiles": {name: dict(values) for name, values in spec.profiles.items()},
        "renamed": dict(spec.config.renamed),
    }


def methods_to_json(names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    return [method_to_dict(spec) for spec in _specs(names)]


# -- Markdown --------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if text and text != NONE else NONE


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_params_markdown(spec: MethodSpec) -> str:
    """The parameter table: name | kind | default | range or choices | group | help."""
    rows = []
    for info in spec.params().values():
        rows.append((_code(info.name), info.kind, _code(_show(info, info.default)),
                     param_range(info, code=True),
                     info.group, info.help))
    header = ("parameter", "kind", "default", "range or choices", "group", "help")
    return "\n".join(_table(header, rows)) + "\n"


def render_profiles_markdown(spec: MethodSpec) -> str:
    """Each profile's settings: a bullet per profile, a small table of what it changes."""
    if not spec.profiles:
        return "No profiles.\n"
    out: list[str] = []
    for name, values in spec.profiles.items():
        if not values:
            out += [f"- `{name}`: the defaults.", ""]
            continue
        out += [f"- `{name}` ({len(values)} settings):", ""]
        rows = [(_code(key), _code(_display(spec, key, value)), _code(_default(spec, key)))
                for key, value in values.items()]
        out += ["  " + line for line in _table(("parameter", "value", "default"), rows)]
        out.append("")
    return "\n".join(out[:-1]) + "\n"


def render_method_markdown(spec: MethodSpec, level: int = 3) -> str:
    """One method: heading, description, family, plan ops, parameters, profiles, renames."""
    h = "#" * level
    out = [f"{h} `{spec.name}`", "", " ".join(spec.description.split()), ""]
    facts = [f"- Family: `{spec.family}`"]
    if spec.paper:
        facts.append(f"- Paper: {spec.paper}")
    kinds = default_for(spec)
    if kinds:
        facts.append("- Default method for " + ", ".join(f"`{k}`" for k in kinds) + " rules")
    ops = "; ".join(f"{stage} `{op}`" + (f" ({extra})" if extra else "")
                    for stage, op, extra in plan_ops(spec))
    facts.append(f"- Plan ops: {ops}")
    out += facts + [""]
    out += [f"{h}# `{spec.name}` parameters", "", render_params_markdown(spec).rstrip("\n"), ""]
    out += [f"{h}# `{spec.name}` profiles", "", render_profiles_markdown(spec).rstrip("\n"), ""]
    renamed = spec.config.renamed
    if renamed:
        out += [f"{h}# `{spec.name}` renamed parameters", ""]
        out += [f"- `{old}` → `{new}`" for old, new in renamed.items()]
        out += ["", "An old name is still accepted, with a warning (G130); `gatelang fmt` "
                "rewrites it.", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def render_methods_markdown(names: Iterable[str] | None = None, level: int = 3) -> str:
    """Every registered method (or those named), sorted by name: the generated doc block."""
    return "\n".join(render_method_markdown(spec, level) for spec in _specs(names))


# -- plain text (the CLI) --------------------------------------------------------------------
def _columns(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))).rstrip()
            for r in rows]


def render_methods_list(names: Iterable[str] | None = None, width: int = 100) -> str:
    """One line per method: name, family, the rules it is the default for, a description."""
    specs = _specs(names)
    rows = [("NAME", "FAMILY", "DEFAULT FOR", "DESCRIPTION")]
    rows += [(s.name, s.family, ", ".join(default_for(s)) or "-", "") for s in specs]
    used = sum(max(len(r[i]) for r in rows) + 2 for i in range(3))
    rows[1:] = [row[:3] + (summary(s, max(30, width - used)),)
                for row, s in zip(rows[1:], specs, strict=True)]
    return "\n".join(_columns(rows)) + "\n"


def render_method_text(spec: MethodSpec, width: int = 100) -> str:
    """One method as readable text: description, plan ops, parameter table, profiles, renames."""
    out = [f"{spec.name} ({spec.family})"]
    out += textwrap.wrap(" ".join(spec.description.split()), width=width,
                         initial_indent="  ", subsequent_indent="  ")
    if spec.paper:
        out.append(f"  paper: {spec.paper}")
    kinds = default_for(spec)
    if kinds:
        out.append(f"  default for: {', '.join(kinds)} rules")
    for stage, op, extra in plan_ops(spec):
        out.append(f"  {stage}: {op}" + (f" ({extra})" if extra else ""))
    out += ["", "parameters:"]
    rows = [("NAME", "KIND", "DEFAULT", "RANGE", "GROUP", "HELP")]
    rows += [(i.name, i.kind, _show(i, i.default), param_range(i), i.group,
              " ".join(i.help.split())) for i in spec.params().values()]
    out += _columns(rows, "  ")
    out += ["", "profiles:" if spec.profiles else "profiles: none"]
    for name, values in spec.profiles.items():
        if not values:
            out.append(f"  {name}: the defaults")
            continue
        out.append(f"  {name}:")
        prow = [(key, _display(spec, key, value), f"(default {_default(spec, key)})")
                for key, value in values.items()]
        out += _columns(prow, "    ")
    if spec.config.renamed:
        out += ["", "renamed (old names accepted with a warning):"]
        out += [f"  {old} -> {new}" for old, new in spec.config.renamed.items()]
    return "\n".join(out) + "\n"


# -- the generated block in docs/methods.md ------------------------------------------------------
def _split(text: str) -> tuple[str, str, str]:
    """(before the block, the block's content, after it); raises ValueError without markers."""
    start = text.find(BEGIN)
    end = text.find(END)
    if start < 0 or end < 0 or end < start or text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"expected exactly one {BEGIN} ... {END} block")
    body_start = start + len(BEGIN)
    return text[:body_start], text[body_start:end], text[end:]


def generated_block(text: str) -> str:
    """The content between the markers, without the newlines that follow/precede them."""
    _before, body, _after = _split(text)
    return body.removeprefix("\n").removesuffix("\n")


def replace_generated_block(text: str, content: str | None = None) -> str:
    """`text` with the block's content replaced (by the rendered Markdown by default)."""
    content = render_methods_markdown() if content is None else content
    content = content.rstrip("\n") + "\n"
    before, _body, after = _split(text)
    # A blank line before the end marker, so it never continues a list or a table.
    return f"{before}\n{content}\n{after}"


def update_methods_doc(path: str | Path = DOC_PATH) -> bool:
    """Rewrite the generated block of `path` in place; returns whether the file changed."""
    from gatelang.runtime.atomic import atomic_write_text

    p = Path(path)
    with p.open(encoding="utf-8", newline="") as fh:
        old = fh.read()
    new = replace_generated_block(old)
    if new == old:
        return False
    atomic_write_text(p, new)
    return True


def methods_doc_is_current(path: str | Path = DOC_PATH) -> bool:
    """Whether the generated block of `path` is what the registry renders now."""
    text = Path(path).read_text(encoding="utf-8")
    return text == replace_generated_block(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gatelang.methods.docs",
        description="Regenerate the methods block of docs/methods.md from the method configs.")
    parser.add_argument("path", nargs="?", default=DOC_PATH, help=f"default: {DOC_PATH}")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the block is out of date")
    args = parser.parse_args(argv)
    try:
        if args.check:
            if methods_doc_is_current(args.path):
                print(f"{args.path} is up to date")
                return 0
            print(f"{args.path} is out of date; run: python -m gatelang.methods.docs {args.path}",
                  file=sys.stderr)
            return 1
        changed = update_methods_doc(args.path)
    except (OSError, ValueError) as exc:
        print(f"error: {args.path}: {exc}", file=sys.stderr)
        return 2
    print(f"{'updated' if changed else 'unchanged'}: {args.path}")
    return 0


__all__ = [
    "BEGIN",
    "END",
    "REGENERATE",
    "generated_block",
    "method_to_dict",
    "methods_doc_is_current",
    "methods_to_json",
    "param_range",
    "plan_ops",
    "render_method_markdown",
    "render_method_text",
    "render_methods_list",
    "render_methods_markdown",
    "render_params_markdown",
    "render_profiles_markdown",
    "replace_generated_block",
    "summary",
    "update_methods_doc",
]


if __name__ == "__main__":
    sys.exit(main())
