"""`data.queries`: the prompt sets a plan runs on, resolved against the built-in world.

The node's params name a selection (subjects, attributes, languages, modalities, splits, or a
`source` such as the world's utility tasks); the result records the selection and the query ids
so children can re-resolve the same queries (the world is deterministic and cached) without
shipping images through the cache.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gatelang.errors import PlanError
from gatelang.passes.base import QUERY_SET, NodeSpec, Pass, PassContext, PassResult, register

_SELECT_KEYS = ("subjects", "attributes", "languages", "modalities", "splits")


def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def select(world: Any, params: dict[str, Any]) -> list[Any]:
    """Queries for a selection. Unknown names are a PlanError naming what the world has."""
    source = str(params.get("source", "queries"))
    langs = _as_list(params.get("languages"))
    splits = set(_as_list(params.get("splits")) or ["edit", "heldout"])
    from gatelang.world import WorldError

    try:
        if source in ("utility", "utility_tasks"):
            items = world.utility_tasks(languages=langs)
            mods = set(_as_list(params.get("modalities")) or ("text", "image"))
            return [q for q in items if q.split in splits and q.modality in mods]
        if source in ("habit", "habit_queries"):
            items = world.habit_queries(languages=langs)
            return [q for q in items if q.split in splits]
        subjects = _as_list(params.get("subjects"))
        if subjects is not None:
            subjects = [world.subject(s).id for s in subjects]
        exclude = {world.subject(s).id for s in _as_list(params.get("exclude_subjects")) or []}
        mods = _as_list(params.get("modalities"))
        if mods is not None:
            mods = [m for m in mods if m != "all"] or None
        out = world.queries(
            subjects=subjects,
            attributes=_as_list(params.get("attributes")),
            languages=langs,
            modalities=mods,
            splits=sorted(splits),
        )
    except WorldError as exc:
        raise PlanError(f"data.queries: {exc}") from None
    if exclude:
        out = [q for q in out if q.subject_id not in exclude]
    limit = params.get("per_cell_limit")
    if limit:
        out = _limit_per_cell(out, int(limit))
    return out


def _limit_per_cell(queries: Iterable[Any], limit: int) -> list[Any]:
    seen: dict[tuple, int] = {}
    out = []
    for q in queries:
        key = (q.attribute, q.language, q.modality, q.split)
        if seen.get(key, 0) < limit:
            out.append(q)
            seen[key] = seen.get(key, 0) + 1
    return out


def queries_of(ctx: PassContext, result: PassResult) -> list[Any]:
    """Re-resolve a data node's queries from its recorded selection."""
    if "selection" not in result.data:
        raise PlanError("expected a data.queries input")
    wanted = result.data["ids"]
    by_id = {q.id: q for q in select(ctx.world, result.data["selection"])}
    return [by_id[i] for i in wanted if i in by_id]


def find_data(inputs: dict[str, PassResult], *roles: str) -> list[PassResult]:
    """Data inputs, preferring the given roles in order, else every data input; within a role
    in the plan's order (the executor builds `inputs` in that order)."""
    for role in roles:
        hits = [r for k, r in inputs.items() if (k == role or k.startswith(role + "."))
                and "selection" in r.data]
        if hits:
            return hits
    return [r for r in inputs.values() if "selection" in r.data]


def edit_queries(ctx: PassContext, inputs: dict[str, PassResult]) -> list[Any]:
    """The edit split of a node's data inputs, capped by the run option `edit_max_items`
    (evenly spread, so every cell keeps examples; used by reduced test configurations)."""
    data = find_data(inputs, "edit_set", "queries")
    queries = [q for d in data for q in queries_of(ctx, d) if q.split == "edit"]
    from gatelang.measure.sets import spread

    return spread(queries, ctx.options.edit_max_items)


def required_edit_queries(ctx: PassContext, node: Any, inputs: dict[str, PassResult]
                          ) -> list[Any]:
    """`edit_queries`, for a pass that cannot edit on nothing: an empty edit set is a
    `PlanError` naming the pass."""
    queries = edit_queries(ctx, inputs)
    if not queries:
        raise PlanError(f"{node.op}: the edit set is empty")
    return queries


@register
class QueriesPass(Pass):
    op = "data.queries"
    kind = "data"
    output = QUERY_SET

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        selection = {k: v for k, v in node.params.items()}
        queries = select(ctx.world, selection)
        cells: dict[str, int] = {}
        for q in queries:
            key = f"{q.attribute}/{q.language}/{q.modality}/{q.split}"
            cells[key] = cells.get(key, 0) + 1
        return PassResult(data={"selection": selection, "ids": [q.id for q in queries],
                                "n": len(queries), "cells": cells})


__all__ = ["QueriesPass", "edit_queries", "find_data", "queries_of", "required_edit_queries",
           "select"]
