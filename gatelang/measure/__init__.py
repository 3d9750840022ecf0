"""Measurement: a policy's evaluation sets, their answers on a model, and aggregated cells.

`build_eval_sets(policy_ir, world) -> EvalSets`, `evaluate(loaded, items) -> [ItemResult]`,
`aggregate(results) -> [Cell]`. `audit` runs all three on an unedited model; `apply`'s
verification passes use the same items, answers and judge, with their own rows and metric
records from `gatelang.measure.verification`.
"""

from gatelang.measure.run import (
    ANSWER_BATCH_SIZE,
    Cell,
    ItemResult,
    aggregate,
    answer,
    evaluate,
    judge,
    summarize,
)
from gatelang.measure.sets import (
    ROLES,
    EvalItem,
    EvalSets,
    Item,
    build_eval_sets,
    from_query,
    spread,
)

__all__ = [
    "ANSWER_BATCH_SIZE",
    "ROLES",
    "Cell",
    "EvalItem",
    "EvalSets",
    "Item",
    "ItemResult",
    "aggregate",
    "answer",
    "build_eval_sets",
    "evaluate",
    "from_query",
    "judge",
    "spread",
    "summarize",
]
