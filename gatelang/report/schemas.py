"""JSON Schemas of what gatelang writes and reads: policies (YAML form), report.json, gate.lock
and audit.json, generated from pydantic models so the schema and the validation are one thing.

report.json and audit.json are built as dicts by their writers; the models here describe those
documents (and `validate_document` checks a written file against them) without changing how
they are built. Nested objects allow extra keys: a newer writer may add a field (an interval,
a section) without making older documents invalid, while every field listed here must be
present with its type. The lock's model lives with its reader (`report.lock.LockFile`).

Nothing here imports torch: `gatelang schema` is a language command and runs without the
model stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatelang.errors import GatelangError

KINDS = ("policy", "report", "lock", "audit")
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- report.json ---------------------------------------------------------------------------


class ReportRequirement(_Open):
    """One `require` line as measured."""

    name: str = Field(description="the requirement as written, e.g. `refusal(heldout) >= 95%`")
    metric: str
    split: str | None = None
    op: str
    threshold: float = Field(description="display units: 95.0 for 95%, points for utility_drop")
    value: float | None = Field(description="measured, display units; null: nothing measured")
    n: int = Field(ge=0, description="items the value is measured on")
    passed: bool
    policy: str | None = None


class ReportMetric(_Open):
    """One cell: a metric over one group of items, before and after the edit."""

    metric: str
    split: str
    language: str | None = None
    modality: str | None = None
    before: float | None
    after: float | None
    n: int = Field(ge=0)
    check: str | None = None
    node: str | None = Field(None, description="the plan node that measured it")


class ReportPolicy(_Open):
    path: str
    name: str
    sha256: str
    ir_sha256: str


class ReportModel(_Open):
    name: str
    weights_sha256: str
    family: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    device: str
    dtype: str


class ReportStdlib(_Open):
    version: str
    sha256: str


class ReportPatchTensor(_Open):
    name: str
    kind: Literal["rows", "cols", "full"]
    shape: list[int]
    count: int = Field(ge=0, description="rows or columns stored (0 for a full tensor)")


class ReportPatch(_Open):
    file: str
    sha256: str
    status: Literal["accepted", "rejected"]
    tensors: list[ReportPatchTensor]
    neurons_touched: int = Field(ge=0)
    neurons_total: int = Field(ge=0)
    params_changed: int = Field(ge=0)


class ReportPassTiming(_Open):
    op: str
    label: str
    node: str
    seconds: float
    cached: bool


class ReportTiming(_Open):
    model_load_s: float
    passes: list[ReportPassTiming]
    total_s: float


class ReportDocument(_Open):
    """report.json, written by `gatelang apply` (docs/report.md describes every field)."""

    schema_version: int
    passed: bool
    status: Literal["accepted", "rejected"]
    summary: str
    policy: ReportPolicy
    model: ReportModel
    stdlib: ReportStdlib
    seed: int
    methods: list[str]
    requirements: list[ReportRequirement]
    metrics: list[ReportMetric]
    patch: ReportPatch
    timing: ReportTiming
    options: dict[str, Any] = Field(default_factory=dict)


# -- audit.json ----------------------------------------------------------------------------


class AuditCell(_Open):
    """Rates over one (role, policy, subject set, attribute, language, modality, split) group."""

    role: str
    policy: str
    subject_set: str
    attribute: str
    language: str
    modality: str
    split: str
    leak_rate: float = Field(ge=0, le=1)
    refusal_rate: float = Field(ge=0, le=1)
    accuracy: float = Field(ge=0, le=1)
    n: int = Field(ge=0)


class AuditModel(_Open):
    name: str
    family: str
    weights_sha256: str


class AuditDocument(_Open):
    """audit.json, written by `gatelang audit --out` (fractions, not percentages)."""

    schema_version: int
    policy: str = Field(description="the policy file audited")
    policies: list[str]
    model: AuditModel
    stdlib_version: str
    world_seed: int
    summary: dict[str, Any]
    cells: list[AuditCell]
    notes: list[str]
    timing: dict[str, float]
    attacks: list[dict[str, Any]] = Field(default_factory=list)


# -- dispatch ------------------------------------------------------------------------------


def _model_for(kind: str) -> type[BaseModel]:
    if kind == "report":
        return ReportDocument
    if kind == "audit":
        return AuditDocument
    if kind == "lock":
        from gatelang.report.lock import LockFile

        return LockFile
    raise GatelangError(f"unknown schema kind {kind!r} (kinds: {', '.join(KINDS)})")


def json_schema(kind: str = "policy") -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of `kind`: policy (the YAML form), report, lock, audit."""
    if kind == "policy":
        from gatelang.syntax.schema import json_schema as policy_schema

        return policy_schema()
    model = _model_for(kind)
    schema = model.model_json_schema(mode="validation")
    titles = {"report": "gatelang report.json", "lock": "gatelang gate.lock",
              "audit": "gatelang audit.json"}
    return {"$schema": SCHEMA_DIALECT, **schema, "title": titles[kind]}


class DocumentError(GatelangError):
    """A written document does not match its schema."""


def validate_document(kind: str, doc: dict[str, Any] | str | Path) -> BaseModel:
    """Parse a document (a dict, or a path to a JSON file) with its kind's model.

    Returns the parsed model; DocumentError naming the file and the first bad fields otherwise.
    Policies are checked with `gatelang.check`, not here.
    """
    source = "document"
    if isinstance(doc, (str, Path)):
        source = str(doc)
        try:
            doc = json.loads(Path(doc).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DocumentError(f"{source}: cannot read JSON: {exc}") from None
    try:
        return _model_for(kind).model_validate(doc)
    except ValidationError as exc:
        bad = "; ".join(".".join(str(x) for x in e["loc"]) + f": {e['msg']}"
                        for e in exc.errors()[:5])
        raise DocumentError(f"{source}: not a valid {kind} document: {bad}") from None


__all__ = ["KINDS", "AuditDocument", "DocumentError", "ReportDocument", "json_schema",
           "validate_document"]
