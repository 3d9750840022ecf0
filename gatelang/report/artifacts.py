"""Render a finished run (`driver.RunRecord`) as artifacts: patch, report and lock.

Nothing here runs a pass or loads a model; the driver does that and hands over the record.
The artifacts are committed as a set (`runtime.atomic.replace_folder`): written into a staging
folder beside the output folder and swapped in with one rename, so a reader (or the next run
after a kill) sees the previous run's set or this one's, never a new patch beside an old lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatelang.errors import GatelangError
from gatelang.report.document import ITEMS_FILE, REPORT_SCHEMA_VERSION, write_documents
from gatelang.report.evidence import (
    annotate_metrics,
    annotate_requirements,
    collect_items,
    requirement_parents,
)
from gatelang.report.lock import package_versions, write_lock
from gatelang.report.patch import make_patch, patch_bytes
from gatelang.runtime.atomic import atomic_write_bytes, recover_folder, replace_folder

if TYPE_CHECKING:  # pragma: no cover
    from gatelang.driver import ApplyResult, RunRecord

ACCEPTED_PATCH = "patch.safetensors"
REJECTED_PATCH = "patch.rejected.safetensors"


class OutputError(GatelangError):
    """The output folder cannot be used (missing parent, not a folder, holds the cwd)."""


def is_artifact(name: str) -> bool:
    """Whether a file name in an output folder is one of a run's artifacts.

    A run owns these: a new run replaces them all (a stale rejected patch or plot goes). Every
    other entry (the resume cache, a file a user put there) is carried over to the new set.
    """
    return (name in ("gate.lock", "report.json", "report.md", "report.html", ITEMS_FILE,
                     "stopped.md", "stopped.json")
            or (name.startswith("patch.") and name.endswith(".safetensors"))
            or (name.startswith("plot-") and name.endswith(".png")))


def check_output_folder(out_dir: str | os.PathLike[str]) -> Path:
    """Refuse an output folder that cannot be committed: its parent is missing (only the
    folder itself is created), it is a file, or it holds the current folder (the folder is
    swapped as a whole). Returns the folder as an absolute path."""
    given = Path(out_dir)
    out = Path(os.path.abspath(given))
    if out.exists() and not out.is_dir():
        raise OutputError(f"{given}: the output path exists and is not a folder")
    if out.parent == out or not out.name:
        raise OutputError(f"{given}: cannot write artifacts to a file system root; choose a "
                          "folder below it")
    if not out.parent.is_dir():
        raise OutputError(
            f"{given}: the output folder's parent {out.parent} does not exist (or is not a "
            "folder); gatelang creates only the output folder itself, so create the parent "
            "first or choose another --out")
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # pragma: no cover - the cwd was removed
        cwd = None
    real = out.resolve()
    if cwd is not None and (cwd == real or real in cwd.parents):
        raise OutputError(
            f"{given}: the output folder is the current folder or contains it; a run replaces "
            "its output folder as a whole when it commits the artifacts, so choose a subfolder "
            "(e.g. --out gatelang-out/NAME)")
    return real


def recover_output(out_dir: str | os.PathLike[str]) -> None:
    """Repair an output folder whose commit was interrupted (see `replace_folder`)."""
    recover_folder(Path(os.path.abspath(out_dir)).resolve(), is_artifact)


def ir_sha256(ir: Any) -> str:
    dump = json.dumps(ir.semantic_dump(), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(dump.encode()).hexdigest()


def policy_sha256(ir: Any, path: Path) -> str:
    """Hash of the entry file and every file the compiler read for it, in a stable order.

    ``ir.inputs`` lists imports at any depth and subject files (CSV, JSON, text), so editing a
    subject list or a nested import shows up as drift, not only editing the entry file. Names are
    hashed entry-relative so the lock does not depend on where the repository is checked out.
    """
    digest = hashlib.sha256()
    entry = Path(path)
    files = [(entry.name, entry)] + [(rel, entry.parent / rel) for rel in sorted(ir.inputs)]
    for rel, f in files:
        try:
            digest.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
        except OSError:
            digest.update(rel.encode() + b"\0missing\0")
    return digest.hexdigest()


def headline(requirements: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, Any]:
    head: dict[str, Any] = {r["name"]: r["value"] for r in requirements}
    unseen = [m for m in metrics if m["split"] == "unseen_language" and m["metric"] == "refusal_rate"]
    n = sum(m["n"] for m in unseen)
    if n:
        head["refusal(unseen_language)"] = round(
            100 * sum((m["after"] or 0) * m["n"] for m in unseen) / n, 4)
    return head


def _method_block(ir: Any) -> list[dict[str, Any]]:
    """Each policy's method as resolved: name, profile, what the policy set, every value."""
    return [{"policy": p.name, "method": p.method.name, "profile": p.method.profile,
             "overrides": list(p.method.overrides), "params": p.method.params}
            for p in ir.policies]


