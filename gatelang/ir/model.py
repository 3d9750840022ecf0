"""The resolved policy: the typed IR every later layer reads.

Everything here is resolved and checked: names exist in the stdlib, subject sets are expanded
to ordered member names, method parameters are merged with the preset defaults, and percent
thresholds are fractions. Models are frozen and reject unknown fields so a stale consumer
fails loudly instead of silently ignoring a new meaning.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gatelang.errors import Span
from gatelang.syntax import names

IR_VERSION = 1
MODALITIES = names.MODALITIES
ENCODERS = names.ENCODERS
PRESERVATIONS = names.PRESERVATIONS
OPS = names.COMPARISONS


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    span: Span


class Use(Node):
    kind: Literal["stdlib", "file"]
    target: str  # `stdlib.attributes.contact`, or the file path as written
    path: str | None = None  # the resolved file, relative to the entry policy's folder


class SubjectSource(Node):
    kind: Literal["inline", "file"]
    file: str | None = None  # as written, relative to the file that defines the set
    column: str | None = None
    format: Literal["csv", "json", "text"] | None = None


class SubjectSet(Node):
    name: str
    members: tuple[str, ...]
    source: SubjectSource
    defined_in: str  # the policy file that defines the set


class RefuseRule(Node):
    kind: Literal["refuse"] = "refuse"
    attributes: tuple[str, ...]
    subjects: tuple[str, ...]  # resolved member names, in first-mention order
    subject_sets: tuple[str, ...]  # set names referenced (inline names are listed as-is)
    languages: tuple[str, ...]
    modalities: tuple[str, ...]


class AnonymizeRule(Node):
    kind: Literal["anonymize"] = "anonymize"
    subjects: tuple[str, ...]
    subject_sets: tuple[str, ...]
    encoders: tuple[Literal["text", "image"], ...]


class KeepRule(Node):
    """An explicit promise that these attributes of these subjects stay answerable."""

    kind: Literal["keep"] = "keep"
    attributes: tuple[str, ...]
    subjects: tuple[str, ...]
    subject_sets: tuple[str, ...]


Rule = Annotated[RefuseRule | AnonymizeRule | KeepRule, Field(discriminator="kind")]


class Preservation(Node):
    what: Literal["other_subjects", "other_attributes", "utility"]


class Method(Node):
    name: str
    family: Literal["refusal_edit", "neuron_ablation", "encoder_remap"]
    params: dict[str, Any]  # every parameter: defaults, then the profile, then the overrides
    overrides: tuple[str, ...]  # the parameters the policy set explicitly
    profile: str | None = None  # the method profile the policy named


class Requirement(Node):
    metric: str
    split: str
    op: Literal[">=", "<=", ">", "<"]
    threshold: float  # a fraction in 0..1 for percent metrics
    unit: Literal["percent", "ratio", "seconds"]
    profile: str | None = None  # the requirement profile (`require strict`) it came from

    @property
    def key(self) -> str:
        return f"{self.metric}({self.split})"

    def display(self) -> str:
        if self.unit == "percent":
            value = f"{self.threshold * 100:g}%"
        else:
            value = f"{self.threshold:g}"
        return f"{self.key} {self.op} {value}"


class Policy(Node):
    name: str
    description: str | None = None
    owner: str | None = None
    rules: tuple[Rule, ...]
    keep: tuple[Preservation, ...]
    method: Method
    requirements: tuple[Requirement, ...]
    # Languages besides the question's in which a refusal counts (strict scoring otherwise
    # accepts only the question's language).
    refusal_languages: tuple[str, ...] = ()

    def refuse_rules(self) -> tuple[RefuseRule, ...]:
        return tuple(r for r in self.rules if isinstance(r, RefuseRule))

    def anonymize_rules(self) -> tuple[AnonymizeRule, ...]:
        return tuple(r for r in self.rules if isinstance(r, AnonymizeRule))

    def keep_rules(self) -> tuple[KeepRule, ...]:
        return tuple(r for r in self.rules if isinstance(r, KeepRule))

    def preserves(self, what: str) -> bool:
        return any(k.what == what for k in self.keep)


class PolicyFile(Node):
    """One checked policy file with its local imports resolved."""

    ir_version: int = IR_VERSION
    version: int  # the language version from the `gatelang N` header
    stdlib_version: str
    stdlib_sha256: str
    source: str  # the entry file's path as given
    syntax: Literal["gate", "yaml"]
    uses: tuple[Use, ...]
    attributes_in_scope: tuple[str, ...]
    languages_in_scope: tuple[str, ...]
    subject_sets: dict[str, SubjectSet]
    policies: tuple[Policy, ...]
    # Every other file the policy read (imports at any depth, subject files), relative to the
    # entry policy's folder, in first-read order: what a lock file must hash.
    inputs: tuple[str, ...] = ()

    def policy(self, name: str) -> Policy:
        for p in self.policies:
            if p.name == name:
                return p
        raise KeyError(name)

    def semantic_dump(self) -> dict[str, Any]:
        """The IR without spans and source locations: equal for equal meaning.

        Used to compare the two syntaxes, a file with its formatted self, and in `diff`.
        """
        return _strip(self.model_dump(mode="json"))


_LOCATION_KEYS = frozenset({"span", "source", "syntax", "defined_in", "path", "inputs"})


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _LOCATION_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value
