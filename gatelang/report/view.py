"""What the report shows, as typed values: the one model both report.md and report.html render.

`build_view` turns report.json's document (plus the per-item rows and the policy's source) into
sections of ready-to-print cells. The templates only lay them out, so Markdown and HTML cannot
disagree on a number, and the wording of every sentence lives here, next to the data it
describes, not scattered through markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gatelang.report.intervals import share_interval

SMALL_N = 30  # cells with fewer items are marked: one answer moves their rate by > 3 points
ROBUSTNESS_DOC = "docs/robustness.md"
ATTACK_CHECKS: tuple[str, ...] = ("sampled", "prefill", "jailbreak", "paraphrase", "exposure",
                                  "logit_lens", "quantized", "relearn")
ANSWER_EXAMPLES = 3  # rows per requirement quoted in report.md (report.html lists them all)

# What each requirement metric measures, in a reviewer's words.
METRIC_WORDS: dict[str, str] = {
    "refusal": "protected questions refused (in the question's language) after the edit",
    "leakage": "protected questions whose answer still states the value after the edit",
    "locality": "accuracy on other people and attributes after the edit, relative to before",
    "over_refusal": "questions about other people and attributes refused after the edit",
    "utility": "accuracy on benign tasks after the edit, relative to before",
    "utility_drop": "accuracy on benign tasks lost (before − after, in points)",
    "degenerate": "answers that are empty or a repeated token after the edit",
    "neurons_touched": "share of the model's MLP units whose weights the patch changes",
    "exposure": "mean rank of the true value among other people's values (0% = first choice)",
    "identification": "face images still identified after the edit",
}

GROUP_WORDS: dict[str, str] = {
    "targets": "protected people", "other_subjects": "other people",
    "other_attributes": "same people, public attributes",
    "other_private_attributes": "same people, other private attributes",
    "kept": "kept", "utility": "benign tasks", "target": "protected people", "other": "others",
}


@dataclass
class Cell:
    """A rate with its interval, as printed: `text` "47.9%", `ci` "39–57%"."""

    text: str
    ci: str = ""
    bad: bool = False
    small: bool = False  # an item count under SMALL_N

    @property
    def plain(self) -> str:
        return f"{self.text} ({self.ci})" if self.ci else self.text


@dataclass
class Answer:
    row: int
    subject: str
    where: str
    prompt: str
    expected: str
    before: str
    after: str
    before_text: str
    after_text: str
    against: bool


@dataclass
class Requirement:
    id: str
    name: str
    words: str
    value: Cell
    n: int
    small: bool
    passed: bool
    threshold: str
    clause_line: int | None
    clause_file: str
    clause_text: str
    section: str  # anchor of the section with its cells
    answers: list[Answer] = field(default_factory=list)

    @property
    def against(self) -> int:
        return sum(1 for a in self.answers if a.against)


@dataclass
class Table:
    """One section's table: column titles and rows of cells (first columns are plain text)."""

    anchor: str
    title: str
    intro: str
    columns: list[str]
    rows: list[list[Cell]]
    plot: str | None = None
    plot_alt: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class SourceLine:
    number: int
    text: str
    requirement: str = ""  # "R1" when a requirement comes from this line


@dataclass
class View:
    title: str
    status: str
    passed: bool
    summary: str
    facts: list[tuple[str, str]]
    requirements: list[Requirement]
    rules: list[tuple[str, int | None, str]]  # text, line, requirement ids
    tables: list[Table]
    patch_words: list[str]
    tensors: list[tuple[str, str, str]]  # name, what changed, shape
    layers_plot: str | None
    method_words: list[str]
    method_settings: list[tuple[str, str]]
    localization_words: list[str]
    timing: list[tuple[str, str, str]]
    total_s: str
    policy_file: str
    source: list[SourceLine]
    items_file: str | None
    items_count: int


# ---------------------------------------------------------------------------------- numbers
def pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def ci_text(low: float | None, high: float | None, scale: float = 100.0, unit: str = "%") -> str:
    if low is None or high is None:
        return ""
    lo, hi = scale * low, scale * high
    digits = 0 if unit == "%" and scale == 100.0 else 1
    return span_text(lo, hi, unit, digits)


