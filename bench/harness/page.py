"""Write docs/benchmarks.md and its plots from bench/results/*.json.

The page is generated, never edited by hand, so it can only say what the committed results say.
The one hand-written part, the commentary, lives in bench/results/commentary.md and is included
verbatim; the "wins and losses" list next to it is computed from the numbers.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .grid import ALL_METHODS
from .machine import machine_line
from .metrics import COLUMN_BY_KEY, COLUMNS, Column, summarize

# Columns compared when listing where neural_gate wins or loses (the trade-off the method makes).
COMPARED = ("refusal_heldout", "leak_heldout", "refusal_image", "refusal_unseen_language",
            "locality_subjects", "locality_attributes", "over_refusal", "utility")
# Without intervals, a difference smaller than this (in points) is called a tie.
TIE_POINTS = 5.0


SCHEMA = "gatelang-bench/1"


def load_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Benchmark results files; other JSON in the folder (other measurements) is skipped."""
    out = []
    for p in sorted(paths):
        try:
            data = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            continue
        data.setdefault("_file", Path(p).name)
        for run in data.get("runs", []):
            _refresh_pooled(run, data.get("policies", []))
        out.append(data)
    return out


def _refresh_pooled(run: dict[str, Any], policies: Sequence[Mapping[str, Any]]) -> None:
    """Re-derive a run's columns from its stored report cells when it had no per-item rows.

    Pooled summaries depend only on the cells kept in the results file, so the page always
    shows them as the current column definitions read them.
    """
    if run.get("items") or not run.get("metrics"):
        return
    policy = next((p for p in policies if p.get("id") == run.get("policy")), {})
    fresh = summarize({"metrics": run["metrics"], "patch": run.get("patch") or {}},
                      attributes=policy.get("attributes", ()))
    run["summary"] = fresh


def fmt_value(col: Column, est: Mapping[str, Any] | None) -> str:
    if not est or est.get("value") is None:
        return "–"
    v = float(est["value"])
    if col.unit in ("pct", "ratio"):
        text = f"{v * 100:.1f}%" if col.key == "neurons_touched" else f"{v * 100:.0f}%"
        if est.get("lo") is not None and est.get("hi") is not None:
            text += f" [{est['lo'] * 100:.0f}–{est['hi'] * 100:.0f}]"
        return text
    if col.unit == "s":
        return f"{v:.1f}"
    if col.unit == "mb":
        return f"{v:.0f}"
    return f"{v:g}"


def _run_row(run: Mapping[str, Any], which: str) -> dict[str, Any]:
    row = dict((run.get("summary") or {}).get(which) or {})
    if which == "after":
        if run.get("wall_s") is not None:
            row["wall_s"] = {"value": run["wall_s"]}
        if run.get("peak_rss_mb") is not None:
            row["peak_rss_mb"] = {"value": run["peak_rss_mb"]}
    return row


