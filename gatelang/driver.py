"""The driver: compile a policy, plan it for a model, execute the plan, hand a `RunRecord` on.

This is the one place that runs things (`apply`, `verify_lock`, `load_patch`); `report/` turns
a `RunRecord` into the patch, report and lock and runs nothing. Everything a run depends on is
in `RunOptions` (typed, validated), so a lock can record it and `verify --lock` replay it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from gatelang.errors import (
    EXIT_OK,
    EXIT_REQUIREMENT,
    GatelangError,
    ModelError,
    PlanError,
    SelectionError,
)
from gatelang.passes.base import PassOptions, pass_options

CACHE_DIR = ".gatelang-cache"

# The most forward + backward passes a plan may be estimated at before `apply` refuses it. The
# examples and benchmarks plan at most ~15,000 (docs/examples/layered.gate on tiny-llava, attack
# checks included: 9,782 forward + 4,700 backward), which run in minutes; a million is hours on
# a small model and days on a 7B one, so a plan above it is most likely a slip in a method
# setting. `--budget N` / `budget=N` raises it.
DEFAULT_BUDGET = 1_000_000


def cpu_count() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(device: str = "auto") -> int | None:
    """The intra-op thread count a run uses when none is given; None: leave torch's.

    On CPU, half the available cores (at least 1, at most 4). torch's own default is every
    core, which on a shared or small machine oversubscribes: on 2 cores under other jobs'
    load, `apply docs/examples/home-address.gate` took 186 s with 2 threads and 69 s with 1
    (docs/cli.md has every measurement). Tiny and small models gain little beyond 4 threads, and the edit passes run
    on one thread regardless (`runtime.executor.EDIT_THREADS`). On a GPU the threads only feed
    the device, so torch's default stands.
    """
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return None
    return max(1, min(4, cpu_count() // 2))


def resolve_threads(threads: int | None, device: str = "auto") -> int:
    """The thread count a run will use: the one asked for, else `default_threads`."""
    chosen = threads or default_threads(device)
    return int(chosen) if chosen else torch.get_num_threads()


class RunOptions(BaseModel):
    """How to run a policy: model, device, seed, threads, cache, and the passes' options."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    model: str | None = Field(None, description="--model spec (alias, local path, hub id in the "
                              "local cache); None: the built-in tiny-llava")
    device: str = "auto"
    dtype: str = Field("auto", description="weights dtype: auto (bf16 on CUDA, fp32 on CPU), "
                       "float32, bfloat16, float16")
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (None: "
                                "`default_threads`: half the cores on CPU, at most 4)")
    cache_dir: Path | None = Field(None, description="content-addressed pass cache (None: none)")
    answers_dir: Path | None = Field(None, description="the unedited model's greedy answers "
                                     "(None: `answers/` in `cache_dir`, or none)")
    progress: bool | None = Field(None, description="progress bars (None: only on a terminal)")
    budget: int = Field(DEFAULT_BUDGET, ge=1, description="the most forward + backward passes "
                        "the plan may be estimated at; a larger plan is refused before it runs")
    passes: PassOptions = Field(default_factory=PassOptions)


@dataclass
class RunRecord:
    """What one run did and measured; the report layer renders it."""

    ir: Any  # the checked PolicyFile
    policy_path: Path
    loaded: Any  # LoadedModel
    ctx: Any  # PassContext (base values of edited tensors, stdlib, world)
    plan: Any
    run: Any  # RunResult
    options: RunOptions
    model_spec: str | None
    load_s: float
    t0: float
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    requirements: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    localization: dict[str, Any] = field(default_factory=dict)
    methods: list[str] = field(default_factory=list)
    edits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.requirements) and all(r["passed"] for r in self.requirements)