def span_text(lo: float, hi: float, unit: str, digits: int = 1) -> str:
    """"45–50%", or "−1.4 to 0.7 pts" when a bound is negative (a dash would read as minus)."""
    if lo < 0 or hi < 0:
        return f"{lo:.{digits}f} to {hi:.{digits}f}{unit}".replace("-", "−")
    return f"{lo:.{digits}f}–{hi:.{digits}f}{unit}"


def rate_cell(m: dict[str, Any] | None, side: str) -> Cell:
    if not m:
        return Cell("–")
    return Cell(pct(m.get(side)), ci_text(m.get(f"{side}_low"), m.get(f"{side}_high")))


def _int(n: int) -> str:
    return f"{n:,}"


# ---------------------------------------------------------------------------------- sections
def cell_table(metrics: Sequence[dict[str, Any]], check: str) -> list[dict[str, Any]]:
    """Rows of one check's metric records, one per (group, split, language, modality), each
    metric's record under its name."""
    rows: dict[tuple, dict[str, Any]] = {}
    for m in metrics:
        if m.get("check") != check:
            continue
        key = (m.get("group", ""), m["split"], m["language"], m["modality"])
        row = rows.setdefault(key, {"group": key[0], "split": key[1], "language": key[2],
                                    "modality": key[3], "n": m["n"],
                                    "excluded": m.get("excluded", 0)})
        row[m["metric"]] = m
    return [rows[k] for k in sorted(rows)]


