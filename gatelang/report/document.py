"""report.json (for machines) and report.md / report.html (for reviewers), with PNG plots.

The schema of report.json is documented in docs/report.md; `REPORT_SCHEMA_VERSION` changes when
a field changes meaning. Markdown and HTML are rendered from the same JSON document, so what a
reviewer reads is exactly what a machine checks.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gatelang.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

REPORT_SCHEMA_VERSION = 2


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, unit: str = "%") -> str:
    return "–" if v is None else f"{v:.1f}{unit}"


def cell_table(metrics: Sequence[dict[str, Any]], check: str) -> list[dict[str, Any]]:
    """Rows of one check's metrics, one per (split, language, modality), metrics as columns."""
    rows: dict[tuple, dict[str, Any]] = {}
    for m in metrics:
        if m.get("check") != check:
            continue
        key = (m.get("group", ""), m["split"], m["language"], m["modality"])
        row = rows.setdefault(key, {"group": key[0], "split": key[1], "language": key[2],
                                    "modality": key[3], "n": m["n"],
                                    "excluded": m.get("excluded", 0)})
        row[m["metric"]] = (m["before"], m["after"])
    return [rows[k] for k in sorted(rows)]


# ------------------------------------------------------------------------------------ plots
def _plot_png(draw) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    try:
        draw(ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        return buf.getvalue()
    finally:
        plt.close(fig)


def plot_cells(rows: Sequence[dict[str, Any]], metric: str, title: str) -> bytes:
    labels = [f"{r['group'].replace('_', ' ')}\n{r['split']}\n{r['language']}/{r['modality']}"
              for r in rows]
    before = [100 * (r.get(metric, (None, None))[0] or 0) for r in rows]
    after = [100 * (r.get(metric, (None, None))[1] or 0) for r in rows]

    def draw(ax):
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], before, width=0.4, label="before", color="#9aa5b1")
        ax.bar([x + 0.2 for x in xs], after, width=0.4, label="after", color="#2f6fdf")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylim(0, 105)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)

    return _plot_png(draw)


def plot_layers(per_layer: dict[str, dict[str, int]], n_layers: int, total_units: int) -> bytes:
    def draw(ax):
        xs = list(range(n_layers))
        ys = [per_layer.get(str(i), {}).get("units", 0) for i in xs]
        ax.bar(xs, ys, color="#d9534f")
        ax.set_xlabel("decoder layer")
        ax.set_ylabel("MLP units changed")
        ax.set_title(f"neurons touched per layer (of {total_units} MLP units)", fontsize=10)
        ax.set_xticks(xs)

    return _plot_png(draw)


# The attacks on an edit (docs/robustness.md), in the order the report shows them.
ATTACK_CHECKS: tuple[str, ...] = ("sampled", "prefill", "jailbreak", "paraphrase", "exposure",
                                  "logit_lens", "quantized", "relearn")
SMALL_N = 30  # cells with fewer items are marked: their rates move a lot with one answer
DOCS = "docs/robustness.md"  # in the gatelang repository


