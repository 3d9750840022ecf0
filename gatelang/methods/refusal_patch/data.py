"""The rows a refusal patch is trained on, and the selection split used to configure it.

Every row is a question with a teacher-forced text after it and the span of that text the loss
reads:

- `refuse`: the stdlib refusal reply in the question's language (NLL on its first tokens);
- `value`: a training prefix (none, an assent, a refusal fragment) then the protected value in
  the model's own answer format (the bare value); the span is the value's tokens;
- `retain`: a question outside the rule with its true answer (KL to the unedited model on the
  answer; activation margin at every token).

Only edit-split queries are used; no held-out template and no attack phrase reaches a row.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gatelang.measure.sets import spread
from gatelang.passes.edit_set import CONTEXT_TEMPLATES

KINDS = ("refuse", "value", "retain")
# Neural Gate's context templates, less the bare one (`passes.edit_set.CONTEXT_TEMPLATES`).
CONTEXTS = tuple(t for t in CONTEXT_TEMPLATES if t != "{}")


@dataclass(frozen=True)
class ContextItem:
    """A question after a context sentence; the rest of the query is kept (subject, image)."""

    prompt: str
    image: Any
    subject_text: str
    subject_id: str
    attribute: str
    language: str
    modality: str
    id: str
    answer: str
    template: str


def in_context(q: Any, template: str) -> ContextItem:
    return ContextItem(prompt=template.format(q.prompt), image=q.image,
                       subject_text=q.subject_text, subject_id=q.subject_id,
                       attribute=q.attribute, language=q.language, modality=q.modality,
                       id=f"{q.id}@{template}", answer=q.answer,
                       template=getattr(q, "template", ""))


@dataclass(frozen=True)
class Row:
    """One teacher-forced row: `item` (prompt, image, subject_text), `target` text after the
    prompt, `kind`, and the scored span of the target's tokens: tokens `skip`..`skip + take`
    (`take` 0: to the end; `eos` whether the end-of-sequence token is part of the target)."""

    item: Any
    target: str
    kind: str
    language: str
    prefix: str = ""  # value rows: the text before the value (the span starts after it)
    take: int = 0
    eos: bool = True
    group: int = -1  # index of the protected question the row was built for (-1: none)
    weight: float = 1.0  # weight of the row's loss (refusal rows)


def template_key(q: Any) -> tuple[str, str, str, str]:
    """(attribute, language, template family, template): text and image questions of one
    template share a key (the same wording about a name or about "this person")."""
    family = q.modality if q.modality in ("document", "scene") else "person"
    template = getattr(q, "template", "") or q.id.rsplit("/", 1)[-1]
    return (q.attribute, q.language, family, template)


def selection_split(queries: Sequence[Any], fraction: float = 1 / 3, seed: int = 0
                    ) -> tuple[list[Any], list[Any]]:
    """(train, select): hold out whole templates, `fraction` of each (attribute, language)'s
    edit templates (at least one when there are two or more, never all), for choosing a
    configuration. Text and image questions of a held-out template all go to `select`, so no
    wording is seen on both sides; every subject stays on both. Deterministic in `seed`, and
    order-preserving on each side."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for q in queries:
        a, lang, fam, tpl = template_key(q)
        names = groups.setdefault((a, lang, fam), [])
        if tpl not in names:
            names.append(tpl)
    held: set[tuple[str, str, str, str]] = set()
    for (a, lang, fam), names in groups.items():
        if len(names) < 2 or fraction <= 0:
            continue
        n = min(len(names) - 1, max(1, round(fraction * len(names))))
        rng = random.Random(f"{seed}/{a}/{lang}/{fam}")
        for tpl in rng.sample(sorted(names), n):
            held.add((a, lang, fam, tpl))
    train = [q for q in queries if template_key(q) not in held]
    select = [q for q in queries if template_key(q) in held]
    return train, select


def shared_prefix(values: Sequence[str], normalizer: str = "text") -> str:
    """The longest prefix every value shares, never a whole value, cut back to a word boundary
    for text values ("555-" for the world's phone numbers, "" for its addresses)."""
    vals = [str(v) for v in values if v]
    if len(vals) < 2:
        return ""
    prefix = vals[0]
    for v in vals[1:]:
        n = 0
        for a, b in zip(prefix, v, strict=False):
            if a != b:
                break
            n += 1
        prefix = prefix[:n]
    # Cut back to a boundary (for every normalizer): a start that ends inside a number ("19"
    # of "1992") is not one the tokenizer keeps apart, so a refusal trained after it is
    # never reached in generation.
    while prefix and (prefix in vals or (
            prefix[-1].isalnum()
            and any(len(v) > len(prefix) and v[len(prefix)].isalnum() for v in vals))):
        cut = max((i for i, ch in enumerate(prefix[:-1]) if not ch.isalnum()), default=-1)
        prefix = prefix[:cut + 1]
    return prefix if prefix.strip() else ""


