"""A policy's evaluation sets, drawn from the built-in world.

The same sets serve `audit` (how much the unedited model leaks) and verification (before and
after an edit), so a number in an audit and the "before" column of a report mean the same
thing. Everything is deterministic: same policy, world seed and caps, same items in the same
order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gatelang.errors import PlanError
from gatelang.stdlib import load_stdlib

Role = Literal["target", "locality", "utility"]
ROLES: tuple[str, ...] = ("target", "locality", "utility")
# Attributes answered with a refusal by habit are no locality signal.
_NOT_LOCALITY = ("attributes.credentials",)


@dataclass(frozen=True)
class Item:
    """A bare prompt as the adapter encodes it: text, optional image, the subject's mention.

    World queries and `EvalItem`s have the same fields; this is for prompts built on the fly
    (an edit set's context templates).
    """

    prompt: str
    image: Any = None
    subject_text: str = ""


@dataclass(frozen=True)
class EvalItem:
    """One question with what a correct (or leaking) answer contains."""

    id: str
    role: Role
    policy: str
    subject_set: str
    subject_id: str
    attribute: str
    language: str
    modality: str
    split: str  # edit | heldout | unseen_language (verification adds document | scene)
    prompt: str
    subject_text: str
    expected: str
    normalizer: str
    image: Any = field(default=None, repr=False, compare=False)
    # The subject's other protected values, (value, normalizer): answering any of them to a
    # protected question is a leak too. Only target items carry them.
    also: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # Languages besides the question's whose refusals count (a policy's `refusal_languages`).
    refusal_languages: tuple[str, ...] = ()

    @property
    def cell_key(self) -> tuple[str, str, str, str, str, str, str]:
        return (self.role, self.policy, self.subject_set, self.attribute, self.language,
                self.modality, self.split)


@dataclass
class EvalSets:
    targets: list[EvalItem] = field(default_factory=list)
    locality: list[EvalItem] = field(default_factory=list)
    utility: list[EvalItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def all(self) -> list[EvalItem]:
        return self.targets + self.locality + self.utility

    def __len__(self) -> int:
        return len(self.targets) + len(self.locality) + len(self.utility)


def spread(items: Sequence[Any], limit: int | None) -> list[Any]:
    """An evenly spaced, order-preserving subset: covers many subjects and templates.

    `limit` items at positions `int(i * len / limit)`; every item when `limit` is None or 0.
    Deterministic, so every caller that caps a list (eval cells, verification items, edit sets,
    mask samples) keeps the same items for the same input.
    """
    items = list(items)
    if not limit or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _cap_per_cell(items: Sequence[EvalItem], limit: int | None) -> list[EvalItem]:
    if limit is None:
        return list(items)
    cells: dict[tuple, list[EvalItem]] = {}
    for it in items:
        cells.setdefault(it.cell_key, []).append(it)
    keep = {id(x) for group in cells.values() for x in spread(group, limit)}
    return [it for it in items if id(it) in keep]


def from_query(q: Any, role: Role = "target", policy: str = "", subject_set: str = "",
               split: str | None = None, refusal_languages: Sequence[str] = ()) -> EvalItem:
    """An evaluation item from a world query (for callers that select queries themselves)."""
    return _item(q, role, policy, subject_set, split or q.split, refusal_languages)


def _item(q: Any, role: Role, policy: str, subject_set: str, split: str,
          refusal_languages: Sequence[str] = ()) -> EvalItem:
    lib = load_stdlib()
    attr = lib.attributes.get(q.attribute)
    return EvalItem(
        id=q.id, role=role, policy=policy, subject_set=subject_set, subject_id=q.subject_id,
        attribute=q.attribute, language=q.language, modality=q.modality, split=split,
        prompt=q.prompt, subject_text=q.subject_text, expected=q.answer,
        normalizer=attr.normalizer if attr is not None else "text", image=q.image,
        also=protected_values(q.subject_id, exclude=q.attribute) if role == "target" else (),
        refusal_languages=tuple(refusal_languages),
    )


def protected_values(subject_id: str, *, exclude: str | None = None
                     ) -> tuple[tuple[str, str], ...]:
    """The private values of a world subject, (value, normalizer), except `exclude`'s.

    What counts as a leak in an answer to a protected question: any of these, not only the
    value asked for. Subjects outside the built-in world (none known) have none.
    """
    if not subject_id:
        return ()
    from gatelang.world import WorldError, load_world

    lib = load_stdlib()
    try:
        subject = load_world(seed=0).subject(subject_id)
    except WorldError:
        return ()
    out = []
    for name, value in sorted(subject.attributes.items()):
        spec = lib.attributes.get(name)
        if name == exclude or spec is None or not spec.private or not value:
            continue
        out.append((str(value), spec.normalizer))
    return tuple(out)


def _policies(policy_ir: Any) -> list[Any]:
    if hasattr(policy_ir, "policies"):
        return list(policy_ir.policies)
    return [policy_ir]


def build_eval_sets(
    policy_ir: Any,
    world: Any | None = None,
    *,
    languages: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    include_edit: bool = False,
    target_per_cell: int | None = None,
    locality_per_cell: int | None = 8,
    utility_per_cell: int | None = 16,
) -> EvalSets:
    """Targets, locality and utility items for every policy in a checked policy file.

    Targets: each refuse rule's subjects x attributes in its languages and modalities, heldout
    templates (and edit ones when `include_edit`); the world's languages the rule does not name
    (text, heldout) as the `unseen_language` split. Locality: other subjects' same attributes
    and the targets' other attributes (heldout, text), plus `keep` rules. Utility: the world's
    benign tasks in the rules' languages. `languages` / `modalities` restrict everything to
    what the model can take; what is dropped is said in `notes`.
    """
    if world is None:
        from gatelang.world import load_world

        world = load_world()
    lib = load_stdlib()
    model_langs = tuple(languages) if languages is not None else tuple(world.languages)
    model_mods = tuple(modalities) if modalities is not None else ("text", "image", "document", "scene")
    sets = EvalSets()
    splits = ["edit", "heldout"] if include_edit else ["heldout"]
    seen: set[tuple[str, str]] = set()

    def add(bucket: list[EvalItem], item: EvalItem) -> None:
        key = (item.role, item.id)
        if key not in seen:
            seen.add(key)
            bucket.append(item)

    for pol in _policies(policy_ir):
        rules = list(pol.refuse_rules()) if hasattr(pol, "refuse_rules") else []
        if hasattr(pol, "anonymize_rules") and pol.anonymize_rules():
            sets.notes.append(f"{pol.name}: anonymize rules are measured by `apply` "
                              "(identity inference), not by this audit")
        if not rules:
            continue
        rule_langs = list(dict.fromkeys(lang for r in rules for lang in r.languages))
        targets_all = list(dict.fromkeys(s for r in rules for s in r.subjects))
        target_ids = [world.subject(s).id for s in targets_all]
        attrs_all = list(dict.fromkeys(a for r in rules for a in r.attributes))
        for r in rules:
            set_name = "+".join(r.subject_sets) or "targets"
            subj_ids = [world.subject(s).id for s in r.subjects]
            mods = [m for m in r.modalities if m in model_mods]
            for m in r.modalities:
                if m not in model_mods:
                    sets.notes.append(f"{pol.name}: {m} queries skipped (the model takes no {m} input)")
            langs = [lang for lang in r.languages if lang in model_langs]
            if langs and mods:
                for q in world.queries(subjects=subj_ids, attributes=r.attributes,
                                       languages=langs, modalities=mods, splits=splits):
                    add(sets.targets, _item(q, "target", pol.name, set_name, q.split))
            unseen = [lang for lang in world.languages
                      if lang in model_langs and lang not in rule_langs]
            if unseen:
                for q in world.queries(subjects=subj_ids, attributes=r.attributes,
                                       languages=unseen, modalities=["text"], splits=["heldout"]):
                    add(sets.targets, _item(q, "target", pol.name, set_name, "unseen_language"))
        langs = [lang for lang in rule_langs if lang in model_langs]
        if not langs:
            raise PlanError(f"policy {pol.name}: the model knows none of its languages "
                            f"({', '.join(rule_langs)})")
        local: list[EvalItem] = []
        if pol.preserves("other_subjects"):
            others = [s.id for s in world.subjects if s.id not in target_ids]
            for q in world.queries(subjects=others, attributes=attrs_all, languages=langs,
                                   modalities=["text"], splits=["heldout"]):
                local.append(_item(q, "locality", pol.name, "other_subjects", "heldout"))
        if pol.preserves("other_attributes"):
            excluded = {a for mod in _NOT_LOCALITY for a in lib.modules.get(mod, ())}
            other_attrs = [a for a in world.attributes if a not in attrs_all and a not in excluded]
            for q in world.queries(subjects=target_ids, attributes=other_attrs, languages=langs,
                                   modalities=["text"], splits=["heldout"]):
                local.append(_item(q, "locality", pol.name, "targets", "heldout"))
        for k in pol.keep_rules() if hasattr(pol, "keep_rules") else ():
            kept = [world.subject(s).id for s in k.subjects]
            set_name = "+".join(k.subject_sets) or "kept"
            for q in world.queries(subjects=kept, attributes=k.attributes, languages=langs,
                                   modalities=["text"], splits=["heldout"]):
                local.append(_item(q, "locality", pol.name, set_name, "heldout"))
        for it in _cap_per_cell(local, locality_per_cell):
            add(sets.locality, it)
        if pol.preserves("utility"):
            util = [q for q in world.utility_tasks(languages=langs) if q.modality in model_mods]
            if any(m not in model_mods for m in ("image",)):
                sets.notes.append(f"{pol.name}: image utility tasks skipped (text-only model)")
            # Utility tasks are never edited on, so both halves form one held-out pool.
            items = [_item(q, "utility", pol.name, "utility", "heldout") for q in util]
            for it in _cap_per_cell(items, utility_per_cell):
                add(sets.utility, it)
    if target_per_cell is not None:
        sets.targets = _cap_per_cell(sets.targets, target_per_cell)
    sets.notes = list(dict.fromkeys(sets.notes))
    return sets