def method_rows(results: Mapping[str, Any], policy_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Rows for one policy: the unedited model first, then each method that ran."""
    runs = [r for r in results.get("runs", []) if r.get("policy") == policy_id]
    rows: list[tuple[str, dict[str, Any]]] = []
    ok = [r for r in runs if r.get("summary")]
    if ok:
        rows.append(("unedited", _run_row(ok[0], "before")))
    order = {m: i for i, m in enumerate(ALL_METHODS)}
    for run in sorted(runs, key=lambda r: order.get(r.get("method", ""), 99)):
        if run.get("summary"):
            rows.append((run["method"], _run_row(run, "after")))
        else:
            rows.append((f"{run['method']} (failed)", {}))
    return rows


def policy_table(results: Mapping[str, Any], policy: Mapping[str, Any]) -> str:
    rows = method_rows(results, policy["id"])
    used = [c for c in COLUMNS if any(r.get(c.key) for _, r in rows)]
    if not used:
        return "_No completed runs for this policy._\n"
    head = "| method | " + " | ".join(c.title for c in used) + " |"
    sep = "|---|" + "|".join("---:" for _ in used) + "|"
    lines = [head, sep]
    for name, row in rows:
        cells = [fmt_value(c, row.get(c.key)) for c in used]
        label = f"**{name}**" if name == "neural_gate" else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    counts = []
    for key in ("refusal_heldout", "refusal_image", "refusal_unseen_language",
                "locality_subjects", "locality_attributes", "utility"):
        n = next(((r.get(key) or {}).get("n") for name, r in rows
                  if name != "unedited" and (r.get(key) or {}).get("n")), None)
        if n:
            counts.append(f"{COLUMN_BY_KEY[key].title} {n}")
    if counts:
        lines += ["", "Scored items per run (protection counts only items the unedited model "
                  "leaked): " + "; ".join(counts) + "."]
    return "\n".join(lines) + "\n"


def _differs(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    """+1 if a > b clearly, -1 if a < b clearly, 0 otherwise (overlapping CIs or a small gap)."""
    va, vb = a.get("value"), b.get("value")
    if va is None or vb is None:
        return 0
    if None not in (a.get("lo"), a.get("hi"), b.get("lo"), b.get("hi")):
        if a["lo"] > b["hi"]:
            return 1
        if a["hi"] < b["lo"]:
            return -1
        return 0
    gap = (float(va) - float(vb)) * 100.0
    if abs(gap) < TIE_POINTS:
        return 0
    return 1 if gap > 0 else -1


def wins_and_losses(results: Mapping[str, Any]) -> list[str]:
    """Sentences comparing neural_gate with each baseline, per policy and column."""
    out = []
    for policy in results.get("policies", []):
        rows = dict(method_rows(results, policy["id"]))
        ours = rows.get("neural_gate")
        if not ours:
            continue
        wins, losses = [], []
        for method, row in rows.items():
            if method in ("neural_gate", "unedited") or not row:
                continue
            for key in COMPARED:
                if key not in ours or key not in row:
                    continue
                col = COLUMN_BY_KEY[key]
                d = _differs(ours[key], row[key])
                if col.better == "lower":
                    d = -d
                if d > 0:
                    wins.append(f"{col.title} vs {method}")
                elif d < 0:
                    losses.append(f"{col.title} vs {method}")
        line = f"- `{policy['id']}`: "
        line += ("wins on " + "; ".join(wins)) if wins else "no clear win"
        line += (". Loses on " + "; ".join(losses) + ".") if losses else ". No clear loss."
        out.append(line)
    return out


def _save_fig(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})
    os.replace(tmp, path)


def plot_tradeoff(results: Mapping[str, Any], path: Path) -> bool:
    """Protection (heldout refusal) against locality and utility, one point per (policy, method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float, float]]] = {}
    for policy in results.get("policies", []):
        for method, row in method_rows(results, policy["id"]):
            prot = (row.get("refusal_heldout") or {}).get("value")
            loc = (row.get("locality_subjects") or {}).get("value")
            util = (row.get("utility") or {}).get("value")
            if prot is None or (loc is None and util is None):
                continue
            series.setdefault(method, []).append(
                (float(prot), float(loc) if loc is not None else float("nan"),
                 float(util) if util is not None else float("nan")))
    if not series:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    markers = dict(zip(ALL_METHODS, "o*sD^vP", strict=False))
    for method, pts in sorted(series.items()):
        for ax, idx, xlabel in ((axes[0], 1, "locality, other subjects (rel. to unedited)"),
                                (axes[1], 2, "utility (rel. to unedited)")):
            xs = [p[idx] * 100 for p in pts]
            ys = [p[0] * 100 for p in pts]
            ax.scatter(xs, ys, label=method, marker=markers.get(method, "x"),
                       s=90 if method == "neural_gate" else 45, alpha=0.8)
            ax.set_xlabel(xlabel + ", %")
    axes[0].set_ylabel("refusal on heldout queries, %")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(-5, 105)
    axes[1].legend(loc="lower left", fontsize=8)
    fig.suptitle("Protection vs locality / utility (top right is best)")
    _save_fig(fig, path)
    plt.close(fig)
    return True


