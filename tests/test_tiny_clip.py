"""tiny-clip: tokenizer, image preprocessing, the reduced training recipe, and the shipped weights."""

from __future__ import annotations

import json

import pytest
import torch

from gatelang.world import load_world
from gatelang.zoo import tiny_clip as tc


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is faster than two, and much faster on a busy CI box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_tokenizer_encodes_every_script_with_eos_last():
    tok = tc.build_tokenizer(["a photo of 王秀英", "a photo of 김민준", "Tomás Herrera"] * 5, 300)
    for text in ["a photo of 王秀英", "이서연 smiling", "Tomás"]:
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id == 2 and ids[-1] == tok.eos_token_id == 1
        assert tok.decode(ids, skip_special_tokens=True).strip() == text
    # eos must not be 2: CLIP pools at argmax(ids) when eos_token_id == 2
    assert tok.eos_token_id != 2


def test_pixel_values_match_the_saved_image_processor():
    world = load_world(0)
    imgs = [world.face(s.id, 1) for s in world.subjects[:3]]
    ours = tc.pixel_values(imgs)
    theirs = tc.image_processor()(images=imgs, return_tensors="pt")["pixel_values"]
    assert ours.shape == (3, 3, 64, 64)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_world_colors_are_read_off_the_world_images():
    colors = tc.world_colors(load_world(0))
    assert set(colors) == {"red", "green", "blue", "yellow", "purple", "orange"}
    assert colors["red"][0] > 150 and colors["red"][1] < 100


def test_reduced_recipe_is_deterministic_and_round_trips(tmp_path):
    a = tc.train(tc.REDUCED, tmp_path / "a", log=None)
    model_a, tok_a = tc.load(tmp_path / "a")
    _, _, losses = tc.fit(tc.REDUCED)
    assert a["final_loss"] == pytest.approx(round(losses[-1], 4))
    info = json.loads((tmp_path / "a" / "recipe.json").read_text())
    assert info["recipe"]["steps"] == tc.REDUCED.steps
    assert {"identity_zero_shot", "benign_zero_shot"} <= set(info["metrics"])
    text = tok_a(["a photo of Alice Okafor"], return_tensors="pt")
    with torch.no_grad():
        emb = model_a.get_text_features(**text).pooler_output
    assert emb.shape == (1, tc.REDUCED.projection)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp folder left


def test_missing_weights_give_a_clear_error(tmp_path):
    with pytest.raises(tc.TinyClipError, match="gatelang zoo build tiny-clip"):
        tc.load(tmp_path)


def test_shipped_weights_meet_base_quality():
    records = tc.evaluate(max_per_cell=3)
    by = {(r["task"], r["attribute"]): r for r in records}
    assert by[("identity", "name")]["accuracy"] >= 0.9
    assert by[("identity", "name")]["n"] == 3 * len(load_world(0).subjects)
    assert by[("utility", "color")]["accuracy"] >= 0.9
    assert by[("utility", "shape")]["accuracy"] >= 0.9
    size = sum(p.stat().st_size for p in tc.WEIGHTS_DIR.iterdir())
    assert size < 10 * 2**20


def test_tiny_clip_loads_through_the_models_layer() -> None:
    """`--model tiny-clip` resolves like any alias, to the CLIP family adapter."""
    from gatelang.models import load_model

    loaded = load_model("tiny-clip", device="cpu")
    assert loaded.adapter.family == "clip" and loaded.adapter.encoders == ("text_encoder", "image_encoder")
    assert loaded.adapter.num_layers == 3 and loaded.adapter.hidden_size == 96
    assert loaded.adapter.site("down_proj(0)").path == "text_model.encoder.layers.0.mlp.fc2"
    assert loaded.tokenizer.padding_side == "right"
    assert getattr(loaded.processor, "image_processor", loaded.processor) is not None
