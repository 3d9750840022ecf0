"""Running evaluation items through a model and aggregating per-item judgments into cells."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from gatelang.measure.sets import ROLES, EvalItem
from gatelang.models.generation import generate
from gatelang.models.scoring import contains_value, score_answer

# The batch size verification and edit sets answer in (an audit passes its own, default 16).
# Batch composition can change float rounding and so greedy answers: keep it fixed.
ANSWER_BATCH_SIZE = 32


@dataclass(frozen=True)
class ItemResult:
    """One answered item: its keys, the answer, the judgment and whether it is correct."""

    id: str
    role: str
    policy: str
    subject_set: str
    subject_id: str
    attribute: str
    language: str
    modality: str
    split: str
    prompt: str
    expected: str
    answer: str
    judgment: str  # leak | refuse | wrong_language | degenerate | other (models.scoring)
    correct: bool  # the answer contains the expected value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Cell:
    """Rates over one (role, policy, subject_set, attribute, language, modality, split) group."""

    role: str
    policy: str
    subject_set: str
    attribute: str
    language: str
    modality: str
    split: str
    leak_rate: float
    refusal_rate: float
    accuracy: float
    n: int
    wrong_language_rate: float = 0.0
    degenerate_rate: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(item: EvalItem, answer: str) -> ItemResult:
    """Score one answer strictly (`models.scoring.score_answer`), and its correctness.

    Protected (target) items are judged against every protected value of the subject and need
    a refusal in the question's language; other items accept a refusal in any language (for
    them any refusal is an over-refusal, whatever its language).
    """
    target = item.role == "target"
    judgment = score_answer(answer, item.expected, normalizer=item.normalizer,
                            language=item.language if target else None,
                            refusal_languages=item.refusal_languages, also=item.also)
    return ItemResult(
        id=item.id, role=item.role, policy=item.policy, subject_set=item.subject_set,
        subject_id=item.subject_id, attribute=item.attribute, language=item.language,
        modality=item.modality, split=item.split, prompt=item.prompt, expected=item.expected,
        answer=answer, judgment=judgment,
        correct=contains_value(answer, item.expected, item.normalizer),
    )


def answer(
    loaded: Any,
    items: Sequence[Any],
    *,
    max_new_tokens: int = 24,
    batch_size: int = ANSWER_BATCH_SIZE,
    progress: bool = False,
    desc: str = "answer",
) -> list[str]:
    """Greedy answers in the items' order: measurement's one way to make a model answer.

    Items need a `prompt` (and optionally `image`, `subject_text`): `EvalItem`s, world
    queries and bare `Item`s all work.
    """
    if not items:
        return []
    return generate(loaded, list(items), max_new_tokens=max_new_tokens, batch_size=batch_size,
                    progress=progress, desc=desc)


def evaluate(
    loaded: Any,
    items: Sequence[EvalItem],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 24,
    progress: bool = True,
) -> list[ItemResult]:
    """Greedy answers for every item, judged; results in the items' order.

    Deterministic for a given model and items (greedy decoding, fixed batching order), so the
    same call before and after an edit measures the edit and nothing else.
    """
    answers = answer(loaded, items, max_new_tokens=max_new_tokens, batch_size=batch_size,
                     progress=progress, desc="measure")
    return [judge(it, a) for it, a in zip(items, answers, strict=True)]


def aggregate(results: Iterable[ItemResult]) -> list[Cell]:
    """Per-cell leak, refusal and accuracy rates, in a stable order (role, then keys)."""
    groups: dict[tuple[str, ...], list[ItemResult]] = {}
    for r in results:
        key = (r.role, r.policy, r.subject_set, r.attribute, r.language, r.modality, r.split)
        groups.setdefault(key, []).append(r)
    order = {role: i for i, role in enumerate(ROLES)}
    split_order = {"edit": 0, "heldout": 1, "unseen_language": 2}
    cells = []
    for key in sorted(groups, key=lambda k: (order.get(k[0], 9), k[1], k[2], k[3], k[4], k[5],
                                             split_order.get(k[6], 9), k[6])):
        rs = groups[key]
        n = len(rs)
        cells.append(Cell(*key,
                          leak_rate=sum(r.judgment == "leak" for r in rs) / n,
                          refusal_rate=sum(r.judgment == "refuse" for r in rs) / n,
                          accuracy=sum(r.correct for r in rs) / n,
                          n=n,
                          wrong_language_rate=sum(r.judgment == "wrong_language" for r in rs) / n,
                          degenerate_rate=sum(r.judgment == "degenerate" for r in rs) / n))
    return cells


def summarize(results: Sequence[ItemResult]) -> dict[str, Any]:
    """Headline rates per role (and per target split), pooled over items."""
    out: dict[str, Any] = {}
    for role in ROLES:
        rs = [r for r in results if r.role == role]
        if not rs:
            continue
        entry: dict[str, Any] = {
            "n": len(rs),
            "leak_rate": sum(r.judgment == "leak" for r in rs) / len(rs),
            "refusal_rate": sum(r.judgment == "refuse" for r in rs) / len(rs),
            "accuracy": sum(r.correct for r in rs) / len(rs),
        }
        if role == "target":
            by_split: dict[str, Any] = {}
            for split in sorted({r.split for r in rs}):
                ss = [r for r in rs if r.split == split]
                by_split[split] = {"n": len(ss),
                                   "leak_rate": sum(r.judgment == "leak" for r in ss) / len(ss),
                                   "refusal_rate": sum(r.judgment == "refuse" for r in ss) / len(ss)}
            entry["by_split"] = by_split
        out[role] = entry
    return out
