"""The built-in fictitious world (subjects, images, queries, benign tasks); see docs/world.md."""

from gatelang.world.core import (
    HABIT_ATTRIBUTE,
    MODALITIES,
    N_VARIANTS,
    UTILITY_KINDS,
    Query,
    Subject,
    World,
    WorldError,
    load_world,
)

__all__ = [
    "HABIT_ATTRIBUTE",
    "MODALITIES",
    "N_VARIANTS",
    "UTILITY_KINDS",
    "Query",
    "Subject",
    "World",
    "WorldError",
    "load_world",
]
