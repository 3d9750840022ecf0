"""The pass interface, its typed contract, and the registry keyed by plan op names.

A pass is a small class that declares the input roles it reads (edges of the plan) with the
artifact each must carry, and the artifact it produces; it turns (context, node, inputs) into a
`PassResult`. The executor checks the declarations against the plan before anything runs and
each result against its artifact after the pass returns, so a mis-wired plan or a pass that
forgets a field fails loudly at the node that is wrong. Passes never write files or choose
devices; the runtime does, which is what makes a pass testable alone on a tiny model and
cacheable by the node's content hash.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatelang.errors import PlanError

WEIGHT_PREFIX = "weight:"


@dataclass(frozen=True)
class Artifact:
    """A kind of pass output: the data keys and tensor names every such result carries."""

    name: str
    data: tuple[str, ...] = ()
    tensors: tuple[str, ...] = ()
    weights: bool = False  # carries `weight:<parameter>` tensors (possibly none)

    def missing(self, result: PassResult) -> list[str]:
        out = [f"data[{k!r}]" for k in self.data if k not in result.data]
        out += [f"tensors[{k!r}]" for k in self.tensors if k not in result.tensors]
        return out


QUERY_SET = Artifact("QuerySet", data=("selection", "ids", "n"))
GATE_MASK = Artifact("GateMask", data=("layer", "gate_size", "hidden_size"), tensors=("gate",))
UNIT_SET = Artifact("UnitSet", data=("units", "neurons_total"))
WEIGHT_EDIT = Artifact("WeightEdit", data=("method",), weights=True)
METRICS = Artifact("Metrics", data=("check", "items", "metrics"))
REQUIREMENT_RESULTS = Artifact("RequirementResults", data=("requirements",))
LOCALIZATION = (GATE_MASK, UNIT_SET)


@dataclass(frozen=True)
class Input:
    """One input role of a pass: the artifacts it accepts, and whether the plan must draw it."""

    accepts: tuple[Artifact, ...]
    required: bool = True
    many: bool = False  # the role may repeat (`role.0`, `role.1`, ...)


class PassOptions(BaseModel):
    """Run-wide settings passes read: sizes of reduced configurations (tests, benchmarks) and
    method overrides. Unknown keys are an error, so a misspelt option never silently does
    nothing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(24, ge=1, description="tokens generated per verification answer")
    batch_size: int | None = Field(None, ge=1, description="questions decoded together in "
                                   "verification (None: 32); answers do not depend on it")
    max_items: int | None = Field(None, ge=1, description="verification items per verify node, "
                                  "evenly spread over the cells (None: all)")
    edit_max_items: int | None = Field(None, ge=1, description="edit queries per edit set, "
                                       "evenly spread (None: all)")
    verify_max_items: int | None = Field(None, ge=1, description="identity-inference items per "
                                         "verify node (None: all)")
    identity_images: int | None = Field(None, ge=1, description="face renderings per subject for "
                                        "identity inference (None: the method's set)")
    identity_languages: tuple[str, ...] = Field(("en",), description="caption languages of "
                                                "identity inference")
    attack_items: int | None = Field(None, ge=1, description="protected questions per attack "
                                     "pass (None: the stdlib's attack settings)")
    attack_settings: dict[str, Any] = Field(
        default_factory=dict, description="attack settings that replace the stdlib's "
        "(attacks.yaml `settings`, e.g. samples, relearn_steps) in reduced configurations")
    method_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per method name, parameter values that replace the "
        "policy's (IR units: fractions for percentages); each is checked by the method's config")


