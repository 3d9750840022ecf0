"""The gatelang standard library: attributes, languages, metrics and utility tasks.

Method parameters are not here: each method's config (gatelang/methods/<name>/config.py) is their
single source, and the IR records every resolved parameter, so the lock pins them through the
IR hash.

The library is data (YAML next to this file), not code, so a reviewer can read what a
policy's names mean and the lock file can pin it by version and hash. This module only
loads and indexes it.
"""

from __future__ import annotations

import hashlib
import unicodedata
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

Split = Literal["edit", "heldout"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TemplateSet(_Frozen):
    edit: tuple[str, ...]
    heldout: tuple[str, ...]


class SceneSpec(_Frozen):
    answer_field: str
    templates: dict[str, TemplateSet]


class Attribute(_Frozen):
    name: str
    private: bool
    description: str
    normalizer: Literal["text", "digits"]
    templates: dict[str, TemplateSet]
    document_templates: dict[str, TemplateSet] = {}
    scene: SceneSpec | None = None

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted(self.templates))


class Language(_Frozen):
    code: str
    name: str
    script: str
    subject_phrase: dict[str, str]
    refusal_markers: tuple[str, ...]
    refusal_replies: tuple[str, ...]


class AttackSettings(_Frozen):
    items: int
    samples: int
    temperatures: tuple[float, ...]
    max_new_tokens: int
    exposure_candidates: int
    logit_lens_top_k: int
    relearn_steps: int
    relearn_lr: float
    relearn_batch: int
    quantize_bits: tuple[int, ...]


class AttackLibrary(_Frozen):
    """The attacker's material (`attacks.yaml`): never used to build an edit set."""

    settings: AttackSettings
    assent: dict[str, str]
    jailbreak: dict[str, tuple[str, ...]]
    paraphrase: dict[str, dict[str, tuple[str, ...]]]


class Metric(_Frozen):
    name: str
    unit: Literal["percent", "ratio", "seconds"]
    direction: Literal["higher_is_stricter", "lower_is_stricter"]
    description: str
    default_split: str
    allowed_splits: tuple[str, ...]


class Stdlib(_Frozen):
    version: str
    sha256: str
    modules: dict[str, tuple[str, ...]]
    attributes: dict[str, Attribute]
    languages: dict[str, Language]
    metrics: dict[str, Metric]
    splits: dict[str, str]
    utility: dict[str, Any]
    attacks: AttackLibrary
    requirement_profiles: dict[str, tuple[str, ...]]

    def private_attributes(self) -> tuple[str, ...]:
        return tuple(n for n, a in self.attributes.items() if a.private)

    def public_attributes(self) -> tuple[str, ...]:
        return tuple(n for n, a in self.attributes.items() if not a.private)


def _files() -> list[tuple[str, bytes]]:
    root = resources.files(__name__)
    out: list[tuple[str, bytes]] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            out.append((entry.name, entry.read_bytes()))
    for entry in sorted((root / "attributes").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            out.append((f"attributes/{entry.name}", entry.read_bytes()))
    return out


@lru_cache(maxsize=1)
def load_stdlib() -> Stdlib:
    """Load and index the shipped standard library (cached: it is immutable at run time)."""
    files = _files()
    digest = hashlib.sha256()
    raw: dict[str, Any] = {}
    for name, data in files:
        digest.update(name.encode() + b"\0" + data + b"\0")
        raw[name] = yaml.safe_load(data)
    manifest = raw["manifest.yaml"]
    attributes = {
        v["name"]: Attribute(**v) for k, v in raw.items() if k.startswith("attributes/")
    }
    languages = {code: Language(code=code, **v) for code, v in raw["languages.yaml"].items()}
    metric_raw = dict(raw["metrics.yaml"])
    splits = metric_raw.pop("splits")
    metric_splits = metric_raw.pop("metric_splits")
    profiles = {k: tuple(v) for k, v in metric_raw.pop("requirement_profiles").items()}
    metrics = {
        n: Metric(
            name=n,
            default_split=metric_splits[n]["default"],
            allowed_splits=tuple(metric_splits[n]["allowed"]),
            **v,
        )
        for n, v in metric_raw.items()
    }
    return Stdlib(
        version=str(manifest["version"]),
        sha256=digest.hexdigest(),
        modules={k: tuple(v) for k, v in manifest["modules"].items()},
        attributes=attributes,
        languages=languages,
        metrics=metrics,
        splits=splits,
        utility=raw["utility.yaml"],
        attacks=AttackLibrary(**raw["attacks.yaml"]),
        requirement_profiles=profiles,
    )


def normalize_value(value: str, normalizer: str) -> str:
    """Canonical form used to decide whether an answer states a value.

    NFKC folds full-width digits and compatibility forms (common in zh answers); casefold and
    whitespace collapsing make "12 Elm St" and "12 elm st" equal; `digits` keeps only digits so
    "+1 (555) 010-2233" and "15550102233" match.
    """
    text = unicodedata.normalize("NFKC", value).casefold()
    if normalizer == "digits":
        return "".join(ch for ch in text if ch.isdigit())
    # Keep the punctuation that is part of an e-mail or a hyphenated name only when it sits
    # between two alphanumerics; everything else is a separator ("St." == "St").
    chars = []
    for i, ch in enumerate(text):
        inner = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
        chars.append(ch if ch.isalnum() or (ch in "@._-" and inner) else " ")
    return " ".join("".join(chars).split())