def write_artifacts(record: RunRecord, out_dir: Path) -> ApplyResult:
    """Write patch, report (JSON, Markdown, HTML) and lock for a finished run.

    A run whose requirements fail still gets every artifact, but its patch is written as
    ``patch.rejected.safetensors`` and marked rejected in the report and lock, so nothing that
    looks like a publishable patch exists for a failed run.
    """
    from gatelang.passes.requirements import footprint

    ir, path, loaded, ctx = record.ir, record.policy_path, record.loaded, record.ctx
    run, seed, model_spec = record.run, record.options.seed, record.model_spec
    options = record.options.passes.model_dump(mode="json", exclude_defaults=True)
    weights = record.weights
    base = {name: ctx.base_value(name).detach().cpu() for name in weights}
    requirements, metrics = record.requirements, record.metrics
    localization, methods = record.localization, record.methods
    passed = record.passed
    fp = footprint(ctx, weights)
    from gatelang.passes.requirements import ATTACK_SPLITS

    for r in requirements:
        check = {"refusal": "refusal", "leakage": "refusal", "locality": "locality",
                 "over_refusal": "locality", "utility": "utility", "utility_drop": "utility",
                 "degenerate": "refusal"}.get(r["metric"])
        if r.get("split") in ATTACK_SPLITS or r["metric"] == "exposure":
            check = "robustness"  # the attack's rows are in the Robustness section
        if check:
            r["check_anchor"] = f"evidence-{check}"
            r["evidence"] = f"{check} rows"
    meta = {
        "base_model": loaded.name,
        "base_weights_sha256": loaded.weights_sha256,
        # The file name, not the path as typed: the same policy named by a relative or an
        # absolute path must give the same patch bytes.
        "policy": path.name,
        "policy_sha256": policy_sha256(ir, path),
        "ir_sha256": ir_sha256(ir),
        "stdlib_version": ir.stdlib_version,
        "seed": str(seed),
        "status": "accepted" if passed else "rejected",
        "methods": ",".join(sorted(set(methods))),
    }
    patch = make_patch(base, {k: v.detach().cpu() for k, v in weights.items()}, meta)
    given_out = Path(out_dir)
    out_dir = check_output_folder(given_out)
    patch_name = ACCEPTED_PATCH if passed else REJECTED_PATCH
    patch_data = patch_bytes(patch)
    patch_sha = hashlib.sha256(patch_data).hexdigest()
    total_s = time.perf_counter() - record.t0
    timing = [{"op": n.op, "label": n.label, "node": n.id, "seconds": round(n.seconds, 3),
               "cached": n.cached} for n in run.nodes]
    rules = []
    for pol in ir.policies:
        for k, rule in enumerate(pol.rules, 1):
            text = " ".join(str(x) for x in (rule.kind, ", ".join(getattr(rule, "attributes", ())),
                                             "about", ", ".join(rule.subjects)))
            rules.append({"policy": pol.name, "rule": k, "text": text, "span": _span(rule),
                          "requirements": [f"R{i}" for i, r in enumerate(requirements, 1)
                                           if r.get("policy") in (None, pol.name)]})
    _requirement_spans(ir, requirements)
    items = collect_items(run, record.plan)
    annotate_metrics(metrics, items)
    annotate_requirements(requirements, items, requirement_parents(run))
    n_ok = sum(1 for r in requirements if r["passed"])
    summary = (f"{n_ok} of {len(requirements)} requirements hold; "
               f"{fp['neurons_touched']} of {fp['neurons_total']} MLP units touched")
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "passed": passed,
        "status": "accepted" if passed else "rejected",
        "summary": summary,
        "policy": {"path": str(path), "name": ", ".join(p.name for p in ir.policies),
                   "sha256": meta["policy_sha256"], "ir_sha256": meta["ir_sha256"]},
        "model": {"name": loaded.name, "weights_sha256": loaded.weights_sha256,
                  "family": loaded.adapter.family, "num_layers": loaded.adapter.num_layers,
                  "hidden_size": loaded.adapter.hidden_size,
                  "intermediate_size": loaded.adapter.intermediate_size,
                  "device": str(loaded.device), "dtype": str(loaded.dtype).replace("torch.", "")},
        "stdlib": {"version": ir.stdlib_version, "sha256": ir.stdlib_sha256},
        "seed": seed,
        "methods": sorted(set(methods)),
        "method": _method_block(ir),
        "edits": record.edits,
        "requirements": requirements,
        "metrics": metrics,
        "rules": rules,
        "localization": localization,
        "patch": {
            "file": patch_name, "sha256": patch_sha, "status": meta["status"],
            "tensors": [{"name": e.name, "kind": e.kind, "shape": list(e.shape),
                         "count": 0 if e.index is None else int(e.index.numel())} for e in patch.edits],
            "neurons_touched": fp["neurons_touched"], "neurons_total": fp["neurons_total"],
            "neuron_unit": ("MLP intermediate units over all decoder layers whose down-projection column "
                            "or input rows changed"),
            "dims_touched": fp["dims_touched"], "dims_total": fp["dims_total"],
            "params_changed": patch.params_changed(), "per_layer": fp["per_layer"],
        },
        "timing": {"model_load_s": round(record.load_s, 3), "passes": timing,
                   "total_s": round(total_s, 3)},
        "options": options,
    }
    lock = {
        "policy": {"path": os.path.relpath(path.resolve(), out_dir),
                   "sha256": meta["policy_sha256"], "ir_sha256": meta["ir_sha256"]},
        "stdlib": {"version": ir.stdlib_version, "sha256": ir.stdlib_sha256},
        "model": {"spec": model_spec, "name": loaded.name, "weights_sha256": loaded.weights_sha256},
        "patch": {"file": patch_name, "sha256": patch_sha, "status": meta["status"]},
        "seed": seed,
        "options": options,
        "packages": package_versions(),
        "runtime": runtime_info(record),
        "headline": headline(requirements, metrics),
        "passed": passed,
    }
    chosen = {e["node"]: {k: e["search"][k] for k in ("chosen_config", "method_block", "met",
                                                       "targets") if k in e["search"]}
              for e in record.edits if isinstance(e.get("search"), dict)}
    if chosen:
        # the configurations the edits chose for themselves: `method_block` re-runs one
        # without searching
        lock["configurations"] = chosen

    def write(stage: Path) -> dict[str, str]:
        # The patch first and the lock last; the set only becomes visible with the swap.
        atomic_write_bytes(stage / patch_name, patch_data)
        written = write_documents(stage, report, items=items, sources=_sources(ir, path))
        write_lock(stage / "gate.lock", lock)
        return written

    try:
        written = replace_folder(out_dir, write, owned=is_artifact)
    except OSError as exc:
        raise OutputError(f"{given_out}: cannot write the artifacts: "
                          f"{exc.strerror or exc}") from None
    files = {name: str(given_out / Path(p).name) for name, p in written.items()}
    patch_path = given_out / patch_name
    lock_path = given_out / "gate.lock"
    files.update({"gate.lock": str(lock_path), patch_name: str(patch_path)})
    from gatelang.driver import ApplyResult

    return ApplyResult(passed, given_out, report, patch_path, lock_path, files)


