"""Anonymize policies end to end on tiny-clip: plan -> remap passes -> identity inference -> artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from gatelang.errors import PlanError
from gatelang.passes import get_pass
from gatelang.passes.base import NodeSpec, PassContext
from gatelang.report.api import _write_artifacts, run_policy
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
    assert get_pass("gate.remap_text").kind == "gate"
    assert get_pass("gate.remap_image").kind == "gate"
    assert get_pass("verify.identity_inference").kind == "verify"


def test_text_and_image_policy_writes_patch_report_and_lock(tmp_path: Path, loaded):
    policy = tmp_path / "forget.gate"
    policy.write_text(POLICY % "text, image")
    base = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    parts = run_policy(policy, loaded=loaded, options={"identity_images": 1}, progress=False)
    res = _write_artifacts(parts, tmp_path / "out", seed=0, model_spec="tiny-clip", options={})
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
    node = NodeSpec(id="n", op="gate.remap_text", kind="gate",
                    params={"subjects": ["Alice Okafor"], "encoder": "text_encoder"})
    with pytest.raises(PlanError, match="no text encoder"):
        get_pass("gate.remap_text")().run(ctx, node, {})


def test_unknown_subject_is_a_plan_error(loaded):
    ctx = PassContext(loaded=loaded)
    node = NodeSpec(id="n", op="gate.remap_text", kind="gate",
                    params={"subjects": ["Nobody Atall"], "encoder": "text_encoder",
                            "params": {"steps": 1}})
    with pytest.raises(PlanError, match="Nobody Atall"):
        get_pass("gate.remap_text")().run(ctx, node, {})
