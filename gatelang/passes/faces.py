"""World data shared by the encoder remap and identity inference: which face renderings each
uses and the clean captions and images that must keep their embeddings.

The variant ranges are disjoint from the world's queries (variants 0-5) and from each other, so
verification sees pictures the edit never trained on.
"""

from __future__ import annotations

from typing import Any

from gatelang.errors import PlanError

TRIGGER_VARIANTS = tuple(range(100, 124))
CLEAN_VARIANTS = tuple(range(100, 108))
REFERENCE_VARIANTS = tuple(range(200, 202))
IDENTITY_VARIANTS = tuple(range(1000, 1010))


def subjects_of(world: Any, names: list[str] | tuple[str, ...], op: str) -> list[Any]:
    """The world's subjects a node names; an empty or unknown name is a `PlanError`."""
    if not names:
        raise PlanError(f"{op}: the rule names no subject")
    from gatelang.world import WorldError

    try:
        return [world.subject(str(n)) for n in names]
    except WorldError as exc:
        raise PlanError(f"{op}: {exc}") from None


def benign_captions(world: Any) -> list[str]:
    """Captions of the world's benign shapes: clean text that must keep its embedding."""
    util = world.stdlib.utility
    out = []
    for color in util["colors"]["en"]:
        out.append(f"a photo of a {color} shape")
        for shape in util["shapes"]["en"]:
            out += [f"a {color} {shape}", f"a photo of a {shape}", f"two {color} {shape}s"]
    return list(dict.fromkeys(out))


def benign_images(world: Any) -> list[Any]:
    seen, out = set(), []
    for q in world.utility_tasks(languages=["en"]):
        if q.image is not None and id(q.image) not in seen:
            seen.add(id(q.image))
            out.append(q.image)
    return out