def _collect(record: RunRecord) -> RunRecord:
    """Gather the results the report needs from the executed nodes."""
    from gatelang.passes.base import weights_of

    run = record.run
    for spec in run.specs:
        res = run.results[spec.id]
        if spec.op == "report.requirements":
            record.requirements.extend(res.data.get("requirements", []))
        if spec.kind == "verify":
            for m in res.data.get("metrics", []):
                record.metrics.append({**m, "node": spec.id, "label": spec.label})
        if spec.kind == "localize":
            d = res.data
            if "layer" in d:
                record.localization["layer"] = d["layer"]
            if "gate_size" in d:
                record.localization["gate dims"] = f"{d['gate_size']} of {d.get('hidden_size')}"
            if d.get("layer_shares"):
                record.localization["layer search (share of gated dims)"] = d["layer_shares"]
            if "universal" in d:
                record.localization["privacy-universal neurons"] = len(d["universal"])
                record.localization["language-specific neurons"] = {
                    k: len(v) for k, v in d["specific"].items()}
        if spec.kind == "edit":
            record.methods.append(str(res.data.get("method", spec.op)))
            entry = {"node": spec.id, "op": spec.op, **{
                k: v for k, v in res.data.items() if not isinstance(v, (list, dict))}}
            if isinstance(res.data.get("search"), dict):
                # a method that chose its own configuration: what it tried, and what it chose
                entry["search"] = res.data["search"]
            record.edits.append(entry)
            record.weights.update(weights_of({"edit": res}))
    return record


def run(policy: str | os.PathLike[str], options: RunOptions | None = None, *,
        loaded: Any = None, log: Any = None, replay_patch: Any = None) -> RunRecord:
    """Compile, plan and execute a policy; returns the `RunRecord`.

    `loaded` is a model the caller already loaded (else `options.model` is loaded, offline).
    `replay_patch` runs verification only, with every edit node's weights read from a patch
    (what `verify --lock` does).
    """
    from gatelang.runtime.progress import PlanProgress, choose_mode

    opts = options or RunOptions()
    # The patch does not depend on the thread count: the executor runs the passes that make it
    # with a fixed one (`runtime.executor.EDIT_THREADS`); threads only change the speed.
    torch.set_num_threads(resolve_threads(opts.threads, opts.device))
    display = PlanProgress(choose_mode(opts.progress))
    try:
        return _run(policy, opts, loaded=loaded, log=log, replay_patch=replay_patch,
                    display=display)
    finally:
        display.close()


def _run(policy: str | os.PathLike[str], opts: RunOptions, *, loaded: Any, log: Any,
         replay_patch: Any, display: Any) -> RunRecord:
    from gatelang.ir import load as load_ir
    from gatelang.models import load_model
    from gatelang.passes import PassContext, PassResult
    from gatelang.planner import plan as build_plan
    from gatelang.runtime.cache import Cache
    from gatelang.runtime.executor import Executor, node_specs
    from gatelang.world import load_world

    t0 = time.perf_counter()
    path = Path(policy)
    ir = load_ir(path)
    if loaded is None and replay_patch is None:
        # Size the plan before reading any weights, so an absurd plan is refused in seconds.
        caps = _capabilities_without_weights(opts.model)
        if caps is not None:
            check_budget(build_plan(ir, caps), opts.budget, path)
    t_load = time.perf_counter()
    if loaded is None:
        display.note(f"loading {opts.model or 'tiny-llava'} …")
        loaded = load_model(opts.model, device=opts.device, dtype=opts.dtype)
    load_s = time.perf_counter() - t_load
    torch.manual_seed(opts.seed)
    world = load_world(seed=0)
    the_plan = build_plan(ir, loaded.capabilities())
    if replay_patch is None:
        check_budget(the_plan, opts.budget, path)
    from gatelang.runtime.cache import ANSWERS_DIR, answer_store

    answers = opts.answers_dir or (opts.cache_dir / ANSWERS_DIR if opts.cache_dir else None)
    ctx = PassContext(loaded=loaded, seed=opts.seed, world=world,
                      progress=display.bar, options=opts.passes,
                      answer_store=answer_store(answers))
    executor = Executor(ctx, cache=Cache(opts.cache_dir),
                        fingerprint=_fingerprint(loaded, opts), log=log, display=display)
    overrides = only = None
    if replay_patch is not None:
        from gatelang.passes.base import WEIGHT_PREFIX
        from gatelang.report.patch import patch_values

        weights = {WEIGHT_PREFIX + k: v for k, v in
                   patch_values(loaded.model, replay_patch, source="patch").items()}
        specs = node_specs(the_plan)
        overrides = {s.id: PassResult(data={"method": "patch", "from_patch": True},
                                      tensors=weights) for s in specs if s.kind == "edit"}
        only = [s.id for s in specs if s.kind in ("verify", "report")]
    result = executor.run(the_plan, only=only, overrides=overrides)
    record = RunRecord(ir=ir, policy_path=path, loaded=loaded, ctx=ctx, plan=the_plan,
                       run=result, options=opts, model_spec=opts.model, load_s=load_s, t0=t0)
    return _collect(record)


