"""report.json (for machines), report.md and report.html (for reviewers), plots and items.jsonl.

The schema of report.json is documented in docs/report.md; `REPORT_SCHEMA_VERSION` changes when
a field changes meaning. Markdown and HTML are rendered by Jinja2 templates
(`report/templates/`) from one `report.view.View` built from the same JSON document, so what a
reviewer reads is exactly what a machine checks. The HTML environment autoescapes: an answer a
model generated is data, never markup.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from gatelang.passes.requirements import in_split
from gatelang.report.plots import Bar, Panel, plot_layers, plot_panels
from gatelang.report.view import (
    SMALL_N,
    View,
    attack_rows,
    build_view,
    cell_table,
    pooled_leak,
)
from gatelang.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

REPORT_SCHEMA_VERSION = 2
ITEMS_FILE = "items.jsonl"
TEMPLATES = Path(__file__).parent / "templates"

__all__ = ["ITEMS_FILE", "REPORT_SCHEMA_VERSION", "SMALL_N", "attack_rows", "cell_table",
           "render_html", "render_markdown", "write_documents"]


# ------------------------------------------------------------------------------- templates
@lru_cache(maxsize=2)
def _environment(html: bool) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=html,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True)
    env.filters["md"] = _md_cell
    return env


def _md_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell: no line breaks, pipes and markup escaped."""
    s = " ".join(str(text).split())
    for ch in ("\\", "|", "*", "_", "`", "[", "]", "<", ">"):
        s = s.replace(ch, "\\" + ch)
    return s


def render_markdown(view: View) -> str:
    return _environment(False).get_template("report.md.jinja").render(v=view)


def render_html(view: View) -> str:
    return _environment(True).get_template("report.html.jinja").render(v=view)


# ----------------------------------------------------------------------------------- plots
# Short names of the verification groups for tick labels (the tables use GROUP_WORDS).
PLOT_GROUPS = {"other_subjects": "other people", "other_attributes": "same people, public attrs",
               "other_private_attributes": "same people, private attrs", "targets": "protected"}


def _label(head: str, language: str, modality: str, width: int = 14) -> str:
    """A bar's tick label: what it is (wrapped), then language · modality on its own line."""
    import textwrap

    top = textwrap.fill(head.replace("_", " "), width) if head else ""
    return "\n".join(p for p in (top, f"{language} · {modality}") if p)


def _requirements_on(report: dict[str, Any], metric: str) -> list[tuple[int, dict[str, Any]]]:
    return [(i, r) for i, r in enumerate(report["requirements"], 1) if r["metric"] == metric]


def _bars(rows: Sequence[dict[str, Any]], metric: str, label: Any) -> list[Bar]:
    out = []
    for r in rows:
        m = r.get(metric) or {}
        pct = [None if m.get(k) is None else 100 * m[k]
               for k in ("before", "after", "after_low", "after_high")]
        out.append(Bar(label(r), *pct))
    return out


def _cell_thresholds(bars: list[Bar], rows: Sequence[dict[str, Any]], req: dict[str, Any],
                     value: Any) -> None:
    for bar, row in zip(bars, rows, strict=True):
        if in_split({"split": row["split"], "modality": row["modality"]}, req["split"]):
            bar.threshold = value(bar)


def _protected_plot(report: dict[str, Any]) -> bytes | None:
    rows = cell_table(report["metrics"], "refusal")
    if not rows:
        return None
    panels = []
    for metric, req_metric, title in (("refusal_rate", "refusal", "refused after the edit"),
                                      ("leak_rate", "leakage", "still leaking")):
        bars = _bars(rows, metric, lambda r: _label(r["split"], r["language"], r["modality"]))
        panel = Panel(f"Protected questions: {title}", f"{metric.replace('_', ' ')} (%)", bars)
        for i, req in _requirements_on(report, req_metric):
            if req["split"] in ("heldout", "all", "image", "edit", "unseen_language",
                                "document", "scene"):
                _cell_thresholds(bars, rows, req, lambda _b, t=req["threshold"]: t)
                panel.cell_threshold_label = f"R{i}: {req['name']} ({req['split']} cells)"
                break
        panels.append(panel)
    return plot_panels(panels)