def attack_rows(metrics: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (attack, split, language, modality), each metric's record under its name."""
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


def _protected_table(metrics: Sequence[dict[str, Any]]) -> Table | None:
    rows = cell_table(metrics, "refusal")
    if not rows:
        return None
    out = []
    for r in rows:
        out.append([Cell(r["split"].replace("_", " ")), Cell(r["language"]), Cell(r["modality"]),
                    Cell(_int(r["n"]), small=r["n"] < SMALL_N), Cell(_int(r["excluded"])),
                    rate_cell(r.get("leak_rate"), "after"),
                    rate_cell(r.get("refusal_rate"), "after"),
                    rate_cell(r.get("wrong_language_rate"), "after"),
                    rate_cell(r.get("degenerate_rate"), "after")])
    return Table(
        "evidence-refusal", "Protected questions (refusal and leakage)",
        "Only questions the unedited model answered with the true value count (n); the others "
        "are listed as excluded: an edit cannot protect what the model never disclosed. Before "
        "the edit every counted question leaked, so only the edited model's rates are shown. A "
        "refusal counts only in the question's language; a refusal in another language is "
        "shown on its own and is not a refusal.",
        ["split", "language", "modality", "n", "excluded", "leak after", "refusal after",
         "refusal in another language", "degenerate after"], out)


def _accuracy_table(metrics: Sequence[dict[str, Any]], check: str) -> Table | None:
    rows = cell_table(metrics, check)
    if not rows:
        return None
    out = []
    for r in rows:
        acc = r.get("accuracy")
        before, after = rate_cell(acc, "before"), rate_cell(acc, "after")
        out.append([Cell(GROUP_WORDS.get(r["group"], r["group"].replace("_", " "))),
                    Cell(r["split"].replace("_", " ")), Cell(r["language"]),
                    Cell(r["modality"]), Cell(_int(r["n"]), small=r["n"] < SMALL_N), before, after,
                    rate_cell(r.get("over_refusal"), "after")])
    if check == "locality":
        return Table("evidence-locality", "Locality (what the edit must leave alone)",
                     "Questions about other people, and about the protected people's other "
                     "attributes: accuracy is the share answered with the true value.",
                     ["asked about", "split", "language", "modality", "n", "accuracy before",
                      "accuracy after", "refused after"], out)
    return Table("evidence-utility", "Utility (benign tasks)",
                 "Benign tasks with known answers (no person involved).",
                 ["task", "split", "language", "modality", "n", "accuracy before",
                  "accuracy after", "refused after"], out)


def _identification_table(metrics: Sequence[dict[str, Any]]) -> Table | None:
    rows = cell_table(metrics, "identification")
    if not rows:
        return None
    out = []
    for r in rows:
        m = r.get("leak_rate") or r.get("accuracy")
        out.append([Cell(GROUP_WORDS.get(r["group"], r["group"])), Cell(r["modality"]),
                    Cell(_int(r["n"]), small=r["n"] < SMALL_N), rate_cell(m, "before"), rate_cell(m, "after")])
    return Table("evidence-identification", "Identification (face images)",
                 "Face images of the protected people (identified = named correctly) and of "
                 "others (accuracy).", ["who", "modality", "n", "before", "after"], out)


def _robustness_table(metrics: Sequence[dict[str, Any]]) -> Table | None:
    rows = attack_rows(metrics)
    if not rows:
        return None
    out = []
    for r in rows:
        leak, refuse, anyq = r.get("leak_rate"), r.get("refusal_rate"), r.get("leak_any")
        out.append([Cell(r["split"].replace("_", " ")), Cell(r["language"]),
                    Cell(r["modality"]), Cell(_int(r["n"]), small=r["n"] < SMALL_N), rate_cell(leak, "before"),
                    rate_cell(leak, "after"), rate_cell(anyq, "after") if anyq else Cell("–"),
                    rate_cell(refuse, "after")])
    notes = []
    ranks = [r["exposure"] for r in rows if r.get("exposure")]
    if ranks:
        n = sum(m["n"] for m in ranks)
        before = sum(m["before"] * m["n"] for m in ranks) / n
        after = sum(m["after"] * m["n"] for m in ranks) / n
        notes.append(f"Exposure: among other people's values, the true value's mean rank "
                     f"percentile is {pct(before)} before and {pct(after)} after the edit (0% = "
                     f"the model's first choice, about 50% = chance; n = {n}). In the exposure "
                     "rows, a leak means the true value is still ranked first.")
    return Table(
        "evidence-robustness", "Robustness (attacks on the edit)",
        "Each attack asks the protected questions the way an attacker would (sampling, a "
        "forced answer prefix, jailbreak and paraphrase templates, ranking the true value, "
        "reading intermediate layers, quantizing, fine-tuning it back); only questions the "
        "unedited model answered with the true value count. A leak is an answer (a sample, a "
        f"prefix, a template) that states a protected value of the person. Definitions: "
        f"{ROBUSTNESS_DOC} in the gatelang repository.",
        ["attack", "language", "modality", "n", "leak before", "leak after",
         "questions leaking at least once", "refusal after"], out, notes=notes)


# ------------------------------------------------------------------------------ requirements
def _unit(metric: str) -> str:
    return " pts" if metric == "utility_drop" else "%"


def _against(metric: str, row: dict[str, Any]) -> bool:
    """Whether an evidence row counts against its requirement (shown first, highlighted)."""
    after, before = row.get("after"), row.get("before")
    if metric == "refusal":
        return after != "refuse"
    if metric in ("leakage",):
        return after == "leak"
    if metric in ("locality", "utility", "utility_drop"):
        return before == "leak" and after != "leak"
    if metric == "over_refusal":
        return after == "refuse"
    if metric == "degenerate":
        return after == "degenerate"
    if metric == "identification":
        return after == "identified"
    if metric == "exposure":
        return row.get("rank_after") == 0
    return False


def _where(r: dict[str, Any]) -> str:
    parts = [r.get("attribute") or "", r.get("language") or "", r.get("modality") or "",
             (r.get("split") or "").replace("_", " ")]
    variant = r.get("variant")
    if variant:
        parts.append(str(variant))
    return " · ".join(p for p in parts if p)


def _answers(req: dict[str, Any], by_row: dict[int, dict[str, Any]]) -> list[Answer]:
    out = []
    for k in req.get("evidence_rows") or []:
        r = by_row.get(k)
        if r is None:
            continue
        out.append(Answer(
            row=k, subject=str(r.get("subject") or "–"), where=_where(r),
            prompt=str(r.get("prompt") or ""), expected=str(r.get("answer_value") or ""),
            before=str(r.get("before") or ""), after=str(r.get("after") or ""),
            before_text=str(r.get("before_text") or ""), after_text=str(r.get("after_text") or ""),
            against=_against(req["metric"], r)))
    out.sort(key=lambda a: (not a.against, a.row))
    return out


def _line_text(sources: dict[str, str], file: str, line: int | None) -> str:
    if line is None or file not in sources:
        return ""
    lines = sources[file].splitlines()
    return lines[line - 1].strip() if 0 < line <= len(lines) else ""


def _requirements(report: dict[str, Any], items: Sequence[dict[str, Any]],
                  sources: dict[str, str]) -> list[Requirement]:
    by_row = {r["row"]: r for r in items}
    out = []
    for i, r in enumerate(report["requirements"], 1):
        unit = _unit(r["metric"])
        value = "–" if r.get("value") is None else f"{r['value']:.1f}{unit}".replace("-", "−")
        ci = ""
        if r.get("low") is not None and r.get("high") is not None:
            ci = span_text(float(r["low"]), float(r["high"]), unit)
        span = r.get("span") or {}
        line = span.get("line") if isinstance(span, dict) else None
        file = span.get("file", "") if isinstance(span, dict) else ""
        op = {">=": "≥", "<=": "≤"}.get(r["op"], r["op"])
        out.append(Requirement(
            id=f"R{i}", name=r["name"], words=METRIC_WORDS.get(r["metric"], r["metric"]),
            value=Cell(value, ci, bad=not r["passed"]), n=int(r.get("n") or 0),
            small=0 < int(r.get("n") or 0) < SMALL_N and r["metric"] != "neurons_touched",
            passed=bool(r["passed"]), threshold=f"{op} {r['threshold']:g}{unit}",
            clause_line=line, clause_file=file, clause_text=_line_text(sources, file, line),
            section=r.get("check_anchor") or "", answers=_answers(r, by_row)))
    return out


# ----------------------------------------------------------------------------- plain words
def _patch_words(report: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, str]]]:
    p, model = report["patch"], report["model"]
    per_layer = {int(k): v for k, v in (p.get("per_layer") or {}).items()}
    n_layers = int(model.get("num_layers") or 0)
    hidden = int(model.get("hidden_size") or 0)
    inter = int(model.get("intermediate_size") or 0)
    words: list[str] = []
    tensors = p.get("tensors") or []
    if not tensors:
        return ["The patch changes no weight: the edited model is the base model."], []
    layers = sorted(k for k, v in per_layer.items() if v.get("units") or v.get("dims"))
    where = ("decoder layer " + str(layers[0]) if len(layers) == 1 else
             "decoder layers " + ", ".join(map(str, layers))) if layers else "the model"
    units, total = int(p.get("neurons_touched") or 0), int(p.get("neurons_total") or 0)
    share = f" ({100 * units / total:.2g}%)" if total else ""
    words.append(
        f"The patch replaces {_int(int(p.get('params_changed') or 0))} weights in "
        f"{len(tensors)} tensor{'s' if len(tensors) != 1 else ''}, all in {where}. Everything "
        "else in the model is unchanged.")
    if units:
        per = (f"{_int(inter)} per layer, {_int(total)} in the model's {n_layers} layers"
               if inter and n_layers else f"{_int(total)} in all")
        words.append(
            f"It rewrites {_int(units)} MLP units (neurons) of {_int(total)}{share}; the "
            f"model has {per}. A unit counts once whether its output column, its input rows, "
            "or both changed.")
    dims = int(p.get("dims_touched") or 0)
    if dims and hidden:
        in_layer = [v.get("dims", 0) for v in per_layer.values() if v.get("dims")]
        full = all(d == hidden for d in in_layer)
        if full and units:
            words.append(
                f"Each changed output column writes to every one of the layer's {hidden} "
                f"residual-stream dimensions, so the edit reaches all {hidden} dimensions of "
                f"{'that layer' if len(in_layer) == 1 else 'each edited layer'} "
                f"({_int(dims)} of the {_int(hidden * n_layers)} dimensions counted over all "
                f"{n_layers} layers); this is not a separate, larger change.")
        else:
            words.append(
                f"It changes the down projection's output for {_int(dims)} residual-stream "
                f"dimensions ({_int(dims)} of {_int(hidden * n_layers)} over all {n_layers} "
                f"layers, {hidden} per layer).")
    rows = []
    for t in tensors:
        shape = list(t.get("shape") or [])
        count, kind = int(t.get("count") or 0), t.get("kind")
        if kind == "rows" and shape:
            what = f"{_int(count)} of {_int(shape[0])} rows"
        elif kind == "cols" and len(shape) > 1:
            what = f"{_int(count)} of {_int(shape[1])} columns"
        else:
            what = "the whole tensor"
        rows.append((t["name"], what, " × ".join(str(s) for s in shape)))
    return words, rows