def _capabilities_without_weights(spec: str | None) -> Any:
    """The model's capabilities from its config and tokenizer (no weights), or None for a GGUF
    file, whose config lives in the weights (it is sized after loading instead)."""
    from gatelang.models import describe_model
    from gatelang.models.loading import resolve_spec

    if resolve_spec(spec).gguf_file:
        return None
    return describe_model(spec)


def check_budget(plan: Any, budget: int, policy: Path | str = "the policy") -> None:
    """Refuse a plan estimated above `budget` forward + backward passes (PlanError, exit 2)."""
    cost = plan.total_cost()
    passes = int(cost.forward_passes) + int(cost.backward_passes)
    if passes > budget:
        raise PlanError(
            f"{policy}: the plan is estimated at {cost.forward_passes:,} forward + "
            f"{cost.backward_passes:,} backward passes ({passes:,} in all, {cost.tokens:,} "
            f"tokens), above the budget of {budget:,} passes; check the method settings "
            "(steps, epochs, samples) with `gatelang plan`, or raise the limit with "
            f"--budget {passes} (Python: budget={passes})")


def _fingerprint(loaded: Any, opts: RunOptions) -> str:
    import hashlib

    passes = opts.passes.model_dump_json()
    return hashlib.sha256(
        f"{loaded.weights_sha256}|{opts.seed}|{loaded.device.type}|{loaded.dtype}|{passes}"
        .encode()).hexdigest()


def identity_check(record: RunRecord, subjects: list[str]) -> dict[str, Any]:
    """On a VLM: do face-image queries about `subjects` still reveal them after the run's edit?

    The check `verify.identity_inference` runs for anonymize policies, applied to any run (a
    refusal edit, say), so two methods can be compared on the same queries. Returns the pass's
    data: per-item records and metric records (groups ``target`` and ``other``).
    """
    from gatelang.passes.base import NodeSpec
    from gatelang.passes.verify.identity import vlm_identity_check

    node = NodeSpec(id="identity-check", op="verify.identity_inference", kind="verify",
                    params={"subjects": list(subjects)})
    return vlm_identity_check(record.ctx, node, record.weights).data


@dataclass
class ApplyResult:
    passed: bool
    out_dir: Path
    report: dict[str, Any]
    patch_path: Path
    lock_path: Path
    files: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_REQUIREMENT


