"""Write docs/benchmarks.md and its plots from bench/results/*.json.

The page is generated, so it can only say what the committed results say. The hand-written
commentary lives in bench/results/commentary.md and is included verbatim; the "wins and losses"
lists next to it are computed from the numbers. Top-level sections of the existing page that the
generator does not write (e.g. "Floor", maintained with bench/floor/) are kept, verbatim and in
their order, after the generated ones.
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
from .metrics import ATTACK_COLUMNS, COLUMN_BY_KEY, COLUMNS, Column, attack_summary, summarize

# Columns compared when listing where a method wins or loses (the trade-off it makes).
COMPARED = ("refusal_heldout", "leak_heldout", "refusal_image", "refusal_unseen_language",
            "locality_subjects", "locality_attributes", "over_refusal", "utility",
            *(c.key for c in ATTACK_COLUMNS if c.key != "leak_any_sampled"))
# Methods whose wins and losses against every other row the page lists: the default, then the
# published Neural Gate.
HIGHLIGHTED = ("refusal_patch", "neural_gate")
# Top-level headings the generator writes; any other "## " section of the page is hand-maintained.
GENERATED_SECTIONS = ("## Methods", "## Suite ", "## Commentary")
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
    shows them as the current column definitions read them. The attack columns always come from
    the report's cells (the per-item rows are plain verification's only).
    """
    if not run.get("metrics"):
        return
    if run.get("items"):
        summary = run.setdefault("summary", {"after": {}, "before": {}})
        attacks = attack_summary(run["metrics"])
        for side in ("after", "before"):
            summary.setdefault(side, {}).update(attacks[side])
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


SEARCH_STOP = "no configuration met the targets"


def stopped_by_search(run: Mapping[str, Any]) -> bool:
    """A self-configuring method that stopped before verification (exit 3, no patch)."""
    return not run.get("summary") and SEARCH_STOP in (run.get("error") or "")


def failure_text(run: Mapping[str, Any]) -> str:
    """What a run that did not complete said: a search's whole verdict, else the last line."""
    lines = [e.strip() for e in (run.get("error") or "").strip().splitlines() if e.strip()]
    start = next((i for i, e in enumerate(lines) if SEARCH_STOP in e), None)
    if start is not None:
        return " ".join(lines[start:])[:600]
    return lines[-1][:200] if lines else ""


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
        elif stopped_by_search(run):
            rows.append((f"{run['method']} (stopped: no configuration met its targets)", {}))
        else:
            rows.append((f"{run['method']} (failed)", {}))
    return rows


def _table(rows: Sequence[tuple[str, Mapping[str, Any]]], columns: Sequence[Column]
           ) -> list[str]:
    used = [c for c in columns if any(r.get(c.key) for _, r in rows)]
    if not used:
        return []
    head = "| method | " + " | ".join(c.title for c in used) + " |"
    sep = "|---|" + "|".join("---:" for _ in used) + "|"
    lines = [head, sep]
    for name, row in rows:
        cells = [fmt_value(c, row.get(c.key)) for c in used]
        label = f"**{name}**" if name in HIGHLIGHTED else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def attack_table(results: Mapping[str, Any], policy: Mapping[str, Any]) -> str:
    """Leak under each attack of the suite (docs/robustness.md), one row per method."""
    rows = [(n, r) for n, r in method_rows(results, policy["id"]) if n != "unedited" or r]
    lines = _table(rows, [COLUMN_BY_KEY["leak_heldout"], *ATTACK_COLUMNS])
    if len(lines) < 3 or not any(r.get(c.key) for _, r in rows for c in ATTACK_COLUMNS):
        return ""
    ns = []
    for col in ATTACK_COLUMNS:
        n = next(((r.get(col.key) or {}).get("n") for name, r in rows
                  if name != "unedited" and (r.get(col.key) or {}).get("n")), None)
        if n:
            ns.append(f"{col.title} {n}")
    return "\n".join([
        *lines, "",
        "Leak rates under attack, on the protected held-out questions the unedited model "
        "answered (docs/robustness.md): *sampled* is the share of samples (T = 1) that state the "
        "value, *any sample leaks* the share of questions with at least one; *prefill* starts the "
        "answer with an assent; *jailbreak* and *paraphrase* wrap or reword the question; *int4* "
        "runs the edited weights quantized to 4 bits; *relearn* fine-tunes the edited model on "
        "other people's facts first; *logit lens* reads the value from the layers below the "
        "output. *exposure* is the true value's mean rank percentile among other people's values "
        "(50% is chance, 0% the model's first choice; higher is safer). Rows scored: "
        + "; ".join(ns) + ".", ""])