def _method_words(report: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    words, settings = [], []
    for m in report.get("method") or []:
        how = f"profile {m['profile']}" if m.get("profile") else "its default settings"
        over = m.get("overrides") or []
        extra = f", with {', '.join(over)} set in the policy" if over else ""
        words.append(f"Policy {m['policy']} uses the method {m['method']} with {how}{extra}.")
        for k, v in sorted((m.get("params") or {}).items()):
            settings.append((f"{m['method']}.{k}" if len(report["method"]) > 1 else k, _value(v)))
    for e in report.get("edits") or []:
        facts = []
        if e.get("layer") is not None:
            facts.append(f"edited decoder layer {e['layer']}")
        if e.get("units_selected") is not None:
            facts.append(f"confined the update to {_int(int(e['units_selected']))} selected MLP "
                         "units")
        if e.get("pairs") is not None:
            facts.append(f"trained on {_int(int(e['pairs']))} batches of question pairs")
        if e.get("loss_first") is not None and e.get("loss_last_mean") is not None:
            facts.append(f"its loss went from {e['loss_first']:.3g} to {e['loss_last_mean']:.3g}"
                         " (mean of the last epoch)")
        if facts:
            words.append(f"The edit ({e.get('method') or e.get('op')}) " + "; ".join(facts) + ".")
    return words, settings


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v) or "none"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_value(x)}" for k, x in sorted(v.items())) or "none"
    return str(v)


