"""What a method is: a typed config, named profiles, the passes it contributes, one registration.

A method is a package under `gatelang/methods/<name>/` (or anywhere else, for a plug-in) whose
`__init__.py` makes one `register_method(MethodSpec(...))` call. The spec's pydantic config is the
single source of the method's parameters: their defaults, units, ranges and help text. The
compiler checks a policy's `method` block against it, the planner sizes the work from it, the
passes read their settings from a validated instance of it, and the parameter tables in
docs/methods.md, the YAML JSON Schema and `gatelang plan`'s display are generated from it.

This module imports neither torch nor the passes: `gatelang check` and `fmt` stay fast, and the
passes of a method are imported only when a plan is executed (`MethodSpec.passes`).
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Family = Literal["refusal_edit", "neuron_ablation", "encoder_remap"]
ParamKind = Literal["int", "float", "percent", "bool", "str", "enum", "layer"]
Layer = int | Literal["auto"]
GROUPS = ("method", "tuning")


def param(default: Any, help: str, *, ge: float | None = None, le: float | None = None,
          percent: bool = False, group: str = "method") -> Any:
    """A method parameter: a pydantic field with its help text and the unit the language uses.

    `percent` fields hold fractions (0.3) and are written `30%` in policies; `group` separates
    what a policy author may want to say ("method": the paper's semantic parameters) from the
    knobs that belong in a profile ("tuning": batching, data construction, budgets).
    """
    if group not in GROUPS:
        raise ValueError(f"unknown parameter group {group!r}")
    extra: dict[str, Any] = {"group": group}
    if percent:
        extra["unit"] = "percent"
        ge = 0.0 if ge is None else ge
        le = 1.0 if le is None else le
    return Field(default, description=help, ge=ge, le=le, json_schema_extra=extra)


class MethodConfig(BaseModel):
    """Base of every method's config: frozen, unknown keys rejected.

    `renamed` maps a deprecated parameter name to its new name; the compiler accepts the old
    name for one stdlib version with a warning and `gatelang fmt` rewrites it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    renamed: ClassVar[dict[str, str]] = {}


@dataclass(frozen=True)
class ParamInfo:
    """One parameter as the language sees it (derived from a config field)."""

    name: str
    kind: ParamKind
    default: Any
    help: str
    group: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None

    def display(self, value: Any) -> str:
        """A value as a policy writes it (`30%`, `true`, `auto`)."""
        if self.kind == "percent":
            return f"{value * 100:g}%"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    def display_default(self) -> str:
        return self.display(self.default)


@dataclass(frozen=True)
class Work:
    """Estimated work of one pass (sequence-level forward/backward passes, tokens)."""

    forward_passes: int = 0
    backward_passes: int = 0
    tokens: int = 0


CostFn = Callable[[Any, int, int, int], Work]  # (config, edit queries, edit tokens, layers)


@dataclass(frozen=True)
class ModelShape:
    """The sizes a method needs to say what it will touch (from the planner's capabilities)."""

    num_layers: int
    hidden_size: int
    intermediate_size: int


TouchFn = Callable[[Any, ModelShape], str]


def _no_work(_cfg: Any, _n: int, _tokens: int, _layers: int) -> Work:
    return Work()


@dataclass(frozen=True)
class MethodSpec:
    """Everything the compiler, planner and runtime need to know about one method.

    `localize` and `edit` are the plan ops of its passes (`edit` keyed by what is edited:
    ``refuse`` for a refusal or ablation edit, ``text``/``image`` for an encoder); `passes` are
    the modules that register those ops, imported when a plan runs.
    """

    name: str
    family: Family
    description: str
    config: type[MethodConfig]
    edit: Mapping[str, str]
    passes: tuple[str, ...]
    localize: str | None = None
    localize_params: Mapping[str, Any] = field(default_factory=dict)
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    localize_cost: CostFn = _no_work
    edit_cost: CostFn = _no_work
    touches: TouchFn | None = None
    # The edit pass chooses its own configuration against the policy's requirements (the planner
    # hands them to the edit node; other methods' cache keys stay independent of them).
    reads_requirements: bool = False
    paper: str = ""

    # -- parameters --------------------------------------------------------------------------
    def params(self) -> dict[str, ParamInfo]:
        return config_params(self.config)

    def defaults(self) -> dict[str, Any]:
        """Every parameter's default, in the IR's units (percentages as fractions)."""
        return self.config().model_dump()

    def resolve(self, values: Mapping[str, Any] | None = None, *, profile: str | None = None
                ) -> MethodConfig:
        """A validated config: defaults, then the profile, then explicit values.

        Raises `MethodConfigError` naming the parameter for an unknown name or a bad value.
        """
        merged: dict[str, Any] = {}
        if profile is not None:
            if profile not in self.profiles:
                raise MethodConfigError(self.name, "profile",
                                        f"method {self.name} has no profile {profile!r}",
                                        tuple(self.profiles))
            merged.update(self.profiles[profile])
        for key, value in (values or {}).items():
            merged[self.config.renamed.get(key, key)] = value
        unknown = [k for k in merged if k not in self.config.model_fields]
        if unknown:
            raise MethodConfigError(self.name, unknown[0],
                                    f"method {self.name} has no parameter {unknown[0]!r}",
                                    tuple(self.config.model_fields))
        try:
            return self.config(**merged)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = str(err["loc"][0]) if err.get("loc") else ""
            raise MethodConfigError(self.name, key, f"{self.name}.{key}: {err['msg']}", ()) \
                from None

    def describe(self, config: MethodConfig, shape: ModelShape) -> str:
        """What the edit may change, in the model's own units, for a reviewer of the plan."""
        return self.touches(config, shape) if self.touches else "see the method's docs"

    def load_passes(self) -> None:
        for module in self.passes:
            importlib.import_module(module)


class MethodConfigError(ValueError):
    """A method parameter or profile that the method's config does not accept."""

    def __init__(self, method: str, key: str, message: str, known: tuple[str, ...]) -> None:
        super().__init__(message)
        self.method = method
        self.key = key
        self.known = known


def _kind(annotation: Any, extra: Mapping[str, Any]) -> tuple[ParamKind, tuple[str, ...] | None]:
    if extra.get("unit") == "percent":
        return "percent", None
    if annotation is bool:
        return "bool", None
    if annotation is int:
        return "int", None
    if annotation is float:
        return "float", None
    if annotation is str:
        return "str", None
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return "enum", tuple(str(a) for a in args)
    if int in args and any(typing.get_origin(a) is Literal for a in args):
        return "layer", None
    raise TypeError(f"unsupported method parameter type {annotation!r}")


def config_params(config: type[MethodConfig]) -> dict[str, ParamInfo]:
    """The language-level view of a config's fields (kind, range, help, group)."""
    out: dict[str, ParamInfo] = {}
    for name, f in config.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        kind, choices = _kind(f.annotation, extra)
        lo = hi = None
        for m in f.metadata:
            lo = getattr(m, "ge", lo) if getattr(m, "ge", None) is not None else lo
            hi = getattr(m, "le", hi) if getattr(m, "le", None) is not None else hi
        out[name] = ParamInfo(name=name, kind=kind, default=f.default, help=f.description or "",
                              group=str(extra.get("group", "method")), min=lo, max=hi,
                              choices=choices)
    return out
