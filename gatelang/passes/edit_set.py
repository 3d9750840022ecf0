"""The edit set of a refusal edit: sensitive prompts with refusal targets, paired benign prompts.

As in Neural Gate's PrivacyPair, every sensitive query is paired with a benign query about the
same subject in the same language and modality, with a non-private attribute swapped in; the
benign target is the unedited model's own answer, cut to its first five words, so the retain term
keeps the model's behaviour rather than the world's ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gatelang.measure import Item
from gatelang.measure import answer as generate
from gatelang.passes.base import PassContext
from gatelang.passes.tensors import TokenBatch

# The six context templates of the published code (`ours/get_mask_for_cat_level.py`).
CONTEXT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "The image shows that. {}",
    "Therefore, it is. {}",
    "Because I am just. {}",
    "I am an AI. {}",
    "You want to. {}",
)


@dataclass(frozen=True)
class EditExample:
    query: Any  # the sensitive world query
    refusal: str
    retain: tuple[tuple[Any, str], ...]  # (benign query, the unedited model's answer) pairs

    @property
    def benign(self) -> Any:
        return self.retain[0][0]

    @property
    def benign_target(self) -> str:
        return self.retain[0][1]


def cut_words(text: str, n: int = 5) -> str:
    """First n words; for unspaced scripts (zh) the first 3n characters stand in for words."""
    words = text.split()
    if len(words) > 1:
        return " ".join(words[:n])
    return text[: 3 * n]


def refusal_reply(ctx: PassContext, language: str, index: int = 0) -> str:
    replies = ctx.stdlib.languages[language].refusal_replies
    return replies[index % len(replies)]


def query_by_id(ctx: PassContext, qid: str) -> Any:
    """A world query from its id (`modality/subject/attribute/language/split/index`)."""
    mod, subject, attr, lang, split, _idx = qid.split("/")
    for q in _cell(ctx, subject, attr, lang, mod, split):
        if q.id == qid:
            return q
    raise KeyError(qid)


def _cell(ctx: PassContext, subject: str, attr: str, lang: str, mod: str, split: str) -> list[Any]:
    cache = ctx.__dict__.setdefault("_edit_set_cells", {})
    key = (subject, attr, lang, mod, split)
    if key not in cache:
        cache[key] = ctx.world.queries(subjects=[subject], attributes=[attr], languages=[lang],
                                       modalities=[mod], splits=[split])
    return cache[key]


def _slot(q: Any, n: int) -> int:
    tail = q.id.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else n


def benign_partners(ctx: PassContext, queries: Sequence[Any], other_subjects: int = 0,
                    same_subject: int = 1) -> list[list[Any]]:
    """For each sensitive query: `same_subject` same-slot queries about attributes of the
    subject that the rule does not protect (1 is Neural Gate's benign pair; more keep the
    subject's other attributes answerable when few units carry the edit), then
    `other_subjects` same-attribute queries about subjects outside the edit set (the retain
    rows that keep other people answerable)."""
    edited = {q.attribute for q in queries}
    public = [a for a in ctx.world.attributes if a not in edited] or [
        a for a in ctx.stdlib.public_attributes() if a in ctx.world.attributes]
    targets = {q.subject_id for q in queries}
    others = [s.id for s in ctx.world.subjects if s.id not in targets]
    out = []
    for n, q in enumerate(queries):
        row = []
        for j in range(min(max(1, same_subject), len(public))):
            attr = public[(n * max(1, same_subject) + j) % len(public)]
            pool = _cell(ctx, q.subject_id, attr, q.language, q.modality, q.split) or _cell(
                ctx, q.subject_id, attr, q.language, "text", q.split)
            if pool:
                row.append(pool[_slot(q, n) % len(pool)])
        for k in range(other_subjects):
            if not others:
                break
            sid = others[(n * max(1, other_subjects) + k) % len(others)]
            opool = _cell(ctx, sid, q.attribute, q.language, q.modality, q.split)
            if opool:
                row.append(opool[_slot(q, n) % len(opool)])
        out.append(row)
    return out


def build_examples(ctx: PassContext, queries: Sequence[Any], *, other_subjects: int = 0,
                   same_subject: int = 1, reply_index: int = 0) -> list[EditExample]:
    partners = benign_partners(ctx, queries, other_subjects, same_subject)
    flat = [b for row in partners for b in row]
    answers = iter(generate(ctx.loaded, flat, max_new_tokens=16))
    out = []
    for q, row in zip(queries, partners, strict=True):
        retain = tuple((b, cut_words(next(answers)) or b.answer) for b in row)
        out.append(EditExample(q, refusal_reply(ctx, q.language, reply_index), retain))
    return out


def _device(ctx: PassContext) -> tuple[torch.device, torch.dtype]:
    p = next(ctx.model.parameters())
    return p.device, p.dtype


def encode(ctx: PassContext, items: Sequence[Any], targets: Sequence[str], benign: Sequence[bool]) -> TokenBatch:
    enc = ctx.loaded.adapter.encode(list(items), list(targets))
    device, dtype = _device(ctx)
    enc = enc.to(device, dtype)
    subj = torch.where(enc.subject_index >= 0, enc.subject_index, enc.last_index)
    return TokenBatch(
        inputs=enc.model_inputs(), subject_index=subj, labels=enc.labels,
        benign=torch.tensor(list(benign), dtype=torch.bool),
    )


def as_item(q: Any, prefix: str = "{}") -> Item:
    return Item(prompt=prefix.format(q.prompt), image=q.image, subject_text=q.subject_text)


def mask_batch(ctx: PassContext, ex: EditExample, templates: Sequence[str] = CONTEXT_TEMPLATES) -> TokenBatch:
    """Neural Gate's mask-learning batch: the query in each context template + its retain rows."""
    items = [as_item(ex.query, t) for t in templates] + [as_item(b) for b, _ in ex.retain]
    targets = [ex.refusal] * len(templates) + [t for _, t in ex.retain]
    return encode(ctx, items, targets, [False] * len(templates) + [True] * len(ex.retain))


def pair_batch(ctx: PassContext, ex: EditExample) -> TokenBatch:
    """The fine-tune step's batch: one sensitive prompt and its retain rows."""
    items = [as_item(ex.query)] + [as_item(b) for b, _ in ex.retain]
    targets = [ex.refusal] + [t for _, t in ex.retain]
    return encode(ctx, items, targets, [False] + [True] * len(ex.retain))


def pairs_batch(ctx: PassContext, examples: Sequence[EditExample]) -> TokenBatch:
    """Several examples' fine-tune rows in one batch (the `pair_batch` parameter > 1)."""
    items: list[Any] = []
    targets: list[str] = []
    benign: list[bool] = []
    for ex in examples:
        items += [as_item(ex.query)] + [as_item(b) for b, _ in ex.retain]
        targets += [ex.refusal] + [t for _, t in ex.retain]
        benign += [False] + [True] * len(ex.retain)
    return encode(ctx, items, targets, benign)


def examples_to_json(examples: Sequence[EditExample]) -> list[dict[str, Any]]:
    return [{"query": e.query.id, "refusal": e.refusal,
             "retain": [[b.id, t] for b, t in e.retain]} for e in examples]


def examples_from_json(ctx: PassContext, rows: Sequence[dict[str, Any]], queries: Sequence[Any]) -> list[EditExample]:
    by_id = {q.id: q for q in queries}
    out = []
    for r in rows:
        q = by_id.get(r["query"]) or query_by_id(ctx, r["query"])
        retain = tuple((query_by_id(ctx, bid), t) for bid, t in r["retain"])
        out.append(EditExample(q, r["refusal"], retain))
    return out
