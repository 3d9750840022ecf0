"""The planner: a checked policy + model capabilities -> a DAG of pass nodes (`Plan`)."""

from gatelang.planner.build import plan
from gatelang.planner.capabilities import (
    BUILTIN_CAPABILITIES,
    TINY_CLIP_CAPABILITIES,
    TINY_LLAVA_CAPABILITIES,
    ModelCapabilities,
)
from gatelang.planner.plan import (
    KINDS,
    SCHEMA_VERSION,
    SHARED_OPS,
    Cost,
    Plan,
    PlanNode,
    known_ops,
    node_id,
)
from gatelang.planner.render import render

__all__ = [
    "BUILTIN_CAPABILITIES",
    "KINDS",
    "SHARED_OPS",
    "SCHEMA_VERSION",
    "TINY_CLIP_CAPABILITIES",
    "TINY_LLAVA_CAPABILITIES",
    "Cost",
    "ModelCapabilities",
    "Plan",
    "PlanNode",
    "known_ops",
    "node_id",
    "plan",
    "render",
]