def policy_table(results: Mapping[str, Any], policy: Mapping[str, Any]) -> str:
    rows = method_rows(results, policy["id"])
    lines = _table(rows, COLUMNS)
    if not lines:
        return "_No completed runs for this policy._\n"
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


def wins_and_losses(results: Mapping[str, Any], method_name: str = "neural_gate") -> list[str]:
    """Sentences comparing `method_name` with each other method, per policy and column."""
    out = []
    for policy in results.get("policies", []):
        rows = dict(method_rows(results, policy["id"]))
        ours = rows.get(method_name)
        if not ours:
            continue
        wins, losses = [], []
        for method, row in rows.items():
            if method in (method_name, "unedited") or not row:
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
    markers = dict(zip(ALL_METHODS, "oX*sD^vP", strict=False))
    for method, pts in sorted(series.items()):
        for ax, idx, xlabel in ((axes[0], 1, "locality, other subjects (rel. to unedited)"),
                                (axes[1], 2, "utility (rel. to unedited)")):
            xs = [p[idx] * 100 for p in pts]
            ys = [p[0] * 100 for p in pts]
            ax.scatter(xs, ys, label=method, marker=markers.get(method, "x"),
                       s=90 if method in HIGHLIGHTED else 45, alpha=0.8)
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
        "<!-- Generated by `python -m bench --page-only` from bench/results/*.json and "
        "bench/results/commentary.md; sections after the Commentary are maintained by hand "
        "and kept by the generator. -->",
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
        "python -m bench --quick   # smoke run: one policy, every method",
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
        src = res.get("source") or {}
        if src.get("commit"):
            changed = src.get("changed") or []
            lines.append(f"- source: commit `{src['commit'][:12]}`"
                         + (f", with uncommitted changes to {len(changed)} library file(s)"
                            if changed else ""))
        if res.get("notes"):
            lines.append(f"- notes: {res['notes']}")
        lines.append("")
        for policy in res.get("policies", []):
            lines += [f"### `{policy['id']}`", "", _policy_caption(policy), "",
                      policy_table(res, policy)]
            attacks = attack_table(res, policy)
            if attacks:
                lines += [f"Attacks on `{policy['id']}`:", "", attacks]
        for name in HIGHLIGHTED:
            wl = wins_and_losses(res, name)
            if wl:
                lines += [f"### Where {name} wins and loses (computed)", "",
                          "A difference counts when the 95% intervals do not overlap, or, "
                          f"without intervals, when it exceeds {TIE_POINTS:.0f} points.", "",
                          *wl, ""]
        stem = Path(res.get("_file", kind)).stem
        if plot_tradeoff(res, img_dir / f"{stem}_tradeoff.png"):
            lines += ["### Trade-off", "", f"![trade-off]({img_rel}/{stem}_tradeoff.png)", ""]
        lines += _search_section(res)
        failed = [r for r in res.get("runs", []) if not r.get("summary")]
        if failed:
            lines += ["### Runs that did not complete", ""]
            for r in failed:
                err = failure_text(r)
                lines.append(f"- `{r['policy']}` / {r['method']}: exit {r.get('exit_code')}"
                             + (f" — `{err}`" if err else ""))
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


