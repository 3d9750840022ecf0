"""Hugging Face interop and archived runs, on a randomly initialised tiny LLaVA: a patch applied
to a model the user loaded with plain transformers, the state-dict export, the model card of
`patch apply --out`, and `verify --lock` on a copied output folder. (A refusal through plain
transformers on the trained built-in model is checked in test_apply_tiny_llava.py.)"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from gatelang.cli import main
from gatelang.driver import apply, export_patch, load_patch, verify_lock
from gatelang.errors import EXIT_REQUIREMENT
from gatelang.models.tiny import build_tiny_checkpoint
from gatelang.report.lock import LockError
from gatelang.report.patch import PatchError, read_patch

POLICY = """gatelang 1
use stdlib.attributes.contact
use stdlib.languages
subjects protected = ["Alice Okafor"]
policy p {
  refuse home_address about protected in en via text
  keep other_subjects, utility
  method neural_gate { layer 1 }
  require {
    refusal(heldout) >= 95%
  }
}
"""

FAST = {
    "method_overrides": {"neural_gate": {"mask_steps": 2, "steps": 1, "lr": 0.01,
                                         "mask_samples": 2}},
    "edit_max_items": 4, "max_items": 6, "max_new_tokens": 4, "attack_items": 2,
    "attack_settings": {"samples": 2, "relearn_steps": 2, "exposure_candidates": 4},
}
EDITED = "model.language_model.layers.1.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop")
    build_tiny_checkpoint("llava", root / "model", seed=0)
    build_tiny_checkpoint("llava", root / "other", seed=1)
    (root / "policies").mkdir()
    (root / "policies" / "p.gate").write_text(POLICY, encoding="utf-8")
    res = apply(root / "policies" / "p.gate", model=str(root / "model"), out=root / "out",
                options=FAST, progress=False, device="cpu", threads=1)
    return root, res


def _plain(path):
    """The model as a user loads it, without gatelang."""
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32)


def test_load_patch_accepts_a_module_loaded_with_transformers(run):
    root, res = run
    want = load_patch(str(root / "model"), res.patch_path, device="cpu", allow_rejected=True)
    model = _plain(root / "model")
    got = load_patch(model, res.patch_path, allow_rejected=True)
    assert got is model  # patched in place, the caller's object returned
    assert torch.equal(dict(model.named_parameters())[EDITED],
                       dict(want.model.named_parameters())[EDITED])
    with pytest.raises(PatchError, match="do not hold the values"):
        load_patch(_plain(root / "other"), res.patch_path, allow_rejected=True)
    with pytest.raises(PatchError, match="rejected"):
        load_patch(_plain(root / "model"), res.patch_path)


def test_state_dict_export_loads_with_load_state_dict(run, tmp_path):
    root, res = run
    out = tmp_path / "sd.safetensors"
    code = main(["patch", "export", "--model", str(root / "model"), "--patch",
                 str(res.patch_path), "--format", "state-dict", "-o", str(out),
                 "--allow-rejected"])
    assert code == 0
    sd = load_file(out)
    patch = read_patch(res.patch_path)
    assert set(sd) == {e.name for e in patch.edits} == {EDITED}  # only the changed tensors
    model = _plain(root / "model")
    result = model.load_state_dict(sd, strict=False)
    assert not result.unexpected_keys
    want = load_patch(str(root / "model"), res.patch_path, device="cpu", allow_rejected=True)
    for name, value in want.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    again = export_patch(str(root / "model"), res.patch_path, tmp_path / "again.safetensors",
                         allow_rejected=True)
    assert again.read_bytes() == out.read_bytes()  # byte-stable
    with pytest.raises(PatchError, match="rejected"):
        export_patch(str(root / "model"), res.patch_path, tmp_path / "x.safetensors")
    with pytest.raises(PatchError, match="made for base weights"):
        export_patch(str(root / "other"), res.patch_path, tmp_path / "x.safetensors",
                     allow_rejected=True)


def test_patch_apply_out_writes_a_model_card(run, tmp_path, capsys):
    root, res = run
    out = tmp_path / "patched"
    assert main(["patch", "apply", "--model", str(root / "model"), "--patch",
                 str(res.patch_path), "--allow-rejected", "--out", str(out),
                 "--device", "cpu"]) == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "library_name: transformers" in card
    lock_digest = __import__("hashlib").sha256((root / "out" / "gate.lock").read_bytes())
    assert lock_digest.hexdigest() in card
    assert "refusal(heldout) >= 95%" in card and "rejected" in card
    assert "refuse home_address about protected" in card  # the policy text
    model = _plain(out)  # still a folder plain from_pretrained loads
    assert torch.equal(dict(model.named_parameters())[EDITED],
                       dict(load_patch(str(root / "model"), res.patch_path, device="cpu",
                                       allow_rejected=True).model.named_parameters())[EDITED])


def test_verify_a_copied_output_folder(run, tmp_path, capsys):
    root, _res = run
    lock = json.loads((root / "out" / "gate.lock").read_text())
    assert not lock["policy"]["path"].startswith("/")  # relative to the lock
    assert lock["runtime"]["threads"] == 1
    archive = tmp_path / "archive" / "run-1"
    shutil.copytree(root / "out", archive)
    with pytest.raises(LockError, match="--policy"):
        verify_lock(archive / "gate.lock", device="cpu")
    code = main(["verify", "--lock", str(archive / "gate.lock"), "--policy",
                 str(root / "policies" / "p.gate"), "--device", "cpu", "--json", "--quiet"])
    doc = json.loads(capsys.readouterr().out)
    assert code == EXIT_REQUIREMENT and doc["drift"] == []  # the locked patch was rejected
    assert doc["status"] == "failed"
    changed = tmp_path / "changed.gate"
    changed.write_text(POLICY.replace("95%", "90%"), encoding="utf-8")
    res = verify_lock(archive / "gate.lock", device="cpu", policy=changed)
    assert [d["what"] for d in res.drift][:1] == ["policy"]
    # a moved folder whose relative path still resolves needs no override
    moved = root / "moved"
    shutil.copytree(root / "out", moved)
    assert verify_lock(moved / "gate.lock", device="cpu").drift == []
    code = main(["verify", "--lock", str(archive / "gate.lock"), "--device", "cpu"])
    assert code == 1 and "--policy" in capsys.readouterr().err


def test_apply_json_has_status(run, monkeypatch, capsys):
    """`apply --json` leads with `status`; the CLI hands progress to the API (not --quiet)."""
    import gatelang.driver

    root, res = run
    seen = {}

    def fake_apply(policy, **kw):
        seen.update(kw)
        return res

    monkeypatch.setattr(gatelang.driver, "apply", fake_apply)
    code = main(["apply", str(root / "policies" / "p.gate"), "--json", "--dtype", "float32"])
    doc = json.loads(capsys.readouterr().out)
    assert code == EXIT_REQUIREMENT and doc["status"] == "rejected" and doc["exit_code"] == 3
    assert seen["progress"] is True and seen["dtype"] == "float32"
    main(["apply", str(root / "policies" / "p.gate"), "--quiet"])
    assert seen["progress"] is False