def plot_cost(points: Sequence[Mapping[str, Any]], x: str, ys: Sequence[str], xlabel: str,
              ylabel: str, title: str, path: Path, group: str = "method") -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[Mapping[str, Any]]] = {}
    for p in points:
        groups.setdefault(str(p.get(group, "")), []).append(p)
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in sorted(groups.items()):
        pts = sorted(pts, key=lambda p: p[x])
        for y in ys:
            vals = [(p[x], p[y]) for p in pts if p.get(y) is not None]
            if vals:
                label = name if len(ys) == 1 else f"{name} {y}"
                ax.plot([v[0] for v in vals], [v[1] for v in vals], marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save_fig(fig, path)
    plt.close(fig)
    return True


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _policy_caption(policy: Mapping[str, Any]) -> str:
    return (f"{len(policy['subjects'])} target subject(s) × {', '.join(policy['attributes'])} × "
            f"{', '.join(policy['languages'])} × {', '.join(policy['modalities'])} "
            f"(varies: {policy.get('factor', 'base')})")


def render_page(results: Sequence[Mapping[str, Any]], img_dir: Path, img_rel: str,
                commentary: str | None = None) -> str:
    """The Markdown page; writes the plots into `img_dir` (referenced as `img_rel/...`)."""
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m bench --page-only` from bench/results/*.json; "
        "do not edit by hand. -->",
        "",
        "Every method runs on the same policies, the same seed and the same data splits of the "
        "built-in world; the numbers are what `gatelang apply` wrote in each run's `report.json` "
        "(verification uses only splits the edit never saw). Intervals are 95% bootstrap "
        "intervals resampled by subject where the report gives per-subject results; a value "
        "without an interval is pooled over all queries.",
        "",
        "Reproduce:",
        "",
        "```bash",
        "python -m bench --quick   # smoke run, < 5 min on 2 CPU cores",
        "python -m bench           # the full grid",
        "python -m bench --real    # the SmolLM2-135M-Instruct row",
        "```",
        "",
        "Columns: *refusal/leak* are shares of protected queries about the targets (items the "
        "unedited model did not leak are excluded by `apply`); *locality* is accuracy on other "
        "subjects / the targets' other attributes relative to the unedited model; *over-refusal* "
        "is the share of locality queries refused; *utility* is benign-task accuracy relative to "
        "the unedited model; *neurons touched* is the patch's share of the model's MLP units.",
        "",
    ]
    lines += _methods_legend()
    for res in results:
        kind = res.get("suite", "?")
        lines += [f"## Suite `{kind}` ({res.get('_file', '')})", ""]
        lines.append(f"- machine: {machine_line(res.get('machine', {}))}")
        lines.append(f"- model: `{res.get('model', '?')}`, seed {res.get('seed', '?')}, "
                     f"stdlib {res.get('stdlib_version', '?')}, gatelang {res.get('gatelang_version', '?')}")
        lines.append(f"- duration: {_fmt_duration(res.get('duration_s'))} "
                     f"({res.get('created', '')})")
        if res.get("notes"):
            lines.append(f"- notes: {res['notes']}")
        lines.append("")
        for policy in res.get("policies", []):
            lines += [f"### `{policy['id']}`", "", _policy_caption(policy), "",
                      policy_table(res, policy)]
        wl = wins_and_losses(res)
        if wl:
            lines += ["### Where neural_gate wins and loses (computed)", "",
                      "A difference counts when the 95% intervals do not overlap, or, without "
                      f"intervals, when it exceeds {TIE_POINTS:.0f} points.", "", *wl, ""]
        stem = Path(res.get("_file", kind)).stem
        if plot_tradeoff(res, img_dir / f"{stem}_tradeoff.png"):
            lines += ["### Trade-off", "", f"![trade-off]({img_rel}/{stem}_tradeoff.png)", ""]
        failed = [r for r in res.get("runs", []) if not r.get("summary")]
        if failed:
            lines += ["### Runs that did not complete", ""]
            for r in failed:
                err = (r.get("error") or "").strip().splitlines()
                lines.append(f"- `{r['policy']}` / {r['method']}: exit {r.get('exit_code')}"
                             + (f" — `{err[-1][:200]}`" if err else ""))
            lines.append("")
        lines += _pass_time_section(res)
        lines += _cost_section(res, img_dir, img_rel, stem)
        lines += _real_section(res)
    if commentary:
        lines += ["## Commentary", "", commentary.strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


# "probe" and "gate" are pass families of results recorded before the edit kind was renamed.
PASS_FAMILIES = ("model_load", "data", "probe", "localize", "gate", "edit", "verify", "report",
                 "total")


def _pass_time_section(res: Mapping[str, Any]) -> list[str]:
    runs = [r for r in res.get("runs", []) if r.get("timing")]
    fams = [f for f in PASS_FAMILIES if any(f in r["timing"] for r in runs)]
    if not runs or not fams:
        return []
    out = ["### Wall time per pass (s) and peak memory", "",
           "| policy | method | " + " | ".join(f.replace("_", " ") for f in fams)
           + " | process wall | peak RSS (MiB) |",
           "|---|---|" + "---:|" * (len(fams) + 2)]
    for r in runs:
        cells = [f"{r['timing'][f]:.1f}" if f in r["timing"] else "–" for f in fams]
        out.append(f"| `{r['policy']}` | {r['method']} | " + " | ".join(cells)
                   + f" | {r.get('wall_s', 0):.1f} | {r.get('peak_rss_mb', 0):.0f} |")
    out.append("")
    return out


def _methods_legend() -> list[str]:
    """What each row is, from the registered methods the runs used (so the page cannot drift)."""
    from gatelang.methods import methods

    presets = methods()
    out = ["## Methods", "", "- **unedited**: the model before any edit (every report's "
           "`before` numbers)."]
    for m in ALL_METHODS:
        if m in presets:
            out.append(f"- **{m}**: {' '.join(presets[m].description.split())}")
    out += ["", "The random gate is given the layer and the gate size neural_gate chose on the "
            "same policy, and finetune the same layer, so they isolate *where* the gate is and "
            "*whether* there is one. Encoder remapping runs only on the policy with image "
            "queries (it edits the vision tower, not the decoder).", ""]
    return out


def _cost_section(res: Mapping[str, Any], img_dir: Path, img_rel: str, stem: str) -> list[str]:
    cost = res.get("cost") or {}
    out: list[str] = []
    targets = cost.get("apply_vs_targets") or []
    if targets:
        out += ["### Cost of `apply` vs number of targets", "",
                "| method | targets | wall (s) | peak RSS (MiB) | neurons touched |",
                "|---|---:|---:|---:|---:|"]
        for p in sorted(targets, key=lambda p: (p["method"], p["targets"])):
            nt = p.get("neurons_touched")
            out.append(f"| {p['method']} | {p['targets']} | {p['wall_s']:.1f} | "
                       f"{p.get('peak_rss_mb') or 0:.0f} | "
                       f"{'–' if nt is None else f'{nt * 100:.2f}%'} |")
        out.append("")
        if plot_cost(targets, "targets", ["wall_s"], "target subjects", "apply wall time, s",
                     "apply cost vs targets", img_dir / f"{stem}_cost_targets.png"):
            out += [f"![cost vs targets]({img_rel}/{stem}_cost_targets.png)", ""]
    sizes = {p["id"]: p.get("size") for p in res.get("policies", [])}
    by_size = [{"method": r["method"], "cells": sizes.get(r["policy"]), "wall_s": r["wall_s"]}
               for r in res.get("runs", []) if r.get("summary") and sizes.get(r["policy"])]
    if len({p["cells"] for p in by_size}) > 1 and plot_cost(
            by_size, "cells", ["wall_s"], "policy cells (subjects × attributes × languages × "
            "modalities)", "apply wall time, s", "apply cost vs policy size",
            img_dir / f"{stem}_cost_size.png"):
        out += ["### Cost of `apply` vs policy size", "",
                f"![apply cost vs policy size]({img_rel}/{stem}_cost_size.png)", ""]
    compile_pts = cost.get("compile_plan") or []
    if compile_pts:
        out += ["### Compile + plan time vs policy size", "",
                "| subjects | rules | policy cells | parse+check (s) | plan (s) | total (s) |",
                "|---:|---:|---:|---:|---:|---:|"]
        for p in sorted(compile_pts, key=lambda p: (p["cells"], p["rules"])):
            out.append(f"| {p['subjects']} | {p['rules']} | {p['cells']} | "
                       f"{p['compile_s']:.3f} | {p['plan_s']:.3f} | {p['total_s']:.3f} |")
        out.append("")
        pts = [dict(p, series=f"{p['rules']} rule(s)") for p in compile_pts]
        if plot_cost(pts, "cells", ["total_s"], "policy cells (subjects × attributes × "
                     "languages × modalities)", "compile + plan, s", "compile cost vs policy size",
                     img_dir / f"{stem}_cost_compile.png", group="series"):
            out += [f"![compile cost]({img_rel}/{stem}_cost_compile.png)", ""]
    probe = cost.get("probe_overhead")
    if probe:
        out += ["### Probe overhead", "",
                f"Hooked forward pass (probe sites) vs bare forward on `{probe.get('model')}`: "
                f"{probe['bare_s']:.3f} s vs {probe['hooked_s']:.3f} s for "
                f"{probe['prompts']} prompts (overhead {probe['overhead'] * 100:.1f}%).", ""]
    return out


def _real_section(res: Mapping[str, Any]) -> list[str]:
    real = res.get("real")
    if not real:
        return []
    out = ["### Real checkpoint: general ability before and after each edit", "",
           real.get("description", ""), "",
           "| model | factual QA | arithmetic | factual retained | arithmetic retained | "
           "perplexity (held-out English) |",
           "|---|---:|---:|---:|---:|---:|"]

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{v * 100:.0f}%"

    for row in real.get("rows", []):
        ppl = row.get("perplexity")
        out.append(f"| {row['name']} | {pct(row.get('factual'))} | {pct(row.get('arithmetic'))} "
                   f"| {pct(row.get('factual_retained'))} | {pct(row.get('arithmetic_retained'))} "
                   f"| {'–' if ppl is None else f'{ppl:.2f}'} |")
    out.append("")
    if real.get("notes"):
        out += [real["notes"], ""]
    return out


def write_page(results_dir: Path, page_path: Path, img_dir: Path) -> Path:
    results = load_results(results_dir.glob("*.json"))
    commentary_path = results_dir / "commentary.md"
    commentary = commentary_path.read_text(encoding="utf-8") if commentary_path.exists() else None
    img_rel = os.path.relpath(img_dir, page_path.parent)
    text = render_page(results, img_dir, img_rel, commentary)
    page_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=page_path.parent, suffix=".md")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, page_path)
    return page_path
