"""Measurement: a policy's evaluation sets, their answers on a model, and aggregated cells.

`build_eval_sets(policy_ir, world) -> EvalSets`, `evaluate(loaded, items) -> [ItemResult]`,
`aggregate(results) -> [Cell]`. `audit` runs all three on an unedited model.
"""

from gatelang.measure.run import Cell, ItemResult, aggregate, evaluate, judge, summarize
from gatelang.measure.sets import ROLES, EvalItem, EvalSets, build_eval_sets, from_query, spread

__all__ = [
    "ROLES",
    "Cell",
    "EvalItem",
    "EvalSets",
    "ItemResult",
    "aggregate",
    "build_eval_sets",
    "evaluate",
    "from_query",
    "judge",
    "spread",
    "summarize",
]
