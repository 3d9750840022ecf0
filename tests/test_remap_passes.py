"""Anonymize policies end to end on tiny-clip: plan -> remap passes -> identity inference -> artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from gatelang.driver import RunOptions, run
from gatelang.errors import PlanError
from gatelang.passes import get_pass
from gatelang.passes.base import NodeSpec, PassContext
from gatelang.report.artifacts import write_artifacts
from gatelang.zoo import tiny_clip as tc


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is faster than two, and much faster on a busy CI box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

POLICY = """gatelang 1
use stdlib.languages

subjects targets = ["Alice Okafor", "Chen Moreau"]

policy forget {
  description "tiny-clip forgets two people."
  anonymize targets in %s encoder
  method remap { steps 3  lr 0.001 }
  require {
    identification <= 100%%
  }
}
"""


@pytest.fixture(scope="module")
def loaded():
    return tc.loaded_model()


def test_registered_ops():
    assert get_pass("edit.remap_text").kind == "edit"
    assert get_pass("edit.remap_image").kind == "edit"
    assert get_pass("verify.identity_inference").kind == "verify"


def test_text_and_image_policy_writes_patch_report_and_lock(tmp_path: Path, loaded):
    policy = tmp_path / "forget.gate"
    policy.write_text(POLICY % "text, image")
    base = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    record = run(policy, RunOptions(progress=False, passes={"identity_images": 1}), loaded=loaded)
    res = write_artifacts(record, tmp_path / "out")
    # the passes leave the model as they found it
    assert all(torch.equal(p, base[n]) for n, p in loaded.model.named_parameters())
    assert res.passed
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    req = report["requirements"][0]
    assert req["metric"] == "identification" and req["n"] == 2
    groups = {(m["group"], m["metric"]) for m in report["metrics"]}
    assert {("target", "identification_rate"), ("other", "identification_rate"),
            ("utility", "benign_zero_shot"), ("clean_text", "embedding_cosine"),
            ("clean_image", "embedding_cosine")} <= groups
    before = next(m for m in report["metrics"] if m["group"] == "target")["before"]
    assert before == 1.0  # the shipped model identifies both targets before the edit
    with safe_open(str(res.patch_path), "pt") as fh:
        names = list(fh.keys())
    assert names
    assert any("text_model" in n for n in names) and any("vision_model" in n for n in names)
    assert not any("norm" in n for n in names)
    assert (tmp_path / "out" / "gate.lock").is_file()


def test_remap_text_pass_on_a_model_without_text_encoder_is_a_plan_error(loaded):
    class NoText(torch.nn.Module):
        pass

    fake = type("L", (), {"model": NoText(), "tokenizer": None, "name": "x"})()
    ctx = PassContext(loaded=fake)
    node = NodeSpec(id="n", op="edit.remap_text", kind="edit",
                    params={"subjects": ["Alice Okafor"], "encoder": "text_encoder"})
    with pytest.raises(PlanError, match="no text encoder"):
        get_pass("edit.remap_text")().run(ctx, node, {})


def test_unknown_subject_is_a_plan_error(loaded):
    ctx = PassContext(loaded=loaded)
    node = NodeSpec(id="n", op="edit.remap_text", kind="edit",
                    params={"subjects": ["Nobody Atall"], "encoder": "text_encoder",
                            "method": "remap", "params": {"steps": 1}})
    with pytest.raises(PlanError, match="Nobody Atall"):
        get_pass("edit.remap_text")().run(ctx, node, {})


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    from gatelang.models import load_model
    from gatelang.models.tiny import build_tiny_checkpoint

    folder = build_tiny_checkpoint("llava", tmp_path_factory.mktemp("llava") / "tiny")
    return load_model(str(folder), device="cpu")


def test_remap_image_on_a_vlm_trains_only_the_vision_tower(tiny_llava):
    ctx = PassContext(loaded=tiny_llava, options={"max_new_tokens": 2, "verify_max_items": 4})
    node = NodeSpec(id="g", op="edit.remap_image", kind="edit",
                    params={"subjects": ["Alice Okafor"], "encoder": "vision_tower",
                            "method": "remap", "params": {"steps": 4, "lr": 0.01}})
    base = {n: p.detach().clone() for n, p in tiny_llava.model.named_parameters()}
    gate = get_pass("edit.remap_image")().run(ctx, node, {})
    assert all(torch.equal(p, base[n]) for n, p in tiny_llava.model.named_parameters())
    changed = [k.removeprefix("weight:") for k in gate.tensors]
    assert changed and all(n.startswith("model.vision_tower.") for n in changed)
    assert not any("norm" in n for n in changed)
    assert gate.data["loss_last"]["target"] < gate.data["loss_first"]["target"]

    verify = NodeSpec(id="v", op="verify.identity_inference", kind="verify",
                      params={"subjects": ["Alice Okafor"], "encoders": ["image"]})
    res = get_pass("verify.identity_inference")().run(ctx, verify, {"edited": gate})
    assert res.data["check"] == "identification"
    assert res.data["items"] and all(i["subject"] == "alice-okafor" for i in res.data["items"])
    assert all(i["after"] in ("identified", "anonymous") for i in res.data["items"])
    other = next(m for m in res.data["metrics"] if m["group"] == "other")
    assert other["n"] == 4
