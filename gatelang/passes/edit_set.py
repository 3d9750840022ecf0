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

from gatelang.passes._measure import Item, generate
from gatelang.passes.algorithms.neural_gate import CONTEXT_TEMPLATES
from gatelang.passes.base import PassContext
from gatelang.passes.tensors import TokenBatch


@dataclass(frozen=True)
class EditExample:
    query: Any  # the sensitive world query
    refusal: str
    benign: Any  # the paired benign world query
    benign_target: str


def cut_words(text: str, n: int = 5) -> str:
    """First n words; for unspaced scripts (zh) the first 3n characters stand in for words."""
    words = text.split()
    if len(words) > 1:
        return " ".join(words[:n])
    return text[: 3 * n]


def refusal_reply(ctx: PassContext, language: str, index: int = 0) -> str:
    replies = ctx.stdlib.languages[language].refusal_replies
    return replies[index % len(replies)]


def benign_partners(ctx: PassContext, queries: Sequence[Any]) -> list[Any]:
    """For each sensitive query, the same-template-slot query about a non-private attribute."""
    public = [a for a in ctx.stdlib.public_attributes() if a in ctx.world.attributes]
    cache: dict[tuple, list[Any]] = {}
    out = []
    for n, q in enumerate(queries):
        attr = public[n % len(public)]
        key = (q.subject_id, attr, q.language, q.modality, q.split)
        if key not in cache:
            cache[key] = ctx.world.queries(
                subjects=[q.subject_id], attributes=[attr], languages=[q.language],
                modalities=[q.modality], splits=[q.split],
            )
        pool = cache[key]
        if not pool:
            pool = ctx.world.queries(
                subjects=[q.subject_id], attributes=[attr], languages=[q.language],
                modalities=["text"], splits=[q.split],
            )
        slot = int(q.id.rsplit("/", 1)[-1]) if q.id.rsplit("/", 1)[-1].isdigit() else n
        out.append(pool[slot % len(pool)])
    return out


def build_examples(ctx: PassContext, queries: Sequence[Any], *, reply_index: int = 0) -> list[EditExample]:
    partners = benign_partners(ctx, queries)
    answers = generate(ctx.loaded, partners, max_new_tokens=16)
    return [
        EditExample(q, refusal_reply(ctx, q.language, reply_index), b, cut_words(a) or b.answer)
        for q, b, a in zip(queries, partners, answers, strict=True)
    ]


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
    """Neural Gate's mask-learning batch: the query in each context template + its benign pair."""
    items = [as_item(ex.query, t) for t in templates] + [as_item(ex.benign)]
    targets = [ex.refusal] * len(templates) + [ex.benign_target]
    return encode(ctx, items, targets, [False] * len(templates) + [True])


def pair_batch(ctx: PassContext, ex: EditExample) -> TokenBatch:
    """The fine-tune step's batch: one sensitive prompt and its benign pair."""
    return encode(ctx, [as_item(ex.query), as_item(ex.benign)], [ex.refusal, ex.benign_target],
                  [False, True])


def examples_to_json(examples: Sequence[EditExample]) -> list[dict[str, str]]:
    return [{"query": e.query.id, "refusal": e.refusal, "benign": e.benign.id,
             "benign_target": e.benign_target} for e in examples]


def examples_from_json(ctx: PassContext, rows: Sequence[dict[str, str]], queries: Sequence[Any]) -> list[EditExample]:
    by_id = {q.id: q for q in queries}
    partners = benign_partners(ctx, [by_id[r["query"]] for r in rows])
    return [
        EditExample(by_id[r["query"]], r["refusal"], b, r["benign_target"])
        for r, b in zip(rows, partners, strict=True)
    ]