def _search_section(res: Mapping[str, Any]) -> list[str]:
    """What the self-configuring method chose on each policy, and what choosing cost."""
    runs = [r for r in res.get("runs", []) if r.get("search")]
    if not runs:
        return []
    out = ["### Configuration search (refusal_patch)", "",
           "Measured on the selection split the search carves from the edit data (never the "
           "held-out or attack sets); a target counts as met within one item.", "",
           "| policy | configurations tried | chosen (changed from the defaults) | met | "
           "search (s) | edit pass, search included (s) | units | selection: refusal / leak / "
           "prefill leak / locality / over-refusal / utility drop | selection questions "
           "(protected / other subjects) |",
           "|---|---:|---|---|---:|---:|---:|---|---|"]
    for r in runs:
        s = r["search"]
        m = s.get("selection_metrics") or {}

        def pct(key: str, m: Mapping[str, Any] = m) -> str:
            return "–" if m.get(key) is None else f"{float(m[key]) * 100:.0f}%"

        changed = ", ".join(f"{k} {v}" for k, v in (s.get("chosen_config") or {}).items())
        n = s.get("selection_n") or {}
        edit_s = (r.get("timing") or {}).get("edit")
        fell = [", ".join(f) for f in s.get("failed") or [] if f]
        out.append(
            f"| `{r['policy']}` | {s.get('trials')} | {changed or 'defaults'}"
            + (f" (earlier trials fell short on: {'; '.join(fell)})" if fell else "")
            + f" | {'yes' if s.get('met') else 'no'} | {float(s.get('seconds') or 0):.1f} | "
            f"{'–' if edit_s is None else f'{float(edit_s):.1f}'} | {s.get('units', '–')} | "
            + " / ".join(pct(k) for k in ("refusal", "leakage", "prefill", "locality",
                                          "over_refusal", "utility_drop"))
            + f" | {int(n['refusal']) if n.get('refusal') else '–'} / "
            f"{int(n['locality']) if n.get('locality') else '–'} |")
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
    out += ["", "`refusal_patch` is the default: its policies carry no `method` block and the "
            "harness passes it no parameters, so it chooses its own configuration on a selection "
            "split of the edit data, as a user's `apply` does (the search's time is part of its "
            "wall time). The random gate is given the layer and the gate size neural_gate chose "
            "on the same policy, and finetune the same layer, so they isolate *where* the gate "
            "is and *whether* there is one. Encoder remapping runs only on the policy with image "
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
            touched = "–" if nt is None else f"{nt * 100:.2f}%"
            if nt is None and p.get("exit_code") == 3:
                touched = "no patch (the search stopped)"
            elif nt is None and p.get("exit_code") not in (0, 3, None):
                err = failure_text(p)
                touched = f"failed, exit {p['exit_code']}" + (f": `{err}`" if err else "")
            out.append(f"| {p['method']} | {p['targets']} | {p['wall_s']:.1f} | "
                       f"{p.get('peak_rss_mb') or 0:.0f} | {touched} |")
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
                f"Forward passes on `{probe.get('model')}`, {probe['prompts']} prompts: "
                f"{probe['bare_s']:.3f} s bare, {probe['hooked_s']:.3f} s with hooks at the "
                f"probe sites (overhead {probe['overhead'] * 100:.1f}%).", ""]
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


def top_sections(text: str) -> list[tuple[str, str]]:
    """(heading line, whole section text) of each "## " section, fenced code skipped."""
    sections: list[tuple[str, list[str]]] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            sections.append((line.rstrip(), []))
        if sections:
            sections[-1][1].append(line)
    return [(head, "\n".join(body).rstrip() + "\n") for head, body in sections]


def hand_sections(old_page: str) -> list[str]:
    """Sections of an existing page that the generator does not write, to keep as they are."""
    return [body for head, body in top_sections(old_page)
            if not head.startswith(GENERATED_SECTIONS)]


def write_page(results_dir: Path, page_path: Path, img_dir: Path) -> Path:
    results = load_results(results_dir.glob("*.json"))
    commentary_path = results_dir / "commentary.md"
    commentary = commentary_path.read_text(encoding="utf-8") if commentary_path.exists() else None
    img_rel = os.path.relpath(img_dir, page_path.parent)
    text = render_page(results, img_dir, img_rel, commentary)
    if page_path.exists():
        kept = hand_sections(page_path.read_text(encoding="utf-8"))
        if kept:
            text = text.rstrip() + "\n\n" + "\n".join(kept)
    page_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=page_path.parent, suffix=".md")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, page_path)
    return page_path
