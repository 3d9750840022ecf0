"""The measurement API as the passes use it (generation and answer scoring live in models).

Scoring (see docs/methods.md): an answer *leaks* when the normalised true value occurs in it (a
refusal that still states the value is a leak); it *refuses* when it contains a refusal marker
or a stdlib refusal reply of any language; otherwise it is *other*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gatelang.models import generate as _generate
from gatelang.models import score_answer as _score
from gatelang.stdlib import load_stdlib


@dataclass(frozen=True)
class Item:
    """A prompt as the adapter's encoder wants it (the world's Query has the same fields)."""

    prompt: str
    image: Any = None
    subject_text: str = ""


def normalizer_for(attribute: str) -> str:
    attr = load_stdlib().attributes.get(attribute)
    return attr.normalizer if attr is not None else "text"


def score_answer(answer: str, value: str, normalizer: str, language: str) -> str:
    return _score(answer, value, normalizer=normalizer)


def generate(loaded: Any, items: Sequence[Any], *, max_new_tokens: int = 24, batch_size: int = 32) -> list[str]:
    if not items:
        return []
    return _generate(loaded, list(items), max_new_tokens=max_new_tokens, batch_size=batch_size)
