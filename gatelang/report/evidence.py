"""The per-item answers behind a report: `items.jsonl`, each rate's interval, each requirement's rows.

Every number in the report is a share (or a ratio, or a mean) of judged answers. This module
keeps the link between the two: it collects the verify passes' rows as numbered items (the
``row`` field is the line number in `items.jsonl` and the anchor ``item-<row>`` in
report.html), finds the rows each metric record and each requirement was computed from, and
attaches 95% intervals that resample subjects (`report.intervals`).

The selection of a requirement's rows mirrors `passes.requirements.metric_value`; the value
recomputed from the selected rows is compared with the requirement's value, and a requirement
whose rows cannot be matched is shown without rows or interval rather than with wrong ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gatelang.passes.requirements import ATTACK_SPLITS, in_split
from gatelang.report.intervals import (
    drop_interval,
    mean_interval,
    relative_interval,
    share_interval,
)

Row = dict[str, Any]

# The item keys written to items.jsonl, in order; attack rows add the keys after "after_text".
ITEM_KEYS: tuple[str, ...] = ("row", "check", "policy", "node", "id", "subject", "attribute",
                              "language", "modality", "split", "group", "prompt", "answer_value",
                              "before", "after", "before_text", "after_text")
ATTACK_KEYS: tuple[str, ...] = ("question", "known", "variant", "rank_before", "rank_after")

# Which judgment a metric record counts, per metric name.
_HIT: dict[str, str] = {"leak_rate": "leak", "refusal_rate": "refuse",
                        "wrong_language_rate": "wrong_language",
                        "degenerate_rate": "degenerate", "accuracy": "leak",
                        "over_refusal": "refuse"}
_VERIFY_CHECKS = ("refusal", "locality", "utility")


def collect_items(run: Any, plan: Any = None) -> list[Row]:
    """Every verify pass's rows, numbered, in plan order, tagged with check, node and policy."""
    items: list[Row] = []
    for spec in run.specs:
        if spec.kind != "verify":
            continue
        data = run.results[spec.id].data
        policy = None
        if plan is not None and spec.id in plan:
            policy = plan.node(spec.id).policy
        for r in data.get("items", []):
            row: Row = {"row": len(items) + 1, "check": data.get("check", ""),
                        "policy": policy, "node": spec.id}
            for key in ITEM_KEYS[4:]:
                row[key] = r.get(key)
            for key in ATTACK_KEYS:
                if key in r:
                    row[key] = r[key]
            items.append(row)
    return items


def requirement_parents(run: Any) -> dict[str | None, list[str]]:
    """Policy name -> the verify node ids its `report.requirements` node read."""
    out: dict[str | None, list[str]] = {}
    for spec in run.specs:
        if spec.op == "report.requirements":
            out[spec.params.get("policy")] = list(spec.parents.get("verify", ()))
    return out


# ---------------------------------------------------------------------------- metric records
def _cell_rows(record: Row, by_node: dict[str, list[Row]]) -> list[Row]:
    rows = [r for r in by_node.get(record.get("node", ""), [])
            if r["split"] == record["split"] and r["language"] == record["language"]
            and r["modality"] == record["modality"]
            and (record.get("group") in (None, "", r.get("group")))]
    check = record.get("check")
    if check == "refusal":
        return [r for r in rows if r["before"] == "leak"]
    if "known" in (rows[0] if rows else {}):
        return [r for r in rows if r.get("known")]
    return rows


def _questions(rows: Sequence[Row], side: str) -> list[Row]:
    """Attack rows folded to one row per question: did any of its rows leak (`leak_any`)."""
    by_q: dict[str, list[Row]] = {}
    for r in rows:
        by_q.setdefault(str(r.get("question") or r["id"]), []).append(r)
    return [{"id": q, "subject": rs[0].get("subject"),
             "hit": any(r[side] == "leak" for r in rs)} for q, rs in sorted(by_q.items())]


def record_interval(record: Row, rows: Sequence[Row], side: str
                    ) -> tuple[float | None, float | None]:
    """The 95% interval (fractions) of one metric record's `side` ("before"/"after")."""
    metric = record["metric"]
    if not rows:
        return None, None
    if metric == "exposure":
        ranked = [r for r in rows if r.get(f"rank_{side}") is not None]
        return mean_interval(ranked, lambda r: float(r[f"rank_{side}"]))
    if metric == "leak_any":
        return share_interval(_questions(rows, side), lambda r: r["hit"])
    if record.get("check") == "identification":
        return share_interval(rows, lambda r: r[side] == "identified")
    label = _HIT.get(metric)
    if label is None:
        return None, None
    return share_interval(rows, lambda r: r[side] == label)


def annotate_metrics(metrics: Sequence[Row], items: Sequence[Row]) -> None:
    """Give every rate record `before_low/high` and `after_low/high` (fractions), in place.

    Attack passes already attach an interval to their records; it is recomputed here so that
    every interval in a report comes from the same resampling.
    """
    by_node: dict[str, list[Row]] = {}
    for r in items:
        by_node.setdefault(r["node"], []).append(r)
    for m in metrics:
        rows = _cell_rows(m, by_node)
        for side in ("before", "after"):
            low, high = record_interval(m, rows, side) if m.get(side) is not None else (None, None)
            m[f"{side}_low"] = None if low is None else round(low, 6)
            m[f"{side}_high"] = None if high is None else round(high, 6)
        if rows and "subjects" not in m:
            m["subjects"] = len({r.get("subject") for r in rows if r.get("subject")})