def attack_rows(metrics: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (attack split, language, modality): leak before/after with its interval."""
    rows: dict[tuple, dict[str, Any]] = {}
    for m in metrics:
        if m.get("check") not in ATTACK_CHECKS:
            continue
        key = (ATTACK_CHECKS.index(m["check"]), m["split"], m["language"], m["modality"])
        row = rows.setdefault(key, {"check": m["check"], "split": m["split"],
                                    "language": m["language"], "modality": m["modality"],
                                    "n": m["n"], "excluded": m.get("excluded", 0)})
        row[m["metric"]] = m
    return [rows[k] for k in sorted(rows)]


def plot_attacks(rows: Sequence[dict[str, Any]]) -> bytes:
    """Leak rate before and after, per attack split (pooled over cells), with 95% intervals."""
    pooled: dict[str, list[float]] = {}
    for r in rows:
        m = r.get("leak_rate")
        if not m or not m["n"]:
            continue
        acc = pooled.setdefault(r["split"], [0.0, 0.0, 0.0])
        acc[0] += (m["before"] or 0) * m["n"]
        acc[1] += (m["after"] or 0) * m["n"]
        acc[2] += m["n"]
    splits = list(pooled)
    before = [100 * pooled[s][0] / pooled[s][2] for s in splits]
    after = [100 * pooled[s][1] / pooled[s][2] for s in splits]

    def draw(ax):
        xs = range(len(splits))
        ax.bar([x - 0.2 for x in xs], before, width=0.4, label="unedited", color="#9aa5b1")
        ax.bar([x + 0.2 for x in xs], after, width=0.4, label="edited", color="#d9534f")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(splits, fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("leak rate (%)")
        ax.set_title("protected values disclosed under each attack", fontsize=10)
        ax.legend(fontsize=8, loc="upper right")

    return _plot_png(draw)


def _interval(m: dict[str, Any] | None) -> str:
    if not m or m.get("after_low") is None:
        return "–"
    return f"{100 * m['after_low']:.0f}–{100 * m['after_high']:.0f}%"


def _robustness_lines(report: dict[str, Any], plots: dict[str, str]) -> list[str]:
    rows = attack_rows(report["metrics"])
    if not rows:
        return []
    lines = ['<a id="evidence-robustness"></a>', "", "## Robustness (attacks on the edit)", "",
             "Each attack asks the protected questions the way an attacker would; rows count "
             "only questions the unedited model answered with the true value. Leak rates are "
             "shares of answers (samples, prefixes, templates) that state any protected value of "
             "the subject; the interval is 95%, resampling subjects. "
             f"Cells with n < {SMALL_N} are marked *small n*. Definitions: "
             f"[docs/robustness.md]({DOCS}).", "",
             "| attack | language | modality | n | leak before | leak after | 95% interval | "
             "questions leaking at least once | refusal after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        leak, refuse, anyq = r.get("leak_rate"), r.get("refusal_rate"), r.get("leak_any")
        small = " *small n*" if r["n"] < SMALL_N else ""
        lines.append(
            f"| [{r['split']}]({DOCS}#{r['check']}) | {r['language']} | {r['modality']} | "
            f"{r['n']}{small} | {_pct(leak and leak['before'])} | {_pct(leak and leak['after'])} "
            f"| {_interval(leak)} | {_pct(anyq['after']) if anyq else '–'} | "
            f"{_pct(refuse and refuse['after'])} |")
    ranks = [r["exposure"] for r in rows if r.get("exposure")]
    if ranks:
        n = sum(m["n"] for m in ranks)
        before = sum(m["before"] * m["n"] for m in ranks) / n
        after = sum(m["after"] * m["n"] for m in ranks) / n
        lines += ["", f"Exposure: the true value's mean rank percentile among other subjects' "
                  f"values is {_pct(before)} before and {_pct(after)} after the edit "
                  f"(0% = the model's first choice, about 50% = chance; n={n}). For `exposure` "
                  "rows, *leak* means the true value is still ranked first."]
    if "robustness" in plots:
        lines += ["", f"![attacks]({plots['robustness']})"]
    lines.append("")
    return lines


# ------------------------------------------------------------------------------------ markdown
def render_markdown(report: dict[str, Any], plots: dict[str, str]) -> str:
    status = "ACCEPTED" if report["passed"] else "REJECTED"
    lines = [f"# gatelang report: {report['policy'].get('name') or report['policy'].get('path')}", ""]
    lines += [f"**Status: {status}** — {report['summary']}", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| policy | `{report['policy'].get('path')}` (sha256 `{report['policy'].get('sha256', '')[:12]}`) |",
              f"| model | `{report['model']['name']}` (weights `{report['model']['weights_sha256'][:12]}`) |",
              f"| method | {', '.join(report.get('methods', [])) or '–'} |",
              f"| seed | {report['seed']} |",
              f"| stdlib | {report['stdlib']['version']} |",
              f"| patch | `{report['patch'].get('file') or '–'}` sha256 `{(report['patch'].get('sha256') or '')[:12]}` |",
              ""]
    lines += ["## Requirements", "", "| # | requirement | value | n | result | evidence |",
              "|---|---|---|---|---|---|"]
    for i, r in enumerate(report["requirements"], 1):
        unit = " pts" if r["metric"] == "utility_drop" else "%"
        anchor = f"#{r['check_anchor']}" if r.get("check_anchor") else ""
        lines.append(
            f"| R{i} | `{r['name']}` | {_num(r['value'], unit)} | {r['n']} | "
            f"{'pass' if r['passed'] else '**FAIL**'} | [{r.get('evidence', 'rows')}]({anchor}) |"
        )
    lines.append("")
    for rule in report.get("rules", []):
        lines.append(f"- clause `{rule['text']}` → requirements {', '.join(rule['requirements']) or '–'}")
    if report.get("rules"):
        lines.append("")
    for check, title in (("refusal", "Protected queries (refusal and leakage)"),
                         ("locality", "Locality (other subjects, non-private attributes)"),
                         ("utility", "Utility (benign tasks)")):
        rows = cell_table(report["metrics"], check)
        if not rows:
            continue
        lines += [f'<a id="evidence-{check}"></a>', "", f"## {title}", ""]
        if check == "refusal":
            lines += ["Refusals count only in the question's language; a refusal in another "
                      "language is shown on its own and is not a refusal.", "",
                      "| split | language | modality | n | excluded | leak before | leak after | "
                      "refusal before | refusal after | other-language refusal after | "
                      "degenerate after |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in rows:
                lb, la = r.get("leak_rate", (None, None))
                rb, ra = r.get("refusal_rate", (None, None))
                _wb, wa = r.get("wrong_language_rate", (None, None))
                _db, da = r.get("degenerate_rate", (None, None))
                small = " *small n*" if r["n"] < SMALL_N else ""
                lines.append(f"| {r['split']} | {r['language']} | {r['modality']} | {r['n']}{small} | {r['excluded']} | "
                             f"{_pct(lb)} | {_pct(la)} | {_pct(rb)} | {_pct(ra)} | {_pct(wa)} | "
                             f"{_pct(da)} |")
        else:
            lines += ["| group | split | language | modality | n | accuracy before | accuracy after | over-refusal after |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in rows:
                ab, aa = r.get("accuracy", (None, None))
                _ob, oa = r.get("over_refusal", (None, None))
                small = " *small n*" if r["n"] < SMALL_N else ""
                lines.append(f"| {r['group']} | {r['split']} | {r['language']} | {r['modality']} | {r['n']}{small} | "
                             f"{_pct(ab)} | {_pct(aa)} | {_pct(oa)} |")
        if check in plots:
            lines += ["", f"![{title}]({plots[check]})"]
        lines.append("")
    lines += _robustness_lines(report, plots)
    p = report["patch"]
    lines += ["## What the patch changes", "",
              f"- MLP units touched: **{p['neurons_touched']} of {p['neurons_total']}** "
              f"({_num(100 * p['neurons_touched'] / max(1, p['neurons_total']))} of the model's MLP units)",
              f"- residual dims written: {p.get('dims_touched', 0)} of {p.get('dims_total', 0)}",
              f"- parameters changed: {p['params_changed']}",
              f"- tensors: {', '.join(t['name'] + ' (' + t['kind'] + ')' for t in p.get('tensors', [])) or 'none'}",
              ""]
    if p.get("per_layer"):
        lines += ["| layer | MLP units changed | residual dims changed |", "|---|---|---|"]
        for layer, v in sorted(p["per_layer"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {layer} | {v['units']} | {v['dims']} |")
        lines.append("")
    if "layers" in plots:
        lines += [f"![neurons per layer]({plots['layers']})", ""]
    loc = report.get("localization", {})
    if loc:
        lines += ["## Localization", ""]
        for key, value in loc.items():
            lines.append(f"- {key}: {value}")
        lines.append("")
    lines += ["## Timing", "", "| pass | seconds | cached |", "|---|---|---|"]
    for t in report["timing"]["passes"]:
        lines.append(f"| {t['op']} {t.get('label', '')} | {t['seconds']:.2f} | {'yes' if t['cached'] else ''} |")
    lines += [f"| **total** | **{report['timing']['total_s']:.2f}** | |", ""]
    return "\n".join(lines)


def render_html(markdown_text: str, title: str) -> str:
    """A self-contained HTML page from the Markdown subset the report uses."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;line-height:1.4}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
           "font-size:13px}code{background:#f3f3f3}</style></head><body>"]
    in_table = False
    import re

    def inline(text: str) -> str:
        t = html.escape(text)
        t = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r"<img alt='\1' src='\2'>", t)
        t = re.sub(r"\[([^\]]*)\]\(([^)]*)\)", r"<a href='\2'>\1</a>", t)
        t = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)
        t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
        return t

    for line in markdown_text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
                out.append("<tr>" + "".join(f"<th>{inline(c)}</th>" for c in cells) + "</tr>")
            else:
                out.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith('<a id="'):
            out.append(line)
        elif line.startswith("## "):
            out.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{inline(line[2:])}</h1>")
        elif line.startswith("- "):
            out.append(f"<li>{inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    if in_table:
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_documents(out_dir: Path, report: dict[str, Any]) -> dict[str, str]:
    """Write report.json, the plots, report.md and report.html; returns file name -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    for check, metric, title in (("refusal", "refusal_rate", "refusal on protected queries"),
                                 ("locality", "accuracy", "locality accuracy"),
                                 ("utility", "accuracy", "utility accuracy")):
        rows = cell_table(report["metrics"], check)
        if rows:
            name = f"plot-{check}.png"
            atomic_write_bytes(out_dir / name, plot_cells(rows, metric, title))
            plots[check] = name
    attacks = attack_rows(report["metrics"])
    if attacks:
        atomic_write_bytes(out_dir / "plot-robustness.png", plot_attacks(attacks))
        plots["robustness"] = "plot-robustness.png"
    p = report["patch"]
    if p.get("per_layer") is not None and report["model"].get("num_layers"):
        atomic_write_bytes(out_dir / "plot-layers.png",
                           plot_layers(p["per_layer"], report["model"]["num_layers"], p["neurons_total"]))
        plots["layers"] = "plot-layers.png"
    md = render_markdown(report, plots)
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", md)
    title = f"gatelang report: {report['policy'].get('name') or ''}"
    atomic_write_text(out_dir / "report.html", render_html(md, title))
    return {"report.json": str(out_dir / "report.json"), "report.md": str(out_dir / "report.md"),
            "report.html": str(out_dir / "report.html"), **{k: str(out_dir / v) for k, v in plots.items()}}