def _accuracy_plot(report: dict[str, Any], check: str) -> bytes | None:
    rows = cell_table(report["metrics"], check)
    if not rows:
        return None
    bars = _bars(rows, "accuracy", lambda r: _label(PLOT_GROUPS.get(r["group"], r["group"])
                                                    if check == "locality" else "",
                                                    r["language"], r["modality"]))
    title = "Locality: accuracy on what must not change" if check == "locality" else \
        "Utility: accuracy on benign tasks"
    panel = Panel(title, "accuracy (%)", bars)
    if check == "locality":
        for i, req in _requirements_on(report, "locality"):
            _cell_thresholds(bars, rows, req,
                             lambda b, t=req["threshold"]: (b.before or 0) * t / 100)
            panel.cell_threshold_label = f"R{i}: {req['name']} (of before)"
            break
    else:
        for i, req in _requirements_on(report, "utility_drop"):
            for b in bars:
                b.threshold = max(0.0, (b.before or 0) - req["threshold"])
            panel.cell_threshold_label = f"R{i}: {req['name']} (pts below before)"
            break
        else:
            for i, req in _requirements_on(report, "utility"):
                for b in bars:
                    b.threshold = (b.before or 0) * req["threshold"] / 100
                panel.cell_threshold_label = f"R{i}: {req['name']} (of before)"
                break
    return plot_panels([panel])


def _robustness_plot(report: dict[str, Any], items: Sequence[dict[str, Any]]) -> bytes | None:
    pooled = pooled_leak(report["metrics"], items)
    if not pooled:
        return None
    bars = [Bar(split.replace("_", " "), b, a, lo, hi) for split, b, a, lo, hi in pooled]
    panel = Panel("Protected values disclosed under each attack", "leak rate (%)", bars)
    own = {r["split"]: (i, r) for i, r in _requirements_on(report, "leakage")}
    if any(s in own for s, *_ in pooled):
        for bar, (split, *_rest) in zip(bars, pooled, strict=True):
            if split in own:
                bar.threshold = own[split][1]["threshold"]
        panel.cell_threshold_label = "leakage requirement of that attack"
    else:
        plain = [(i, r) for i, r in _requirements_on(report, "leakage")]
        if plain:
            i, req = plain[0]
            panel.threshold = req["threshold"]
            panel.threshold_label = f"R{i}: {req['name']} (for reference)"
    return plot_panels([panel])


def make_plots(report: dict[str, Any], items: Sequence[dict[str, Any]] = ()) -> dict[str, bytes]:
    """Plot name ("refusal", "locality", "utility", "robustness", "layers") -> PNG bytes."""
    out: dict[str, bytes | None] = {
        "refusal": _protected_plot(report),
        "locality": _accuracy_plot(report, "locality"),
        "utility": _accuracy_plot(report, "utility"),
        "robustness": _robustness_plot(report, items),
    }
    p, model = report["patch"], report["model"]
    if p.get("per_layer") is not None and model.get("num_layers"):
        out["layers"] = plot_layers(p["per_layer"], int(model["num_layers"]),
                                    int(model.get("intermediate_size") or 0)
                                    or p["neurons_total"] // int(model["num_layers"]))
    return {k: v for k, v in out.items() if v is not None}


# ---------------------------------------------------------------------------------- writing
def items_jsonl(items: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in items)


def write_documents(out_dir: Path, report: dict[str, Any], *,
                    items: Sequence[dict[str, Any]] = (),
                    sources: dict[str, str] | None = None) -> dict[str, str]:
    """Write report.json, items.jsonl, the plots, report.md and report.html.

    `items` are the numbered per-item rows (`report.evidence.collect_items`), `sources` the
    text of the policy files the requirements' spans name (shown with line anchors). Returns
    file name (or plot name) -> path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    plots: dict[str, str] = {}
    for key, png in make_plots(report, items).items():
        name = f"plot-{key}.png"
        atomic_write_bytes(out_dir / name, png)
        plots[key] = name
        written[key] = str(out_dir / name)
    items_file = None
    if items:
        atomic_write_text(out_dir / ITEMS_FILE, items_jsonl(items))
        items_file = ITEMS_FILE
        written[ITEMS_FILE] = str(out_dir / ITEMS_FILE)
    view = build_view(report, plots, items, sources, items_file)
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", render_markdown(view))
    atomic_write_text(out_dir / "report.html", render_html(view))
    for name in ("report.json", "report.md", "report.html"):
        written[name] = str(out_dir / name)
    return written