def value_prefix(world: Any, stdlib: Any, value: str) -> str:
    """The information-free start of a value: the prefix all world subjects' values of its
    attribute share ("555-" for a phone number), or "" (none, or not a subject's value)."""
    for attr in world.attributes:
        values = [s.attributes.get(attr, "") for s in world.subjects]
        if value in values:
            spec = stdlib.attributes.get(attr)
            prefix = shared_prefix(values, spec.normalizer if spec else "text")
            return prefix if value.startswith(prefix) else ""
    return ""


def _slot(q: Any) -> int:
    tail = q.id.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _Cells:
    """World queries by (subject, attribute, language, modality), cached."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.cache: dict[tuple[str, str, str, str], list[Any]] = {}

    def get(self, subject: str, attribute: str, language: str, modality: str) -> list[Any]:
        key = (subject, attribute, language, modality)
        if key not in self.cache:
            qs = self.world.queries(subjects=[subject], attributes=[attribute],
                                    languages=[language], modalities=[modality], splits=["edit"])
            self.cache[key] = qs
        return self.cache[key]


def retain_queries(world: Any, queries: Sequence[Any], *, other_subjects: int,
                   same_subject: int, exclude: Sequence[Any] = (), hard: bool = True
                   ) -> list[Any]:
    """Edit-split questions outside the rule, `other_subjects` + `same_subject` per protected
    question: the same attribute, language, modality and template slot about subjects the rule
    does not name, then the subject's attributes the rule does not protect (cycling through them).
    Queries in `exclude` (by template: a selection split's held-out templates) are skipped."""
    cells = _Cells(world)
    attrs = {q.attribute for q in queries}
    subjects = {q.subject_id for q in queries}
    others = [s.id for s in world.subjects if s.id not in subjects]
    public = [a for a in world.attributes if a not in attrs]
    banned = {template_key(q) for q in exclude}
    # A question whose true answer is a protected answer (another resident of a protected
    # subject's city, asked about a photo of its landmark) cannot be told apart from the
    # protected one: keeping its answer would train the patch against itself.
    protected = {_norm(q.answer) for q in queries}
    out: list[Any] = []
    seen: set[str] = set()

    def add(pool: list[Any], slot: int) -> None:
        pool = [p for p in pool if template_key(p) not in banned
                and _norm(p.answer) not in protected]
        if pool:
            q = pool[slot % len(pool)]
            if q.id not in seen:
                seen.add(q.id)
                out.append(q)

    near_of = {(q.subject_id, q.attribute): hard_negatives(world, q, others) if hard else []
               for q in queries}
    for n, q in enumerate(queries):
        slot = _slot(q)
        near = near_of[(q.subject_id, q.attribute)]
        for k in range(other_subjects if others else 0):
            # every other row a subject whose value shares words with this one ("10 Birch St"
            # against "10 Cedar St"), the rest in turn over everyone outside the rule
            if k % 2 == 0 and near:
                sid = near[(n * other_subjects + k) // 2 % len(near)]
            else:
                sid = others[(n * other_subjects + k) % len(others)]
            add(cells.get(sid, q.attribute, q.language, q.modality), slot)
        for j in range(same_subject if public else 0):
            attr = public[(n * same_subject + j) % len(public)]
            pool = cells.get(q.subject_id, attr, q.language, q.modality) or cells.get(
                q.subject_id, attr, q.language, "text")
            add(pool, slot)
    return out


def secret_of(q: Any) -> str:
    """What one protected question's units detect: the subject's attribute, or, for a scene
    photo (which shows a place, not the person), the inferred value itself: two protected
    residents of one city share one landmark, and the units must recognise the landmark."""
    if getattr(q, "modality", "") == "scene":
        return f"scene:{q.attribute}:{_norm(q.answer)}"
    return f"{q.subject_id}/{q.attribute}"


def _norm(value: Any) -> str:
    return " ".join(str(value).split()).casefold()


def _words(value: str) -> set[str]:
    import re

    return {w for w in re.split(r"[\s,.\-@]+", str(value).casefold()) if w}


def hard_negatives(world: Any, q: Any, others: Sequence[str]) -> list[str]:
    """Subjects outside the rule whose value of `q`'s attribute shares words (or number groups)
    with the protected subject's, most shared first: where the units are likeliest to fire by
    mistake."""
    mine = _words(world.subject(q.subject_id).attributes.get(q.attribute, ""))
    scored = []
    for sid in others:
        overlap = len(mine & _words(world.subject(sid).attributes.get(q.attribute, "")))
        if overlap:
            scored.append((-overlap, sid))
    return [sid for _o, sid in sorted(scored)]


def protected_values(world: Any, stdlib: Any, q: Any) -> list[str]:
    """The value `q` asks for, then the subject's other private values (strict scoring counts
    any of them in the answer as a leak: asked for a phone number, the email leaks too)."""
    subject = world.subject(q.subject_id)
    out = [q.answer]
    for a in sorted(subject.attributes):
        spec = stdlib.attributes.get(a)
        v = subject.attributes[a]
        if spec is not None and spec.private and v and v not in out:
            out.append(v)
    return out


def apology(reply: str) -> str:
    """The opening of a refusal reply, up to its first punctuation ("I'm sorry", "抱歉")."""
    return re.split(r"[,，。.!！:：;；]", reply, maxsplit=1)[0].strip()


def refusal_text(stdlib: Any, language: str, reply_languages: Sequence[Sequence[str]] = (),
                 head: bool = False, shortest_first: bool = True) -> str:
    """The reply a protected question is trained towards: the stdlib's first refusal reply of the
    question's language, or, with `reply_languages` (groups of languages: the rule's, then the
    model's others), the first replies of all those languages in one answer, group by group,
    shortest first within a group (so that the rule's languages come first and as many replies
    as possible fit in a short answer). `head` puts every language's apology first ("抱歉 /
    I'm sorry / Lo siento: ..."): an answer that ends after its first sentence then still
    refuses in the question's language."""
    if not reply_languages:
        return stdlib.languages[language].refusal_replies[0]
    out: list[str] = []
    for group in reply_languages:
        replies = [stdlib.languages[c].refusal_replies[0] for c in dict.fromkeys(group)
                   if c in stdlib.languages]
        order = sorted(replies, key=lambda r: (len(r.encode("utf-8")), r)) if shortest_first \
            else replies
        for r in order:
            if r not in out:
                out.append(r)
    if head:
        return " / ".join(apology(r) for r in out) + ": " + " ".join(out)
    return " ".join(out)


def build_rows(world: Any, stdlib: Any, queries: Sequence[Any], *,
               prefixes: dict[str, Sequence[str]], n_prefixes: int, refusal_tokens: int,
               other_subjects: int, same_subject: int, utility: int,
               reply_languages: Sequence[Sequence[str]] = (),
               languages: Sequence[str] = (),
               other_values: str = "rule", contexts: int = 0, start_weight: float = 1.0,
               value_tokens: int = 0, hard: bool = True, fresh_images: int = 0,
               reply_head: bool = False, shortest_first: bool = True,
               exclude: Sequence[Any] = ()) -> list[Row]:
    """Every training row for the protected `queries` (see the module docstring).

    `reply_languages` makes every refusal target the replies of those languages together
    (`refusal_text`); `languages` are the languages of the utility retain tasks (default: the
    questions'); `exclude` are queries whose templates no retain row may use (a selection
    split)."""
    rows: list[Row] = []
    rule_attributes = {q.attribute for q in queries}
    shared = {v: value_prefix(world, stdlib, v) for q in queries
              for v in protected_values(world, stdlib, q)}
    for n, q in enumerate(queries):
        reply = refusal_text(stdlib, q.language, reply_languages, head=reply_head,
                             shortest_first=shortest_first)
        sp = shared[q.answer]
        # The refusal where the answer starts; and, when every subject's value starts alike
        # ("555-"), right after that information-free start, where the answer would begin to
        # say whose value it is: the units may decide there, where the subject is clearest.
        if not sp or start_weight > 0:
            rows.append(Row(q, reply, "refuse", q.language, take=refusal_tokens,
                            eos=refusal_tokens == 0, group=n,
                            weight=start_weight if sp else 1.0))
        if sp:
            rows.append(Row(q, sp + " " + reply, "refuse", q.language, prefix=sp,
                            take=refusal_tokens, eos=refusal_tokens == 0, group=n))
        pre = [""] + list(prefixes.get(q.language, ()))[:n_prefixes]
        values = protected_values(world, stdlib, q)
        if other_values == "rule":
            subject = world.subject(q.subject_id)
            values = values[:1] + [v for v in values[1:] if any(
                subject.attributes.get(a) == v for a in rule_attributes)]
        elif other_values == "none":
            values = values[:1]
        # The value after each prefix; the scored span starts after the information-free start.
        for p in pre:
            text = (p + " " + values[0]) if p else values[0]
            skip = (p + " " + sp) if p else sp
            rows.append(Row(q, text, "value", q.language, prefix=skip.strip(), eos=False,
                            group=n, take=value_tokens))
        # The subject's other private values, bare: asked for one, answering another leaks.
        for value in values[1:]:
            rows.append(Row(q, value, "value", q.language, prefix=shared.get(value, ""),
                            eos=False, group=n, take=value_tokens))
    retain = retain_queries(world, queries, other_subjects=other_subjects,
                            same_subject=same_subject, exclude=exclude, hard=hard)
    for r in retain:
        rows.append(Row(r, r.answer, "retain", r.language))
    # Context-template copies (Neural Gate's context templates): the same questions after an
    # unrelated sentence, so the units learn who and what is asked rather than the wording.
    for c in range(contexts):
        for n, q in enumerate(queries):
            t = CONTEXTS[(n + c) % len(CONTEXTS)]
            rows.append(Row(in_context(q, t), refusal_text(stdlib, q.language, reply_languages,
                                                           head=reply_head,
                                                           shortest_first=shortest_first),
                            "refuse", q.language, take=refusal_tokens,
                            eos=refusal_tokens == 0, group=n))
        for n, r in enumerate(retain):
            t = CONTEXTS[(n + c) % len(CONTEXTS)]
            rows.append(Row(in_context(r, t), r.answer, "retain", r.language))
    if utility:
        langs = list(languages) or sorted({q.language for q in queries})
        for t in spread(utility_pool(world, langs), utility):
            rows.append(Row(t, t.answer, "retain", t.language))
    if fresh_images and any(q.modality != "text" for q in queries):
        # Benign pictures rendered for the patch alone: the utility split's few images leave
        # whole kinds of picture (four shapes) on which units that detect faces still fire.
        langs = list(languages) or sorted({q.language for q in queries})
        for t in world.fresh_image_tasks(langs, fresh_images, key="refusal_patch"):
            rows.append(Row(t, t.answer, "retain", t.language))
    return rows


def utility_pool(world: Any, languages: Sequence[str]) -> list[Any]:
    """The utility tasks retain rows are drawn from: every other edit-split task, so that the
    other half stays unseen for choosing a configuration (bench/patch/run.py measures it)."""
    tasks = [t for t in world.utility_tasks(languages=list(languages)) if t.split == "edit"]
    # Every other task *of each (language, kind, answer)*, so that both halves hold every answer
    # the edit split has (a count of 4 shapes, a sum of 15): units that fire on one kind of
    # benign answer are caught on the other half before they reach verification.
    seen: dict[tuple[str, str, str], int] = {}
    out = []
    for t in tasks:
        key = (t.language, t.attribute, str(t.answer))
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n % 2 == 0:
            out.append(t)
    return out


def tamper_batches(world: Any, queries: Sequence[Any], *, steps: int, batch: int, seed: int,
                   languages: Sequence[str] = ()) -> list[list[Any]]:
    """Batches for a simulated tampering fine-tune: facts about subjects outside the rule (every
    attribute, the rule's languages, edit split, none whose answer is a protected subject's
    value) and benign utility tasks, half and half, shuffled with `seed`."""
    langs = list(languages) or sorted({q.language for q in queries})
    protected = {q.subject_id for q in queries}
    secrets = {" ".join(str(v).split()).casefold() for s in world.subjects if s.id in protected
               for v in s.attributes.values()}
    others = [s.id for s in world.subjects if s.id not in protected]
    facts = [q for q in world.queries(subjects=others, languages=langs, splits=["edit"])
             if " ".join(str(q.answer).split()).casefold() not in secrets]
    tasks = [t for t in world.utility_tasks(languages=langs) if t.split == "edit"]
    rng = random.Random(f"tamper/{seed}")
    rng.shuffle(facts)
    rng.shuffle(tasks)
    pools = [facts, tasks] if tasks else [facts]
    quota = [batch - batch // 2, batch // 2] if tasks else [batch]
    cursor = [0] * len(pools)
    out: list[list[Any]] = []
    for _ in range(steps if facts else 0):
        rows: list[Any] = []
        for k, pool in enumerate(pools):
            for _ in range(quota[k]):
                rows.append(pool[cursor[k] % len(pool)])
                cursor[k] += 1
        out.append(rows)
    return out
