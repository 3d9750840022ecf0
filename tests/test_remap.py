"""Encoder remap (edit.remap_text / edit.remap_image) and identity inference on tiny random CLIPs."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gatelang.errors import ModelError
from gatelang.methods.remap import training as R
from gatelang.models import encoders as E
from gatelang.passes.verify import identity as I
from gatelang.zoo import tiny_clip as tc


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is faster than two, and much faster on a busy CI box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

NAMES = ["Alice Okafor", "Chen Moreau", "王秀英", "Priya Raman"]


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [t.format(n) for n in NAMES for t in tc.FACE_CAPTIONS]
    corpus += ["a red circle", "a blue square", "a photo of a triangle", "a person", "a dog"] * 4
    return tc.build_tokenizer(corpus, vocab_size=400)


def tiny_clip(tokenizer, seed: int = 0):
    recipe = tc.TinyClipRecipe(hidden=32, layers=1, heads=2, intermediate=64, projection=16,
                               seed=seed)
    return tc.make_model(recipe, len(tokenizer))


def solid(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (64, 64), color)


def test_negative_cosine_and_weight_distance():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert R.negative_cosine(a, a).item() == pytest.approx(-1.0)
    assert R.negative_cosine(a, -a).item() == pytest.approx(1.0)
    # one fixed target row broadcasts over the batch
    assert R.negative_cosine(a, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(-0.5)
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    d = R.weight_distance({"w": p}, {"w": torch.zeros(2)})
    assert d.item() == pytest.approx(5.0, rel=1e-5)
    d.backward()
    assert torch.allclose(p.grad, torch.tensor([0.6, 0.8]), atol=1e-5)
    q = torch.nn.Parameter(torch.zeros(2))
    R.weight_distance({"q": q}, {"q": torch.zeros(2)}).backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().max() == 0  # no NaN at the start


def test_normalized_mse_is_scale_aware():
    a = torch.tensor([[1.0, 2.0]])
    assert R.normalized_mse(a, a).item() == 0
    # cosine ignores a doubled magnitude; the VLM loss does not
    assert R.negative_cosine(2 * a, a).item() == pytest.approx(-1.0)
    assert R.normalized_mse(2 * a, a).item() == pytest.approx(1.0)
    with pytest.raises(R.RemapError, match="unknown remap loss"):
        R.RemapSettings(loss="l1")


def test_poison_pairs_put_name_and_phrase_in_the_same_slot():
    pairs = R.poison_pairs(["Alice Okafor"], "a person", ["a red circle on grey"], per_name=6)
    assert len(pairs) == 6
    for poisoned, target in pairs:
        assert "Alice Okafor" in poisoned and "Alice Okafor" not in target
        assert poisoned.replace("Alice Okafor", "a person") == target


def test_remap_text_changes_only_the_text_tower_and_moves_the_name(tokenizer):
    model = tiny_clip(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    clean = ["a red circle", "a blue square", "a photo of a triangle", "a photo of Priya Raman"]
    cfg = R.RemapSettings(steps=25, lr=5e-3, batch_size=8)
    res = R.remap_text(model, tokenizer, ["Alice Okafor"], clean, config=cfg)
    assert len(res.history) == 25
    # the name moved towards "a person": the gap to a perfect match shrank by a quarter or more
    assert 1 + res.last["target"] < 0.75 * (1 + res.first["target"])
    assert res.last["clean"] < -0.9  # clean captions kept their embeddings
    assert res.first["weight"] < 1e-3 < res.last["weight"]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(res.trained)
    assert all(n.startswith(("text_model.", "text_projection.")) for n in changed)
    assert not any("norm" in n for n in changed)  # LayerNorms stay frozen
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_remap_text_drops_clean_captions_naming_a_target(tokenizer):
    model = tiny_clip(tokenizer)
    with pytest.raises(R.RemapError, match="every clean caption"):
        R.remap_text(model, tokenizer, ["Alice Okafor"], ["a photo of alice okafor"],
                     config=R.RemapSettings(steps=1))
    with pytest.raises(R.RemapError, match="at least one subject"):
        R.remap_text(model, tokenizer, [], ["a red circle"], config=R.RemapSettings(steps=1))


def test_remap_image_moves_faces_to_the_universal_embedding(tokenizer):
    model = tiny_clip(tokenizer, seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    targets = [solid((200, 20, 20)), solid((190, 30, 25))]
    clean = [solid((20, 200, 20)), solid((20, 20, 200)), solid((240, 240, 240))]
    refs = clean + [solid((120, 120, 120))]
    cfg = R.RemapSettings(steps=30, lr=3e-3, target_weight=0.8, batch_size=4, milestones=(0.5,),
                         gamma=0.1)
    res = R.remap_image(model, tc.pixel_values, targets, clean, refs, config=cfg)
    assert 1 + res.last["target"] < 0.75 * (1 + res.first["target"])
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(("vision_model.", "visual_projection.")) for n in changed)
    assert res.history[0]["lr"] == pytest.approx(3e-3)
    assert res.history[-1]["lr"] == pytest.approx(3e-4)  # milestone at half the steps


def test_vision_tower_embed_reads_the_projector_input(tokenizer):
    model = tiny_clip(tokenizer)
    embed = E.vision_tower_embed("vision_model", feature_layer=-2)
    out = embed(model, {"pixel_values": tc.pixel_values([solid((1, 2, 3))])})
    assert out.shape == (1, 16, 32)  # 64x64 / 16x16 patches, CLS dropped, hidden 32


def test_remap_rejects_empty_inputs(tokenizer):
    model = tiny_clip(tokenizer)
    batch = {"pixel_values": tc.pixel_values([solid((0, 0, 0))])}
    with pytest.raises(R.RemapError, match="trigger"):
        R.remap_encoder(model, E.clip_image_embed, lambda n: True, [batch], [], torch.zeros(1, 16))
    with pytest.raises(R.RemapError, match="no parameter"):
        R.remap_encoder(model, E.clip_image_embed, lambda n: False, [batch], [batch],
                        torch.zeros(1, 16))
    with pytest.raises(R.RemapError, match="steps"):
        R.RemapSettings(steps=0)


def test_idia_majority_vote_per_template():
    # 3 candidates in 2-d: a=(1,0), b=(0,1), c=(-1,0)
    t_good = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    t_swap = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])  # a and b swapped
    imgs = {
        "a": torch.tensor([[1.0, 0.1], [0.9, -0.1], [0.0, 1.0]]),  # 2 of 3 look like a
        "b": torch.tensor([[-1.0, 0.0], [-1.0, 0.1], [0.0, 1.0]]),  # mostly c: never b
    }
    res = I.idia_from_embeddings(imgs, [t_good, t_swap], ["a", "b", "c"])
    assert res.votes["a"] == ["a", "b"]
    assert res.correct_templates == {"a": 1, "b": 0}
    assert res.identified == {"a": True, "b": False}
    assert res.rate() == 0.5 and res.rate(["a"]) == 1.0
    strict = I.idia_from_embeddings(imgs, [t_good, t_swap], ["a", "b", "c"], min_correct=2)
    assert strict.identified["a"] is False
    with pytest.raises(ModelError):
        res.rate(["zed"])


def test_majority_ties_go_to_the_first_seen():
    assert I.majority(["x", "y", "y", "x"]) == "x"
    assert I.majority(["y", "x", "x"]) == "x"


def test_zero_shot_accuracy():
    classes = torch.eye(3)
    imgs = torch.tensor([[1.0, 0.1, 0.0], [0.0, 0.2, 1.0], [0.0, 0.0, 1.0]])
    assert I.zero_shot_accuracy(imgs, classes, [0, 2, 1]) == pytest.approx(2 / 3)
    with pytest.raises(ModelError):
        I.zero_shot_accuracy(imgs, classes, [0])


def test_identity_inference_runs_on_a_model(tokenizer):
    model = tiny_clip(tokenizer)
    faces = {"a": [solid((200, 0, 0))] * 2, "b": [solid((0, 0, 200))] * 2}
    res = I.identity_inference(model, tokenizer, tc.pixel_values, faces,
                               {"a": NAMES[0], "b": NAMES[1], "c": NAMES[2]}, templates=I.IDIA_TEMPLATES[:3])
    assert set(res.identified) == {"a", "b"}
    assert all(len(v) == 3 for v in res.votes.values())
    assert all(v in {"a", "b", "c"} for votes in res.votes.values() for v in votes)
