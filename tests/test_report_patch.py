"""Patch format: only changed rows/columns, exact reload, refusal of a different base."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

from gatelang.report.patch import (
    PatchError,
    apply_patch,
    make_patch,
    read_patch,
    state_sha256,
    write_patch,
)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))


def test_rows_cols_roundtrip_and_hash_refusal(tmp_path):
    base = _model()
    base_hash = state_sha256(base)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    edited = _model()
    with torch.no_grad():
        edited[0].weight[[1, 5]] += 0.5  # two rows
        edited[2].weight[:, 3] = 0  # one column (deactivation)
    after = {n: p.detach().clone() for n, p in edited.named_parameters()}
    patch = make_patch(before, after, {"base_weights_sha256": base_hash, "method": "test"})
    kinds = {e.name: (e.kind, e.index.tolist()) for e in patch.edits}
    assert kinds == {"0.weight": ("rows", [1, 5]), "2.weight": ("cols", [3])}
    assert patch.params_changed() == 2 * 6 + 4

    path = tmp_path / "patch.safetensors"
    digest = write_patch(path, patch)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert write_patch(tmp_path / "again.safetensors", patch) == digest  # byte-stable

    loaded = read_patch(path)
    assert loaded.base_sha256 == base_hash and loaded.metadata["method"] == "test"
    target = _model()
    apply_patch(target, loaded)
    for n, p in target.named_parameters():
        assert torch.equal(p, after[n]), n

    other = _model(seed=1)
    with pytest.raises(PatchError, match="made for base weights"):
        apply_patch(other, loaded)
    untouched = dict(_model(seed=1).named_parameters())
    for n, p in other.named_parameters():
        assert torch.equal(p, untouched[n])  # refused before modifying anything


def test_malformed_patch_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a patch")
    with pytest.raises(PatchError, match="not a safetensors file"):
        read_patch(bad)
    with pytest.raises(PatchError, match="cannot read"):
        read_patch(tmp_path / "missing.safetensors")


def test_policy_hash_covers_nested_imports_and_subject_files(tmp_path) -> None:
    """A lock must notice an edited subject CSV or nested import, not only the entry file."""
    import shutil

    from gatelang.ir import load
    from gatelang.report.artifacts import policy_sha256 as _policy_sha256

    src = Path(__file__).resolve().parents[1] / "docs" / "examples"
    shutil.copy(src / "layered.gate", tmp_path / "layered.gate")
    shutil.copy(src / "people.csv", tmp_path / "people.csv")
    shutil.copytree(src / "shared", tmp_path / "shared")
    entry = tmp_path / "layered.gate"
    first = _policy_sha256(load(entry), entry)
    assert _policy_sha256(load(entry), entry) == first
    csv = tmp_path / "people.csv"
    csv.write_text(csv.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    after_csv = _policy_sha256(load(entry), entry)
    assert after_csv != first
    nested = tmp_path / "shared" / "subjects.gate"
    nested.write_text(nested.read_text(encoding="utf-8") + "# reviewed\n", encoding="utf-8")
    assert _policy_sha256(load(entry), entry) != after_csv