def _localization_words(report: dict[str, Any]) -> list[str]:
    loc = report.get("localization") or {}
    words = []
    if "layer" in loc:
        words.append(f"The localizer chose decoder layer {loc['layer']}.")
    gate = loc.get("gate dims")
    if isinstance(gate, str) and " of " in gate:
        size, _, of = gate.partition(" of ")
        if size.strip() == "0":
            words.append(
                f"Its learned gate kept none of the layer's {of.strip()} residual-stream "
                "dimensions (no dimension was selected often enough to pass the gate "
                "threshold), so the gate did not narrow the edit; what the patch changes is "
                "listed above.")
        else:
            words.append(f"Its learned gate kept {size.strip()} of the layer's {of.strip()} "
                         "residual-stream dimensions: the dimensions the edit's loss "
                         "concentrates on.")
    shares = loc.get("layer search (share of gated dims)")
    if isinstance(shares, dict) and shares:
        listed = ", ".join(f"layer {k}: {100 * float(v):.0f}%" for k, v in
                           sorted(shares.items(), key=lambda kv: int(kv[0])))
        words.append(f"Layer search, share of each candidate layer's dimensions in the gate: "
                     f"{listed}.")
    if "privacy-universal neurons" in loc:
        words.append(f"Privacy neurons found in every language: "
                     f"{_int(int(loc['privacy-universal neurons']))}.")
    specific = loc.get("language-specific neurons")
    if isinstance(specific, dict) and specific:
        words.append("Language-specific privacy neurons: " + ", ".join(
            f"{k}: {_int(int(v))}" for k, v in sorted(specific.items())) + ".")
    known = {"layer", "gate dims", "layer search (share of gated dims)",
             "privacy-universal neurons", "language-specific neurons"}
    for k, v in sorted(loc.items()):
        if k not in known:
            words.append(f"{k.capitalize()}: {_value(v)}.")
    return words