def _span(node: Any) -> dict[str, Any] | None:
    span = getattr(node, "span", None)
    return None if span is None else span.model_dump()


def _requirement_spans(ir: Any, requirements: list[dict[str, Any]]) -> None:
    """Give each requirement result the source span of the `require` line it comes from.

    Results come per policy in the order of the policy's `require` block (a profile's lines
    expanded in place), so the k-th result of a policy is its k-th IR requirement; a result
    whose metric does not match keeps no span rather than a wrong one.
    """
    by_policy = {p.name: list(p.requirements) for p in ir.policies}
    seen: dict[str | None, int] = {}
    for r in requirements:
        name = r.get("policy")
        k = seen.get(name, 0)
        seen[name] = k + 1
        reqs = by_policy.get(name) if name is not None else (
            next(iter(by_policy.values())) if len(by_policy) == 1 else None)
        if r.get("span") or not reqs or k >= len(reqs) or reqs[k].metric != r["metric"]:
            continue
        r["span"] = _span(reqs[k])


def _sources(ir: Any, path: Path) -> dict[str, str]:
    """The text of the policy files the report points into (by the name spans use)."""
    out: dict[str, str] = {}
    names = {str(path)} | {p.span.file for p in ir.policies if p.span is not None}
    for name in sorted(names):
        f = path if name == str(path) else Path(name)
        try:
            out[name] = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    return {k: v for k, v in out.items() if v}


def runtime_info(record: RunRecord) -> dict[str, Any]:
    """What the numbers may depend on beyond the inputs: thread counts, device, dtype, torch."""
    import torch

    from gatelang.runtime.executor import EDIT_THREADS

    loaded = record.loaded
    return {"threads": int(record.options.threads or torch.get_num_threads()),
            "edit_threads": EDIT_THREADS, "device": str(loaded.device),
            "dtype": str(loaded.dtype).replace("torch.", ""), "torch": torch.__version__}