def pass_options(options: PassOptions | dict[str, Any] | None) -> PassOptions:
    """Validate run options; an unknown key or a bad value is a `PlanError` that names it."""
    if isinstance(options, PassOptions):
        return options
    try:
        parsed = PassOptions.model_validate(dict(options or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ()))
        known = ", ".join(PassOptions.model_fields)
        raise PlanError(f"run option {where or '?'}: {err['msg']} (options: {known})") from None
    from gatelang.methods import methods
    from gatelang.stdlib import AttackSettings

    bad = sorted(set(parsed.attack_settings) - set(AttackSettings.model_fields))
    if bad:
        raise PlanError(f"attack_settings names unknown setting {bad[0]!r} (settings: "
                        f"{', '.join(AttackSettings.model_fields)})")
    unknown = sorted(set(parsed.method_overrides) - set(methods()))
    if unknown:
        raise PlanError(f"method_overrides names unknown method {unknown[0]!r}; overrides are "
                        "keyed by method name, e.g. {\"neural_gate\": {\"steps\": 1}}")
    return parsed


@dataclass
class PassResult:
    """What a pass hands to its children: JSON-able data and named tensors."""

    data: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    cached: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class NodeSpec:
    """The parts of a plan node a pass needs: identity, op, params and parents by role."""

    id: str
    op: str
    kind: str
    params: dict[str, Any]
    label: str = ""
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def close(self) -> Any: ...


class PassContext:
    """What a pass may use: the loaded model, world, stdlib, seed, device and a progress factory.

    Weight edits flow between passes as tensors named ``weight:<parameter name>`` holding the
    parameter's new value; `edited_weights` applies a set of them for the duration of a block and
    restores the base values afterwards, so passes can measure before and after on one model.
    """

    def __init__(
        self,
        *,
        loaded: Any,
        seed: int = 0,
        world: Any = None,
        stdlib: Any = None,
        progress: Callable[[int, str], Progress] | None = None,
        options: PassOptions | dict[str, Any] | None = None,
        answer_store: Any = None,
    ) -> None:
        from gatelang.measure.answers import AnswerCache

        self.loaded = loaded
        self.seed = seed
        self._world = world
        self._stdlib = stdlib
        self._progress = progress
        self.options = pass_options(options)
        self._base: dict[str, torch.Tensor] = {}
        # Greedy answers per weight state, shared by every pass of the run (measure.answers).
        self.answers = AnswerCache(answer_store)
        # The weight mappings `edited_weights` has applied, outermost first (`weight_state`).
        self._applied: list[Any] = []
        # The plan's nodes and the results so far, when the executor shares them: lets the
        # first verify pass of an edit batch the questions of its sibling passes.
        self.plan_nodes: list[NodeSpec] | None = None
        self.results: dict[str, PassResult] | None = None
        self.prefetched: set[tuple[str, ...]] = set()

    def attach_run(self, nodes: list[NodeSpec], results: dict[str, PassResult]) -> None:
        """Let passes see the plan and the results computed so far (read only)."""
        self.plan_nodes = list(nodes)
        self.results = results

    def weight_state(self) -> str | None:
        """A key for the weights the model holds now: the base weights' hash, then each
        mapping `edited_weights` has applied, in order; None when one of them cannot be named
        (a mapping that is neither a dict of tensors nor carries a `state_token`).

        Only what goes through `edited_weights` is seen: a pass that changes parameters in
        place (a fine-tune) must not look answers up under this key while it does.
        """
        base = str(getattr(self.loaded, "weights_sha256", "") or "")
        if not base:
            return None
        key = "base:" + base
        if not self._applied:
            self.answers.persistent = key
            return key
        h = hashlib.sha256(key.encode())
        for weights in self._applied:
            token = _mapping_token(weights)
            if token is None:
                return None
            h.update(b"\0" + token.encode())
        return "edit:" + h.hexdigest()

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    @property
    def world(self) -> Any:
        if self._world is None:
            from gatelang.world import load_world

            self._world = load_world(seed=0)
        return self._world

    @property
    def stdlib(self) -> Any:
        if self._stdlib is None:
            from gatelang.stdlib import load_stdlib

            self._stdlib = load_stdlib()
        return self._stdlib

    def progress(self, total: int, desc: str) -> Progress:
        if self._progress is None:
            return _NullProgress()
        return self._progress(total, desc)

    @contextlib.contextmanager
    def edited_weights(self, weights: dict[str, torch.Tensor]) -> Iterator[None]:
        """Apply weight edits for the block; on exit put back what was there on entry.

        Blocks nest: an inner edit (a quantized copy of the edited model, say) restores the
        outer edit's values when it ends, not the base model's.
        """
        params = dict(self.model.named_parameters())
        entry: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, value in weights.items():
                if name not in params:
                    raise PlanError(f"an edit names parameter {name!r}, which the model lacks")
                p = params[name]
                if name not in self._base:
                    self._base[name] = p.detach().clone()
                if name not in entry:
                    entry[name] = p.detach().clone()
                p.copy_(value.to(p.device, p.dtype))
        pushed = len(weights) > 0
        if pushed:
            self._applied.append(weights)
        try:
            yield
        finally:
            if pushed:
                self._applied.pop()
            with torch.no_grad():
                for name, value in entry.items():
                    params[name].copy_(value)

    def base_value(self, name: str) -> torch.Tensor:
        """The unedited value of a parameter (even while an edit is applied)."""
        if name in self._base:
            return self._base[name]
        return dict(self.model.named_parameters())[name].detach()