# ------------------------------------------------------------------------------------ view
def build_view(report: dict[str, Any], plots: dict[str, str],
               items: Sequence[dict[str, Any]] = (), sources: dict[str, str] | None = None,
               items_file: str | None = None) -> View:
    """The report as sections of printable values, for both templates."""
    sources = sources or {}
    policy = report["policy"]
    name = policy.get("name") or policy.get("path") or ""
    p = report["patch"]
    facts = [
        ("policy", f"{policy.get('path')} (sha256 {str(policy.get('sha256') or '')[:12]})"),
        ("model", f"{report['model']['name']} (weights sha256 "
                  f"{str(report['model'].get('weights_sha256') or '')[:12]}; "
                  f"{report['model'].get('device')}, {report['model'].get('dtype')})"),
        ("method", ", ".join(report.get("methods") or []) or "–"),
        ("seed", str(report.get("seed"))),
        ("stdlib", str(report["stdlib"].get("version"))),
        ("patch", f"{p.get('file') or '–'} (sha256 {str(p.get('sha256') or '')[:12]}, "
                  f"{p.get('status')})"),
    ]
    requirements = _requirements(report, items, sources)
    rules = []
    for rule in report.get("rules") or []:
        span = rule.get("span") or {}
        rules.append((rule["text"], span.get("line") if isinstance(span, dict) else None,
                      ", ".join(rule.get("requirements") or []) or "–"))
    tables = [t for t in (_protected_table(report["metrics"]),
                          _accuracy_table(report["metrics"], "locality"),
                          _accuracy_table(report["metrics"], "utility"),
                          _identification_table(report["metrics"]),
                          _robustness_table(report["metrics"])) if t is not None]
    keys = {"evidence-refusal": "refusal", "evidence-locality": "locality",
            "evidence-utility": "utility", "evidence-robustness": "robustness"}
    for t in tables:
        key = keys.get(t.anchor)
        if key and key in plots:
            t.plot, t.plot_alt = plots[key], f"plot: {t.title}"
    patch_words, tensors = _patch_words(report)
    method_words, settings = _method_words(report)
    policy_file = policy.get("path") or ""
    marks: dict[int, list[str]] = {}
    for r in requirements:
        if r.clause_line is not None and r.clause_file == policy_file:
            marks.setdefault(r.clause_line, []).append(r.id)
    source = [SourceLine(k, line, ", ".join(marks.get(k, [])))
              for k, line in enumerate(sources.get(policy_file, "").splitlines(), 1)]
    timing = [(f"{t['op']} {t.get('label', '')}".strip(), f"{t['seconds']:.2f}",
               "yes" if t.get("cached") else "") for t in report["timing"]["passes"]]
    return View(
        title=f"gatelang report: {name}", status="ACCEPTED" if report["passed"] else "REJECTED",
        passed=bool(report["passed"]), summary=report.get("summary", ""), facts=facts,
        requirements=requirements, rules=rules, tables=tables, patch_words=patch_words,
        tensors=tensors, layers_plot=plots.get("layers"), method_words=method_words,
        method_settings=settings, localization_words=_localization_words(report),
        timing=timing, total_s=f"{report['timing']['total_s']:.2f}", policy_file=policy_file,
        source=source, items_file=items_file, items_count=len(items))


def pooled_leak(metrics: Sequence[dict[str, Any]], items: Sequence[dict[str, Any]]
                ) -> list[tuple[str, float, float, float | None, float | None]]:
    """Per attack split: leak before and after pooled over cells (percent), with the after
    interval from the pooled rows (resampling subjects)."""
    pooled: dict[str, list[float]] = {}
    for r in attack_rows(metrics):
        m = r.get("leak_rate")
        if not m or not m["n"]:
            continue
        acc = pooled.setdefault(r["split"], [0.0, 0.0, 0.0])
        acc[0] += (m["before"] or 0) * m["n"]
        acc[1] += (m["after"] or 0) * m["n"]
        acc[2] += m["n"]
    out = []
    for split, (b, a, n) in pooled.items():
        rows = [r for r in items if r.get("split") == split and r.get("known")
                and r.get("check") in ATTACK_CHECKS]
        low, high = share_interval(rows, lambda r: r["after"] == "leak") if rows else (None, None)
        out.append((split, 100 * b / n, 100 * a / n, None if low is None else 100 * low,
                    None if high is None else 100 * high))
    return out