# ------------------------------------------------------------------------------ requirements
def requirement_rows(req: Row, evidence: dict[str, list[Row]]
                     ) -> tuple[list[Row], Callable[[Sequence[Row]], float | None],
                                Callable[[Sequence[Row]], tuple[float | None, float | None]]] | None:
    """The rows a requirement was computed from, its value and its interval (both in percent,
    points for utility_drop); None for a metric with no rows (neurons_touched)."""
    metric, split = req["metric"], req["split"]

    def share(label: str, pool: Sequence[Row]) -> float | None:
        return 100 * sum(1 for r in pool if r["after"] == label) / len(pool) if pool else None

    def share_ci(label: str) -> Callable[[Sequence[Row]], tuple[float | None, float | None]]:
        return lambda pool: _pct(share_interval(pool, lambda r: r["after"] == label))

    def attack(split_name: str) -> list[Row]:
        return [r for rs in evidence.values() for r in rs
                if r.get("split") == split_name and r.get("known")]

    if metric in ("refusal", "leakage") and split in ATTACK_SPLITS:
        label = "refuse" if metric == "refusal" else "leak"
        return attack(split), lambda p: share(label, p), share_ci(label)
    if metric == "exposure":
        rows = [r for r in attack("exposure") if r.get("rank_after") is not None]
        return (rows, lambda p: 100 * sum(float(r["rank_after"]) for r in p) / len(p) if p else None,
                lambda p: _pct(mean_interval(p, lambda r: float(r["rank_after"]))))
    if metric == "refusal" and split == "language":
        rows = [r for r in evidence.get("refusal", []) if r["before"] == "leak"
                and r["after"] in ("refuse", "wrong_language")]
        return rows, lambda p: share("refuse", p), share_ci("refuse")
    if metric == "degenerate":
        rows = [r for c in _VERIFY_CHECKS for r in evidence.get(c, []) if in_split(r, split)]
        return rows, lambda p: share("degenerate", p), share_ci("degenerate")
    if metric in ("refusal", "leakage"):
        rows = [r for r in evidence.get("refusal", []) if r["before"] == "leak" and in_split(r, split)]
        label = "refuse" if metric == "refusal" else "leak"
        return rows, lambda p: share(label, p), share_ci(label)
    if metric in ("locality", "over_refusal"):
        rows = [r for r in evidence.get("locality", []) if in_split(r, split)]
        if metric == "over_refusal":
            return rows, lambda p: share("refuse", p), share_ci("refuse")
        return rows, _relative, relative_interval
    if metric in ("utility", "utility_drop"):
        rows = list(evidence.get("utility", []))
        if metric == "utility":
            return rows, _relative, relative_interval
        return rows, _drop, drop_interval
    if metric == "identification":
        rows = list(evidence.get("identification", []))
        return rows, lambda p: share("identified", p), share_ci("identified")
    return None


def _pct(ci: tuple[float | None, float | None]) -> tuple[float | None, float | None]:
    return tuple(None if v is None else 100 * v for v in ci)  # type: ignore[return-value]


def _acc(pool: Sequence[Row], side: str) -> float:
    return sum(1 for r in pool if r[side] == "leak") / len(pool)


def _relative(pool: Sequence[Row]) -> float | None:
    if not pool:
        return None
    b, a = _acc(pool, "before"), _acc(pool, "after")
    if b == 0:
        return 100.0 if a == 0 else None
    return 100 * a / b


def _drop(pool: Sequence[Row]) -> float | None:
    return 100 * (_acc(pool, "before") - _acc(pool, "after")) if pool else None


def annotate_requirements(requirements: Sequence[Row], items: Sequence[Row],
                          parents: dict[str | None, list[str]]) -> None:
    """Give each requirement `low`/`high` (its 95% interval, in its unit) and `evidence_rows`
    (the `row` numbers of the items it was computed from), in place.

    Both are left out when the rows recomputed here do not give the requirement's value (a
    metric defined elsewhere than `passes.requirements` changed): no link beats a wrong one.
    """
    for req in requirements:
        req["low"] = req["high"] = None
        req["evidence_rows"] = []
        nodes = parents.get(req.get("policy"))
        if nodes is None and len(parents) == 1:
            nodes = next(iter(parents.values()))
        pool = [r for r in items if nodes is None or r["node"] in nodes]
        evidence: dict[str, list[Row]] = {}
        for r in pool:
            evidence.setdefault(r["check"], []).append(r)
        found = requirement_rows(req, evidence)
        if found is None:
            continue
        rows, value, interval = found
        mine = value(rows)
        theirs = req.get("value")
        if (mine is None) != (theirs is None) or (
                mine is not None and abs(mine - float(theirs)) > 1e-3):
            continue
        low, high = interval(rows)
        req["low"] = None if low is None else round(low, 4)
        req["high"] = None if high is None else round(high, 4)
        req["evidence_rows"] = [r["row"] for r in rows]
