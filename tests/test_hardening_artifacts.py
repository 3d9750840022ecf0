"""Output-side hardening, each test built from the input that broke it: tampered or base-less
patches, out-of-range patch indices, malformed locks, a kill while artifacts are written, absurd
plans, patch bytes that depended on the thread count or the policy path's spelling, file modes
and output folders."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import networkx as nx
import pytest
import torch
from torch import nn

import gatelang.models
from gatelang.driver import DEFAULT_BUDGET, RunOptions, apply, load_patch, run, verify_lock
from gatelang.errors import EXIT_FAILURE, EXIT_INVALID, GatelangError, PlanError
from gatelang.models.tiny import build_tiny_checkpoint
from gatelang.passes import base
from gatelang.passes.base import Artifact, Pass, PassContext, PassResult
from gatelang.report import artifacts as artifacts_mod
from gatelang.report.artifacts import recover_output, write_artifacts
from gatelang.report.lock import LockError, read_lock, sha256_file
from gatelang.report.patch import (
    PatchError,
    apply_patch,
    make_patch,
    read_patch,
    state_sha256,
    write_patch,
)
from gatelang.runtime import atomic
from gatelang.runtime.executor import EDIT_THREADS, Executor

POLICY = """gatelang 1
use stdlib.attributes.contact
use stdlib.languages
subjects protected = ["Alice Okafor"]
policy p {
  refuse home_address about protected in en via text, image
  keep other_subjects, utility
  method neural_gate { layer 1 }
  require {
    refusal(heldout) >= 95%
    utility_drop <= 2%
  }
}
"""

FAST = {
    "method_overrides": {"neural_gate": {"mask_steps": 2, "steps": 1, "lr": 0.01,
                                         "mask_samples": 2}},
    "edit_max_items": 4, "max_items": 6, "max_new_tokens": 4, "attack_items": 2,
    "attack_settings": {"samples": 2, "relearn_steps": 2, "exposure_candidates": 4},
}

DOWN = "model.language_model.layers.1.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny LLaVA, a policy beside it, and one finished `run` to render."""
    root = tmp_path_factory.mktemp("hardening")
    build_tiny_checkpoint("llava", root / "model", seed=0)
    (root / "p.gate").write_text(POLICY, encoding="utf-8")
    record = run(root / "p.gate", RunOptions(model=str(root / "model"), device="cpu",
                                             progress=False, passes=FAST))
    return root, record


# ------------------------------------------------------------------ 4: patch integrity


def _small_patch(tmp_path: Path, meta: dict[str, str]) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    after = {n: t.clone() for n, t in before.items()}
    after["0.weight"][[1, 5]] += 0.5
    path = tmp_path / "patch.safetensors"
    write_patch(path, make_patch(before, after, meta))
    return model, path


def _untouched(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(p, state[n]) for n, p in model.named_parameters())


