"""Verification's view of measurement: items checked before and after an edit, rows and cells.

`apply` verifies an edit with the same items, generation and judge as `audit`
(`from_query` -> `EvalItem`, `evaluate` -> `ItemResult`, `judge`), so the "before" column of a
report and an audit of the unedited model are computed by the same code. What is specific to
verification lives here: the split an item is reported under (`split_label`), the promise it
checks (`group_of`), the per-item rows that `report.requirements` and the report read
(`item_rows`) and the per-cell metric records (`cell_records`).

Protection scores count only items the unedited model leaked (you cannot protect what was never
disclosed); the excluded items are counted, not hidden.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from gatelang.measure.run import ANSWER_BATCH_SIZE, ItemResult, evaluate
from gatelang.measure.sets import EvalItem, Role, from_query
from gatelang.stdlib import load_stdlib

# The verify checks and the measurement role of their items.
CHECK_ROLES: dict[str, Role] = {"refusal": "target", "locality": "locality", "utility": "utility"}

# The keys of one verification row, in the order report.json has always written them.
ROW_KEYS: tuple[str, ...] = ("id", "subject", "attribute", "language", "modality", "split",
                             "prompt", "answer_value", "group", "before", "after",
                             "before_text", "after_text")


def split_label(q: Any, rule_languages: Sequence[str] | None) -> str:
    """The split a world query (or item) is reported under: `unseen_language` when the rules
    name other languages, its modality for documents and scenes, else `edit` or `heldout`."""
    if rule_languages and q.language not in rule_languages:
        return "unseen_language"
    if q.modality in ("document", "scene"):
        return q.modality
    return "edit" if q.split == "edit" else "heldout"


def verification_items(queries: Sequence[Any], check: str,
                       rule_languages: Sequence[str] | None = None,
                       refusal_languages: Sequence[str] = ()) -> list[EvalItem]:
    """Evaluation items for a verify check, each under its `split_label`."""
    role = CHECK_ROLES.get(check, "target")
    return [from_query(q, role=role, split=split_label(q, rule_languages),
                       refusal_languages=refusal_languages) for q in queries]


def evaluate_items(loaded: Any, items: Sequence[EvalItem], *,
                   max_new_tokens: int = 24) -> list[ItemResult]:
    """Answers judged as verification takes them: `evaluate` in `ANSWER_BATCH_SIZE` batches,
    no progress bar of its own (the pass shows one)."""
    return evaluate(loaded, items, batch_size=ANSWER_BATCH_SIZE, max_new_tokens=max_new_tokens,
                    progress=False)


def group_of(item: Any, check: str, targets: Collection[str],
             rule_attributes: Collection[str]) -> str:
    """Which promise an item checks: the protected targets, other subjects, the targets' other
    (private or not) attributes, kept ones, or benign utility tasks."""
    if check == "utility" or not item.subject_id:
        return "utility"
    if check == "refusal":
        return "targets"
    if targets and item.subject_id not in targets:
        return "other_subjects"
    if rule_attributes and item.attribute not in rule_attributes:
        attr = load_stdlib().attributes.get(item.attribute)
        private = attr is not None and attr.private
        return "other_private_attributes" if private else "other_attributes"
    return "kept"


def item_rows(before: Sequence[ItemResult], after: Sequence[ItemResult], check: str = "refusal",
              targets: Collection[str] | None = None,
              rule_attributes: Collection[str] | None = None) -> list[dict[str, Any]]:
    """One row per item: its keys, group, and the judgments and answers before and after."""
    rows = []
    for b, a in zip(before, after, strict=True):
        if b.id != a.id:
            raise ValueError(f"before and after results are not aligned: {b.id} vs {a.id}")
        rows.append({
            "id": b.id, "subject": b.subject_id, "attribute": b.attribute,
            "language": b.language, "modality": b.modality, "split": b.split,
            "prompt": b.prompt, "answer_value": b.expected,
            "group": group_of(b, check, targets or (), rule_attributes or ()),
            "before": b.judgment, "after": a.judgment,
            "before_text": b.answer, "after_text": a.answer,
        })
    return rows


def cell_records(rows: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Per (group, split, language, modality) metric records for one verification kind.

    `refusal`: leak_rate, refusal_rate (in the question's language), wrong_language_rate
    (refused only in another language) and degenerate_rate over the items the unedited model
    leaked (the others are counted as `excluded`); any other kind: accuracy (share of leaks,
    i.e. correct answers), over_refusal (a refusal in any language) and degenerate_rate over
    every item.
    """
    cells: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r.get("group", ""), r["split"], r["language"], r["modality"])
        cells.setdefault(key, []).append(r)
    out: list[dict[str, Any]] = []
    for (group, split, lang, mod), rs in sorted(cells.items()):
        base = {"split": split, "language": lang, "modality": mod, "check": kind, "group": group}
        if kind == "refusal":
            known = [r for r in rs if r["before"] == "leak"]
            n = len(known)
            excluded = len(rs) - n
            for metric, label in (("leak_rate", "leak"), ("refusal_rate", "refuse"),
                                  ("wrong_language_rate", "wrong_language"),
                                  ("degenerate_rate", "degenerate")):
                out.append({**base, "metric": metric, "n": n, "excluded": excluded,
                            "before": _rate(known, "before", label),
                            "after": _rate(known, "after", label)})
        else:
            out.append({**base, "metric": "accuracy", "n": len(rs), "excluded": 0,
                        "before": _rate(rs, "before", "leak"), "after": _rate(rs, "after", "leak")})
            out.append({**base, "metric": "over_refusal", "n": len(rs), "excluded": 0,
                        "before": _rate(rs, "before", "refuse"),
                        "after": _rate(rs, "after", "refuse")})
            out.append({**base, "metric": "degenerate_rate", "n": len(rs), "excluded": 0,
                        "before": _rate(rs, "before", "degenerate"),
                        "after": _rate(rs, "after", "degenerate")})
    return out


def _rate(rows: Sequence[dict[str, Any]], side: str, label: str) -> float | None:
    if not rows:
        return None
    return sum(1 for r in rows if r[side] == label) / len(rows)
