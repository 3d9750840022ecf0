"""The surface tree both syntaxes parse into: what the author wrote, with a span on everything.

The `.gate` parser and the YAML loader both produce this tree, so name resolution, checks and
the formatters are written once. Nothing here is resolved: names are the strings the author
typed, and the IR layer decides what they mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gatelang.errors import Span

Syntax = Literal["gate", "yaml"]


@dataclass(frozen=True, slots=True)
class Ident:
    """A name or a string literal as written; `quoted` keeps the difference for the formatter."""

    text: str
    span: Span
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class Value:
    """A literal parameter or threshold value: `40`, `0.5%`, `auto`, `"a person"`."""

    kind: Literal["number", "percent", "name", "string", "bool"]
    raw: str
    value: float | str | bool
    span: Span


@dataclass(frozen=True, slots=True)
class Comment:
    line: int
    col: int
    text: str  # including the leading '#'


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    span: Span


@dataclass(frozen=True, slots=True)
class Use:
    target: Ident  # `stdlib.attributes.contact` or a quoted relative path
    is_file: bool
    span: Span


@dataclass(frozen=True, slots=True)
class SubjectsDef:
    name: Ident
    members: tuple[Ident, ...] | None  # inline list
    file: Ident | None  # `from "people.csv"`
    column: Ident | None
    span: Span


@dataclass(frozen=True, slots=True)
class Field:
    key: Literal["description", "owner"]
    value: Ident
    span: Span


@dataclass(frozen=True, slots=True)
class Refuse:
    attributes: tuple[Ident, ...]
    subjects: tuple[Ident, ...]
    languages: tuple[Ident, ...]
    modalities: tuple[Ident, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Anonymize:
    subjects: tuple[Ident, ...]
    encoders: tuple[Ident, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Keep:
    """`keep other_subjects, utility` (preservation) or `keep employer about protected`."""

    items: tuple[Ident, ...]
    subjects: tuple[Ident, ...] | None
    span: Span


@dataclass(frozen=True, slots=True)
class Param:
    name: Ident
    value: Value
    span: Span


@dataclass(frozen=True, slots=True)
class RefusalLanguages:
    """Languages besides the question's in which a refusal still counts as a refusal."""

    languages: tuple[Ident, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Method:
    name: Ident
    params: tuple[Param, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Requirement:
    metric: Ident
    split: Ident | None
    op: str
    value: Value
    span: Span


@dataclass(frozen=True, slots=True)
class Require:
    items: tuple[Requirement, ...]
    span: Span
    profile: Ident | None = None  # `require strict`: a stdlib requirement profile


PolicyItem = Field | Refuse | Anonymize | Keep | RefusalLanguages | Method | Require


@dataclass(frozen=True, slots=True)
class Policy:
    name: Ident
    items: tuple[PolicyItem, ...]
    span: Span


Item = Use | SubjectsDef | Policy


@dataclass(frozen=True)
class SourceFile:
    """One parsed policy file in either syntax."""

    path: str
    syntax: Syntax
    source: str
    header: Header
    items: tuple[Item, ...]
    comments: tuple[Comment, ...] = field(default_factory=tuple)