def test_flipped_value_bytes_are_refused_before_any_weight_changes(tmp_path):
    torch.manual_seed(0)
    base_sha = state_sha256(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)))
    meta = {"base_weights_sha256": base_sha, "status": "accepted"}
    model, path = _small_patch(tmp_path, meta)
    clean = read_patch(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # one bit of the last stored value
    path.write_bytes(bytes(data))
    with pytest.raises(PatchError, match=r"patch.safetensors: .*do not match its payload_sha256"):
        read_patch(path)
    # A Patch whose values were changed after it was read is refused by apply_patch too.
    clean.edits[0].values[0, 0] += 1.0
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(PatchError, match="payload_sha256"):
        apply_patch(model, clean)
    assert _untouched(model, state)


def test_edited_status_or_removed_base_in_the_header_is_refused(tmp_path):
    model, path = _small_patch(tmp_path, {"base_weights_sha256": "a" * 64, "status": "rejected"})
    raw = path.read_bytes()
    flipped = raw.replace(b'"status":"rejected"', b'"status":"accepted"')
    assert flipped != raw and len(flipped) == len(raw)
    path.write_bytes(flipped)
    with pytest.raises(PatchError, match="payload_sha256"):
        read_patch(path)
    emptied = raw.replace(b'"base_weights_sha256":"' + b"a" * 64, b'"base_weights_sha256":"'
                          + b" " * 64)
    path.write_bytes(emptied)
    with pytest.raises(PatchError, match="payload_sha256"):
        read_patch(path)


@pytest.mark.parametrize("meta", [{}, {"base_weights_sha256": ""}], ids=["removed", "empty"])
def test_patch_without_base_hash_needs_explicit_override(tmp_path, meta):
    model, path = _small_patch(tmp_path, {**meta, "status": "accepted"})
    patch = read_patch(path)  # a well-formed file: its digest covers the missing base
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(PatchError, match=r"no base_weights_sha256.*--allow-unknown-base"):
        apply_patch(model, patch)
    assert _untouched(model, state)
    apply_patch(model, patch, allow_unknown_base=True)
    assert not _untouched(model, state)


def test_old_format_patch_is_a_clear_error(tmp_path):
    from gatelang.report.patch import stable_safetensors

    path = tmp_path / "old.safetensors"
    path.write_bytes(stable_safetensors({"x::full": torch.zeros(2)},
                                        {"format": "gatelang-patch/1", "tensors": "[]"}))
    with pytest.raises(PatchError, match="gatelang-patch/1 file.*re-create it"):
        read_patch(path)
    with pytest.raises(PatchError, match="not a file"):
        read_patch(tmp_path)


def _hand_patch(tmp_path: Path, base_sha: str, index: torch.Tensor, values: torch.Tensor,
                kind: str = "rows") -> Path:
    """A well-formed file (valid digest) holding exactly these tensors, as a crafted patch
    would: `write_patch` itself would cast the index to int64."""
    from gatelang.report.patch import PATCH_FORMAT, payload_sha256, stable_safetensors

    tensors = {f"{DOWN}::{kind}": index, f"{DOWN}::values": values}
    meta = {"base_weights_sha256": base_sha, "status": "accepted", "format": PATCH_FORMAT}
    meta["payload_sha256"] = payload_sha256(tensors, meta)
    meta["tensors"] = json.dumps([{"name": DOWN, "kind": kind, "shape": [32, 64]}])
    path = tmp_path / "hand.safetensors"
    path.write_bytes(stable_safetensors(tensors, meta))
    return path


def test_out_of_range_or_malformed_index_is_a_patch_error(tiny, tmp_path, capsys):
    root, record = tiny
    sha = record.loaded.weights_sha256
    bad = [
        (torch.tensor([31, 99]), torch.zeros(2, 64), "rows", "index out of range 0..31"),
        (torch.tensor([-1]), torch.zeros(1, 64), "rows", "index out of range"),
        (torch.tensor([64]), torch.zeros(32, 1), "cols", "index out of range 0..63"),
        (torch.tensor([1.0]), torch.zeros(1, 64), "rows", "1-D integer tensor"),
        (torch.tensor([1]), torch.zeros(2, 64), "rows", "values have shape"),
    ]
    for index, values, kind, message in bad:
        path = _hand_patch(tmp_path, sha, index, values, kind)
        with pytest.raises(PatchError, match=message):
            load_patch(record.loaded, path)
        # the CLI reports it in one line, exit 1, no traceback
        from gatelang.cli import main

        code = main(["patch", "apply", "--model", str(root / "model"), "--patch", str(path),
                     "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == EXIT_FAILURE and "Traceback" not in err and "hand.safetensors" in err
    base = dict(record.loaded.model.named_parameters())[DOWN]
    assert torch.equal(base, record.ctx.base_value(DOWN).to(base.device))  # never half-applied


def test_cli_patch_apply_allow_unknown_base(tiny, tmp_path, capsys):
    from gatelang.cli import main

    root, _ = tiny
    path = _hand_patch(tmp_path, "", torch.tensor([0]), torch.ones(1, 64))
    args = ["patch", "apply", "--model", str(root / "model"), "--patch", str(path),
            "--device", "cpu"]
    assert main(args) == EXIT_FAILURE
    assert "--allow-unknown-base" in capsys.readouterr().err
    assert main(args + ["--allow-unknown-base"]) == 0
    assert "applies cleanly" in capsys.readouterr().out


# ------------------------------------------------------------------ 7 and 13: the lock


def _lock_doc(**changes):
    doc = {"lock_version": 1,
           "policy": {"path": "../p.gate", "sha256": "0" * 64, "ir_sha256": "0" * 64},
           "stdlib": {"version": "x", "sha256": "0" * 64},
           "model": {"spec": None, "name": "m", "weights_sha256": "0" * 64},
           "patch": {"file": "patch.safetensors", "sha256": "0" * 64, "status": "accepted"},
           "seed": 0, "options": {}, "packages": {}, "headline": {"R1": 96.5},
           "passed": True}
    doc.update(changes)
    return doc


@pytest.mark.parametrize("changes, field", [
    ({"seed": "abc"}, "'seed'"),
    ({"headline": {"R1 refusal": "high"}}, "'headline.R1 refusal'"),
    ({"patch": {"file": "patch.safetensors", "sha256": "0", "status": "maybe"}},
     "'patch.status'"),
    ({"model": {"spec": 3, "weights_sha256": "x"}}, "'model.spec'"),
])
def test_bad_lock_fields_fail_fast_naming_the_field(tmp_path, monkeypatch, changes, field):
    lock = tmp_path / "out" / "gate.lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps(_lock_doc(**changes)), encoding="utf-8")

    def no_loading(*_a, **_k):
        raise AssertionError("the model was loaded before the lock was validated")

    monkeypatch.setattr(gatelang.models, "load_model", no_loading)
    with pytest.raises(LockError, match=f"gate.lock: invalid lock file: field {field}"):
        verify_lock(lock)
    with pytest.raises(LockError, match=field):
        read_lock(lock)


def test_lock_naming_a_folder_as_its_patch_says_not_a_file(tmp_path, monkeypatch):
    (tmp_path / "p.gate").write_text(POLICY, encoding="utf-8")
    lock = tmp_path / "out" / "gate.lock"
    lock.parent.mkdir()
    doc = _lock_doc(patch={"file": ".", "sha256": "0" * 64, "status": "accepted"})
    lock.write_text(json.dumps(doc), encoding="utf-8")
    monkeypatch.setattr(gatelang.models, "load_model", lambda *a, **k: 1 / 0)
    with pytest.raises(LockError, match=r"the patch it names \('.'.*is not a file"):
        verify_lock(lock)


# ------------------------------------------------------------------ 8: commit as a set


def _consistent(out: Path) -> str:
    """The folder holds one set: the lock's patch exists and has the hash the lock records."""
    lock = json.loads((out / "gate.lock").read_text())
    patch = out / lock["patch"]["file"]
    assert sha256_file(patch) == lock["patch"]["sha256"]
    assert json.loads((out / "report.json").read_text())["patch"]["sha256"] == lock["patch"]["sha256"]
    others = {"patch.safetensors", "patch.rejected.safetensors"} - {patch.name}
    assert not any((out / o).exists() for o in others)
    return lock["patch"]["sha256"]


def test_a_kill_while_writing_leaves_the_previous_set(tiny, tmp_path, monkeypatch):
    _, record = tiny
    out = tmp_path / "out"
    first = write_artifacts(record, out)
    sha = _consistent(out)
    (out / ".gatelang-cache" / "ab").mkdir(parents=True)
    (out / ".gatelang-cache" / "ab" / "result.json").write_text("{}")
    (out / "NOTES.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    # Make the new run's patch differ, then die after the patch and report, before the lock.
    original = record.weights[DOWN]
    record.weights[DOWN] = original + 1.0
    try:
        def killed(*_a, **_k):
            raise KeyboardInterrupt("SIGKILL stand-in")

        monkeypatch.setattr(artifacts_mod, "write_lock", killed)
        with pytest.raises(KeyboardInterrupt):
            write_artifacts(record, out)
        assert _consistent(out) == sha == first.report["patch"]["sha256"]
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
        assert (out / ".gatelang-cache" / "ab" / "result.json").is_file()
        assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left

        monkeypatch.undo()
        second = write_artifacts(record, out)
        assert _consistent(out) == second.report["patch"]["sha256"] != sha
        assert (out / ".gatelang-cache" / "ab" / "result.json").is_file()  # the cache survives
        assert (out / "NOTES.txt").read_text() == "mine"  # so does a user's file
    finally:
        record.weights[DOWN] = original


def test_an_accepted_run_leaves_no_stale_rejected_patch(tiny, tmp_path, monkeypatch):
    _, record = tiny
    out = tmp_path / "out"
    write_artifacts(record, out)
    assert (out / "patch.rejected.safetensors").is_file()
    monkeypatch.setattr(type(record), "passed", property(lambda self: True))
    write_artifacts(record, out)
    _consistent(out)
    assert not (out / "patch.rejected.safetensors").exists()


def _owned(name: str) -> bool:
    return name.endswith(".art")


def _old_set(dest: Path) -> None:
    dest.mkdir()
    (dest / "a.art").write_text("old")
    (dest / "b.art").write_text("old")
    (dest / ".gatelang-cache").mkdir()
    (dest / ".gatelang-cache" / "entry").write_text("cached")


def test_replace_folder_is_one_swap_and_keeps_what_it_does_not_own(tmp_path, monkeypatch):
    dest = tmp_path / "out"
    _old_set(dest)

    def write(stage: Path) -> str:
        (stage / "a.art").write_text("new")
        return "done"

    for exchange in (True, False):  # Linux's atomic exchange, and the two-rename fallback
        if not exchange:
            monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
        assert atomic.replace_folder(dest, write, owned=_owned) == "done"
        assert (dest / "a.art").read_text() == "new"
        assert not (dest / "b.art").exists()  # an old artifact the new set lacks goes
        assert (dest / ".gatelang-cache" / "entry").read_text() == "cached"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
        (dest / "b.art").write_text("old")


def test_recovery_after_a_kill_at_each_step(tmp_path):
    dest = tmp_path / "out"
    # killed while carrying the cache into the staging folder: the cache is put back
    _old_set(dest)
    stage = tmp_path / ".out.gatelang-new-1"
    stage.mkdir()
    (stage / "a.art").write_text("new")
    os.replace(dest / ".gatelang-cache", stage / ".gatelang-cache")
    atomic.recover_folder(dest, _owned)
    assert (dest / ".gatelang-cache" / "entry").is_file() and (dest / "a.art").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # killed between the fallback's two renames: the old set is back, with its cache
    stage.mkdir()
    (stage / "a.art").write_text("new")
    os.replace(dest, tmp_path / ".out.gatelang-old-1")
    atomic.recover_folder(dest, _owned)
    assert (dest / "a.art").read_text() == "old" and (dest / ".gatelang-cache").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_apply_restores_a_stranded_cache_before_the_run(tmp_path):
    out = tmp_path / "gatelang-out"
    _old_set(out)
    stage = tmp_path / ".gatelang-out.gatelang-new-1"
    stage.mkdir()
    os.replace(out / ".gatelang-cache", stage / ".gatelang-cache")
    recover_output(out)
    assert (out / ".gatelang-cache" / "entry").read_text() == "cached"
    assert not stage.exists()


# ------------------------------------------------------------------ 9: plan budget


ABSURD = POLICY.replace("method neural_gate { layer 1 }",
                        "method neural_gate { layer 1  steps 10000  epochs 100 }")


def test_absurd_plan_is_refused_before_loading_weights(tiny, tmp_path, monkeypatch, capsys):
    root, _ = tiny
    policy = tmp_path / "absurd.gate"
    policy.write_text(ABSURD, encoding="utf-8")

    def no_loading(*_a, **_k):
        raise AssertionError("weights were loaded for a plan over budget")

    monkeypatch.setattr(gatelang.models, "load_model", no_loading)
    with pytest.raises(PlanError, match=r"forward \+ [\d,]+ backward passes.*above the budget of "
                       r"1,000,000 passes.*--budget \d+ \(Python: budget=\d+\)"):
        apply(policy, model=str(root / "model"), out=tmp_path / "o", device="cpu")
    with pytest.raises(PlanError, match="above the budget of 10 passes"):
        apply(root / "p.gate", model=str(root / "model"), out=tmp_path / "o", budget=10)
    from gatelang.cli import main

    code = main(["apply", str(policy), "--model", str(root / "model"), "--out",
                 str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == EXIT_INVALID and "--budget" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_budget_also_applies_to_an_already_loaded_model(tiny, tmp_path):
    root, record = tiny
    with pytest.raises(PlanError, match="budget of 10 passes"):
        apply(root / "p.gate", model=record.loaded, out=tmp_path / "o", budget=10)
    with pytest.raises(GatelangError, match="budget must be a whole number"):
        apply(root / "p.gate", model=record.loaded, out=tmp_path / "o", budget=0)


def test_default_budget_fits_every_example_and_benchmark():
    from gatelang.ir import load
    from gatelang.planner import plan
    from gatelang.planner.api import capabilities_for

    repo = Path(__file__).resolve().parents[1]
    files = sorted((repo / "docs" / "examples").glob("*.gate")) + sorted(
        (repo / "bench").glob("*/*.gate")) + sorted((repo / "bench").glob("*/policies/*.gate"))
    planned = 0
    for f in files:
        for model in ("tiny-llava", "tiny-clip"):
            try:
                cost = plan(load(f), capabilities_for(model)).total_cost()
            except GatelangError:
                continue  # the policy needs the other model
            planned += 1
            assert cost.forward_passes + cost.backward_passes <= DEFAULT_BUDGET // 20, f
    assert planned >= 8


# ------------------------------------------------------------------ 11: byte-identical patches


def test_patch_bytes_do_not_depend_on_threads_or_the_policy_path(tiny, tmp_path, monkeypatch):
    root, _ = tiny
    before = torch.get_num_threads()
    shas = []
    monkeypatch.chdir(root)
    for i, (policy, threads) in enumerate([("p.gate", 1), ("p.gate", 2),
                                           (str(root / "p.gate"), 2)]):
        res = apply(policy, model=str(root / "model"), out=tmp_path / f"o{i}", device="cpu",
                    options=FAST, progress=False, cache=False, threads=threads)
        shas.append(res.patch_path.read_bytes())
        assert read_patch(res.patch_path).metadata["policy"] == "p.gate"
        lock = json.loads(res.lock_path.read_text())
        assert lock["runtime"]["threads"] == threads and lock["runtime"]["device"] == "cpu"
        assert lock["runtime"]["torch"] == torch.__version__
    torch.set_num_threads(before)
    assert shas[0] == shas[1] == shas[2]


EDIT_SEEN: dict[str, int] = {}


class _Edit(Pass):
    op = "test.hardening_edit"
    kind = "edit"
    output = Artifact("TestOut")

    def run(self, ctx, node, inputs):
        EDIT_SEEN[node.kind] = torch.get_num_threads()
        return PassResult(data={})


class _Verify(_Edit):
    op = "test.hardening_verify"
    kind = "verify"


def test_edit_passes_run_with_a_fixed_thread_count():
    base.register(_Edit)
    base.register(_Verify)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        g = nx.DiGraph()
        g.add_node("e", id="e", op=_Edit.op, kind="edit", params={})
        g.add_node("v", id="v", op=_Verify.op, kind="verify", params={})
        Executor(PassContext(loaded=None)).run(g)
        assert EDIT_SEEN == {"edit": EDIT_THREADS, "verify": 2}
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
        base.REGISTRY.pop(_Edit.op, None)
        base.REGISTRY.pop(_Verify.op, None)


def test_verify_names_the_runtime_differences_on_drift(tiny, tmp_path):
    root, record = tiny
    out = tmp_path / "out"
    write_artifacts(record, out)
    lock = json.loads((out / "gate.lock").read_text())
    lock["runtime"].update(threads=99, torch="0.0")
    first = next(iter(lock["headline"]))
    lock["headline"][first] = 12.0 if lock["headline"][first] is None else None
    (out / "gate.lock").write_text(json.dumps(lock))
    res = verify_lock(out / "gate.lock", device="cpu")
    assert res.drift and not res.passed
    note = next(n for n in res.notes if "runtime differs" in n)
    assert "threads 99 then" in note and "torch 0.0 then" in note and "device" not in note


# ------------------------------------------------------------------ 13: modes and folders


def test_artifacts_get_umask_modes(tiny, tmp_path):
    _, record = tiny
    old = os.umask(0o022)
    try:
        write_artifacts(record, tmp_path / "out")
    finally:
        os.umask(old)
    for f in (tmp_path / "out").iterdir():
        if f.is_file():
            assert f.stat().st_mode & 0o777 == 0o644, f.name
    old = os.umask(0o077)
    try:
        path = atomic.atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600


def test_out_with_a_missing_parent_is_refused(tiny, tmp_path, capsys):
    root, record = tiny
    missing = tmp_path / "no" / "such" / "out"
    with pytest.raises(GatelangError, match=r"output folder's parent .*no/such does not exist"):
        apply(root / "p.gate", model=record.loaded, out=missing)
    with pytest.raises(GatelangError, match="does not exist"):
        write_artifacts(record, missing)
    assert not (tmp_path / "no").exists()
    from gatelang.cli import main

    code = main(["apply", str(root / "p.gate"), "--model", str(root / "model"), "-o",
                 str(missing), "--quiet"])
    err = capsys.readouterr().err
    assert code == EXIT_FAILURE and "no/such does not exist" in err
    (tmp_path / "file").write_text("x")
    with pytest.raises(GatelangError, match="exists and is not a folder"):
        write_artifacts(record, tmp_path / "file")


def test_out_holding_the_current_folder_is_refused(tiny, tmp_path, monkeypatch):
    _, record = tiny
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    for out in (Path("."), tmp_path):
        with pytest.raises(GatelangError, match="current folder"):
            write_artifacts(record, out)


def test_patch_file_header_is_canonical(tmp_path):
    """The digest lives in the metadata and the header stays sorted (byte-stable)."""
    _, path = _small_patch(tmp_path, {"base_weights_sha256": "b" * 64})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert list(header) == sorted(header)
    assert header["__metadata__"]["format"] == "gatelang-patch/2"
    assert len(header["__metadata__"]["payload_sha256"]) == 64
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(path, again / "p.safetensors")
    assert read_patch(again / "p.safetensors").base_sha256 == "b" * 64