def _mapping_token(weights: Any) -> str | None:
    """What names a weight mapping in `PassContext.weight_state`: its `state_token`, or a hash
    of its parameter names and tensor bytes."""
    token = getattr(weights, "state_token", None)
    if token is not None:
        return str(token)
    if not isinstance(weights, dict):
        return None
    h = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name].detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(weights[name].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _NullProgress:
    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def weights_of(inputs: dict[str, PassResult]) -> dict[str, torch.Tensor]:
    """All weight edits carried by a pass's inputs (a later edit of a parameter wins)."""
    out: dict[str, torch.Tensor] = {}
    for result in inputs.values():
        for key, value in result.tensors.items():
            if key.startswith(WEIGHT_PREFIX):
                out[key[len(WEIGHT_PREFIX):]] = value
    return out


class Pass:
    """Base class: subclasses set `op`, `kind`, `inputs`, `output` and implement `run`.

    The cache key of a pass's result hashes the source of its module and of every gatelang
    module that module imports (runtime/fingerprint.py), so no version number needs bumping.
    """

    op: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    inputs: ClassVar[dict[str, Input]] = {}
    output: ClassVar[Artifact]

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        raise NotImplementedError


REGISTRY: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    if not cls.op:
        raise ValueError(f"{cls.__name__} has no op name")
    if not isinstance(getattr(cls, "output", None), Artifact):
        raise ValueError(f"{cls.__name__} declares no output artifact")
    old = REGISTRY.get(cls.op)
    if old is not None and old.__qualname__ != cls.__qualname__:
        raise ValueError(f"op {cls.op!r} is already registered by {old.__module__}")
    REGISTRY[cls.op] = cls
    return cls


def get_pass(op: str) -> type[Pass]:
    if op not in REGISTRY:
        from gatelang.methods import load_all_passes

        load_all_passes()
    try:
        return REGISTRY[op]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise PlanError(f"no pass is registered for op {op!r} (known: {known})") from None


def method_config(ctx: PassContext, node: NodeSpec) -> Any:
    """The node's method config: the policy's resolved parameters, then the run's overrides
    for this method, validated by the method's config class (unknown names are errors)."""
    from gatelang.methods import MethodConfigError, UnknownMethodError, get_method

    name = str(node.params.get("method", ""))
    try:
        spec = get_method(name)
        values = {**dict(node.params.get("params") or {}),
                  **ctx.options.method_overrides.get(name, {})}
        return spec.resolve(values)
    except (UnknownMethodError, MethodConfigError) as exc:
        raise PlanError(f"{node.op}: {exc}") from None