def apply(
    policy: str | os.PathLike[str],
    model: Any = None,
    out: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    cache: bool = True,
    options: PassOptions | dict[str, Any] | None = None,
    progress: bool | None = None,
    log: Any = None,
    threads: int | None = None,
    budget: int | None = None,
) -> ApplyResult:
    """Edit the model so the policy holds, verify it, and write patch + report + lock to `out`.

    `model` is a --model spec, or a model already loaded with `load_model`. `out` defaults to
    ``gatelang-out/<policy file stem>``; a given `out` is created, but its parent must exist.
    `budget` is the most forward + backward passes the plan may be estimated at (default
    `DEFAULT_BUDGET`); a larger plan is refused before the weights are loaded. Raises
    DiagnosticError (exit 2) for an invalid policy, PlanError (exit 2) for a plan that cannot
    run or is over budget, ModelError/GatelangError (exit 1) for other failures; a run whose
    requirements fail returns `passed=False` (exit 3) and its patch is written as rejected.
    """
    from gatelang.report.artifacts import check_output_folder, recover_output, write_artifacts

    path = Path(policy)
    if out is None:
        out_dir = Path("gatelang-out") / path.stem
        out_dir.parent.mkdir(parents=True, exist_ok=True)  # the default's parent is ours
    else:
        out_dir = Path(out)
    check_output_folder(out_dir)  # fail before the run, not after it
    recover_output(out_dir)  # a killed commit's cache goes back in place before it is read
    loaded = model if hasattr(model, "weights_sha256") else None
    spec = None if loaded is not None else model
    for name, value in (("budget", budget), ("threads", threads)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise GatelangError(f"{name} must be a whole number of at least 1, got {value!r}")
    opts = RunOptions(model=spec, device=device, dtype=dtype, seed=seed, threads=threads,
                      cache_dir=(out_dir / CACHE_DIR) if cache else None, progress=progress,
                      budget=DEFAULT_BUDGET if budget is None else budget,
                      passes=pass_options(options))
    try:
        record = run(path, opts, loaded=loaded, log=log)
    except SelectionError as exc:
        # no patch to verify: what the edit tried and why it stopped, next to where the report
        # would have been (a later run into the folder replaces it)
        from gatelang.report.stopped import write_stopped

        written = write_stopped(out_dir, str(path), exc)
        raise SelectionError(f"{exc}\nwritten: {written[0]}", exc.trace, exc.method) from None
    return write_artifacts(record, out_dir)


def load_patch(model: Any, patch: str | os.PathLike[str], *, device: str = "auto",
               allow_rejected: bool = False, allow_unknown_base: bool = False) -> Any:
    """A base model with a patch applied; refuses a patch made on different base weights.

    `model` is one of: a --model spec (loaded offline, returns a `LoadedModel`); a model
    already loaded with `load_model` (patched in place and returned); or a model loaded by any
    other means, such as `transformers.AutoModel...from_pretrained` (a `torch.nn.Module`,
    patched in place and returned). The patch is read and checked (format, payload digest,
    status) before anything is loaded. Base check: a `LoadedModel`'s file hash must equal the
    patch's `base_weights_sha256`; a plain module has no file hash, so the base values of the
    tensors the patch edits must hash to its `base_tensors_sha256`. A patch that names no base
    is refused unless `allow_unknown_base`.
    """
    from gatelang.models import load_model
    from gatelang.report.patch import apply_patch, check_base, check_module_base

    p = _read_usable_patch(patch, allow_rejected)
    if _is_module(model):
        check_module_base(model, p, source=str(patch), allow_unknown_base=allow_unknown_base)
        apply_patch(model, p, base_sha256=p.base_sha256, source=str(patch),
                    allow_unknown_base=True)
        return model
    if not p.base_sha256:
        check_base(p, "", source=str(patch), allow_unknown_base=allow_unknown_base)
    loaded = model if hasattr(model, "weights_sha256") else load_model(model, device=device)
    apply_patch(loaded.model, p, base_sha256=loaded.weights_sha256, source=str(patch),
                allow_unknown_base=allow_unknown_base)
    return loaded


def _is_module(obj: Any) -> bool:
    return isinstance(obj, torch.nn.Module)


def _read_usable_patch(patch: str | os.PathLike[str], allow_rejected: bool) -> Any:
    from gatelang.report.patch import PatchError, read_patch

    p = read_patch(patch)
    if p.metadata.get("status") == "rejected" and not allow_rejected:
        raise PatchError(f"{patch}: this patch was rejected by its run's requirements; "
                         "pass allow_rejected (CLI: --allow-rejected) to use it anyway")
    return p


EXPORT_FORMATS = ("state-dict",)


def export_patch(model: Any, patch: str | os.PathLike[str], out: str | os.PathLike[str], *,
                 format: str = "state-dict", device: str = "cpu", allow_rejected: bool = False,
                 allow_unknown_base: bool = False) -> Path:
    """Write a patch in a form other tools load without gatelang; returns the file written.

    ``state-dict``: a safetensors file holding the full new value of every tensor the patch
    changes (and nothing else), for ``model.load_state_dict(safetensors.torch.load_file(out),
    strict=False)``. The patch stores changed rows or columns only, so the base model
    (`model`: a spec, a `LoadedModel` or a module) supplies the rest of each tensor; it is
    checked against the patch first, exactly as `load_patch` checks it.
    """
    from gatelang.models import load_model
    from gatelang.report.patch import (
        check_base,
        check_module_base,
        patch_values,
        state_dict_bytes,
    )
    from gatelang.runtime.atomic import atomic_write_bytes

    if format not in EXPORT_FORMATS:
        raise GatelangError(f"unknown export format {format!r} (formats: "
                            f"{', '.join(EXPORT_FORMATS)})")
    p = _read_usable_patch(patch, allow_rejected)
    p.verify(str(patch))
    if _is_module(model):
        module = model
        check_module_base(module, p, source=str(patch), allow_unknown_base=allow_unknown_base)
    else:
        loaded = model if hasattr(model, "weights_sha256") else load_model(model, device=device)
        check_base(p, loaded.weights_sha256, source=str(patch),
                   allow_unknown_base=allow_unknown_base)
        module = loaded.model
    values = patch_values(module, p, source=str(patch))
    keep = ("base_model", "base_weights_sha256", "base_tensors_sha256", "policy",
            "policy_sha256", "status", "methods", "seed")
    meta = {k: v for k, v in p.metadata.items() if k in keep}
    meta["patch_payload_sha256"] = p.metadata.get("payload_sha256", "")
    out_path = Path(out)
    try:
        atomic_write_bytes(out_path, state_dict_bytes(values, meta))
    except OSError as exc:
        raise GatelangError(f"{out_path}: cannot write the export: {exc.strerror or exc}") from None
    return out_path


def save_patched(loaded: Any, patch: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Save a patched model (from `load_patch`) as a Hugging Face folder with a model card.

    The folder is what `from_pretrained` loads: weights, config, the tokenizer or processor,
    and ``README.md`` in model-card format naming the policy, the measured requirements and
    the digests of the patch and of the lock it came from (read from ``report.json`` and
    ``gate.lock`` beside the patch when they are there).
    """
    from gatelang.report.card import model_card
    from gatelang.report.patch import read_patch
    from gatelang.runtime.atomic import atomic_write_text

    out_dir = Path(out)
    try:
        model = loaded.model if hasattr(loaded, "model") else loaded
        model.save_pretrained(out_dir, safe_serialization=True)
        for obj in (getattr(loaded, "processor", None), getattr(loaded, "tokenizer", None)):
            if obj is not None and hasattr(obj, "save_pretrained"):
                obj.save_pretrained(out_dir)
                break
        card = model_card(read_patch(patch), Path(patch),
                          base_name=getattr(loaded, "name", None))
        atomic_write_text(out_dir / "README.md", card)
    except OSError as exc:
        raise GatelangError(f"{out_dir}: cannot write the patched model: "
                            f"{exc.strerror or exc}") from None
    return out_dir


@dataclass
class VerifyResult:
    passed: bool
    drift: list[dict[str, Any]]
    requirements: list[dict[str, Any]]
    notes: list[str]

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_REQUIREMENT


def verify_lock(lock: str | os.PathLike[str], *, model: str | None = None, device: str = "auto",
                tolerance: float = 0.5, progress: bool | None = None,
                policy: str | os.PathLike[str] | None = None) -> VerifyResult:
    """Re-run verification for a lock's policy on base + patch and report drift.

    Drift is any headline metric that moved by more than `tolerance` percentage points, or a
    changed policy / stdlib / base-weights / patch hash. Verification is recomputed (no cache).
    Paths in the lock are relative to the lock's folder, so a copied or moved output folder
    still finds its patch; the policy lives outside it, so an archived folder whose policy is
    no longer at the recorded relative path takes `policy` (CLI: ``--policy``). A policy that
    differs from the locked one is reported as drift, never silently accepted.
    """
    from gatelang.ir import load as load_ir
    from gatelang.models import load_model
    from gatelang.report.artifacts import headline, policy_sha256
    from gatelang.report.lock import read_lock, sha256_file
    from gatelang.report.patch import check_base, read_patch
    from gatelang.stdlib import load_stdlib

    lock_path = Path(lock)
    doc = read_lock(lock_path)  # validated: a bad field fails here, before anything runs
    root = lock_path.parent
    notes: list[str] = []
    drift: list[dict[str, Any]] = []
    policy_path = _locked_policy(lock_path, doc["policy"]["path"], policy)
    patch_path = root / doc["patch"]["file"]
    _named_file(lock_path, "patch", doc["patch"]["file"], patch_path)
    if sha256_file(patch_path) != doc["patch"]["sha256"]:
        drift.append({"what": "patch", "expected": doc["patch"]["sha256"],
                      "found": sha256_file(patch_path)})
    patch = read_patch(patch_path)  # format and payload digest, before the model is loaded
    ir = load_ir(policy_path)
    found = policy_sha256(ir, policy_path)
    if found != doc["policy"]["sha256"]:
        drift.append({"what": "policy", "expected": doc["policy"]["sha256"], "found": found})
    lib = load_stdlib()
    if lib.sha256 != doc["stdlib"]["sha256"]:
        drift.append({"what": "stdlib", "expected": doc["stdlib"]["version"], "found": lib.version})
    spec = model or doc["model"].get("spec")
    loaded = load_model(spec, device=device)
    if loaded.weights_sha256 != doc["model"]["weights_sha256"]:
        raise ModelError(f"{lock_path}: the lock was made on base weights "
                         f"{doc['model']['weights_sha256'][:12]}…, this model is "
                         f"{loaded.weights_sha256[:12]}…")
    check_base(patch, loaded.weights_sha256, source=str(patch_path))
    # The unedited model's answers from the apply run's cache, when it kept one: only the
    # edited model's answers need recomputing to check the patch.
    answers = root / CACHE_DIR / "answers"
    opts = RunOptions(model=spec, device=device, seed=int(doc["seed"]), progress=progress,
                      passes=pass_options(doc.get("options") or {}),
                      answers_dir=answers if answers.is_dir() else None)
    record = run(policy_path, opts, loaded=loaded, replay_patch=patch)
    now = headline(record.requirements, record.metrics)
    for key, old in sorted(doc["headline"].items()):
        new = now.get(key)
        if old is None or new is None:
            if old != new:
                drift.append({"what": key, "expected": old, "found": new})
            continue
        if abs(float(new) - float(old)) > tolerance:
            drift.append({"what": key, "expected": old, "found": new})
    if drift:
        notes.extend(_runtime_differences(doc.get("runtime"), record))
    passed = not drift and record.passed
    if doc.get("patch", {}).get("status") == "rejected":
        notes.append("the lock records a rejected patch")
        passed = False
    return VerifyResult(passed, drift, record.requirements, notes)


def _locked_policy(lock_path: Path, named: str, override: str | os.PathLike[str] | None) -> Path:
    """The policy file to verify: the override, else the lock's path (relative to the lock)."""
    from gatelang.report.lock import LockError

    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise LockError(f"{path}: the policy given to verify {lock_path} is not a file")
        return path.resolve()
    path = (lock_path.parent / named).resolve()
    if not path.exists():
        raise LockError(
            f"{lock_path}: the policy it names ({named!r}, relative to the lock: {path}) does not "
            "exist; the output folder was probably copied or moved away from its policy: pass "
            "the policy with --policy PATH (Python: policy=PATH); a changed policy is reported "
            "as drift")
    _named_file(lock_path, "policy", named, path)
    return path


def _named_file(lock_path: Path, what: str, named: str, path: Path) -> None:
    from gatelang.report.lock import LockError

    if not path.exists():
        raise LockError(f"{lock_path}: the {what} it names ({named!r}, {path}) does not exist")
    if not path.is_file():
        raise LockError(f"{lock_path}: the {what} it names ({named!r}, {path}) is not a file")


def _runtime_differences(locked: Any, record: RunRecord) -> list[str]:
    """Notes on what differs between the lock's runtime and this run's (drift explanations)."""
    from gatelang.report.artifacts import runtime_info

    if not isinstance(locked, dict):
        return ["the lock records no runtime (threads, device, torch version) to compare"]
    now = runtime_info(record)
    diffs = [f"{key} {locked.get(key)} then, {now[key]} now"
             for key in ("threads", "edit_threads", "device", "dtype", "torch")
             if locked.get(key) is not None and locked.get(key) != now[key]]
    if not diffs:
        return ["the runtime is the same as the lock's (threads, device, dtype, torch)"]
    return ["the runtime differs from the lock's, which may explain the drift: " + "; ".join(diffs)]


__all__ = ["DEFAULT_BUDGET", "ApplyResult", "RunOptions", "RunRecord", "VerifyResult", "apply",
           "check_budget", "default_threads", "export_patch", "identity_check", "load_patch",
           "resolve_threads", "run", "save_patched", "verify_lock"]
