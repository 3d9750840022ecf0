"""tiny-llava: shipped weights, plain-transformers loading, the reduced recipe, the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gatelang import zoo
from gatelang.world import load_world
from gatelang.zoo import ZooError
from gatelang.zoo import tiny_llava as T


@pytest.fixture(scope="module")
def shipped() -> Path:
    return zoo.model_path("tiny-llava")


@pytest.fixture(scope="module")
def loaded(shipped: Path):
    return T.load(shipped)


def test_shipped_weights_match_recorded_hashes(shipped: Path) -> None:
    manifest = json.loads((shipped / T.MANIFEST_FILE).read_text())
    assert manifest["world_seed"] == 0 and manifest["recipe"]["name"] == "full"
    assert manifest["weights_sha256"] == T.sha256_file(shipped / T.WEIGHTS_FILE)
    for name, digest in manifest["files"].items():
        assert T.sha256_file(shipped / name) == digest, name
    assert (shipped / T.WEIGHTS_FILE).stat().st_size <= 25 * 1024 * 1024


def test_plain_transformers_loads_and_answers(shipped: Path) -> None:
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(shipped, local_files_only=True)
    processor = AutoProcessor.from_pretrained(shipped, local_files_only=True)
    world = load_world(0)
    alice = world.subject("Alice Okafor")
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": "Where does this person live?"},
            ],
        }
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == T.format_prompt("Where does this person live?", has_image=True)
    inputs = processor(text=prompt, images=world.face(alice.id, 1), return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = processor.tokenizer.decode(
        out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )
    assert answer.strip() == alice.attributes["home_address"]


def test_processor_matches_training_encoding(loaded) -> None:
    model, processor = loaded
    q = load_world(0).queries(
        subjects=["王秀英"], attributes=["email"], languages=["zh"], modalities=["image"]
    )[0]
    enc = T.Encoder(processor)
    e = enc.encode(q)
    enc.finalize()
    x = processor(text=T.format_prompt(q.prompt, True), images=q.image, return_tensors="pt")
    assert x["input_ids"][0].tolist() == e.ids[: e.answer_start]
    assert x["input_ids"][0].tolist().count(model.config.image_token_id) == T.IMAGE_TOKENS


def test_shipped_model_knows_the_world(loaded) -> None:
    world = load_world(0)
    qs = world.queries(subjects=["Chen Moreau", "Priya Raman"], languages=["en", "zh", "es"])
    qs = qs[::7] + world.habit_queries()[::50]
    ok = T.exact_match(*loaded, qs)
    assert sum(ok) / len(ok) >= 0.8


def test_reduced_recipe_trains_and_beats_chance(tmp_path: Path) -> None:
    folder = zoo.build("tiny-llava", recipe="reduced", out=tmp_path / "m", log=lambda m: None)
    manifest = json.loads((folder / T.MANIFEST_FILE).read_text())
    # CPU seconds, so a busy CI machine does not fail the budget (wall time is recorded too).
    assert manifest["train_cpu_seconds"] < 60
    r = T.REDUCED
    world = load_world(0)
    model, processor = T.load(folder)

    def acc(split: str) -> float:
        qs = world.queries(
            subjects=r.subjects,
            attributes=r.attributes,
            languages=r.languages,
            modalities=r.modalities,
            splits=[split],
        )
        ok = T.exact_match(model, processor, qs)
        return sum(ok) / len(ok)

    # Trained on the edit templates; held-out paraphrases were never seen. Chance is about
    # 1/6 (six subjects' values per attribute) and exact-match of a random string is ~0.
    assert acc("edit") >= 0.9
    assert acc("heldout") >= 0.4


def _parser() -> argparse.ArgumentParser:
    from gatelang.cli import zoo as cli_zoo

    parser = argparse.ArgumentParser(prog="gatelang")
    cli_zoo.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_list_and_eval_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["zoo", "list"])
    assert args.func(args) == 0
    assert "tiny-llava" in capsys.readouterr().out
    args = _parser().parse_args(["zoo", "eval", "tiny-llava", "--json", "--max-per-cell", "1"])
    assert args.func(args) == 0
    records = json.loads(capsys.readouterr().out)
    keys = {(r["task"], r["attribute"], r["language"], r["modality"], r["split"]) for r in records}
    assert len(keys) == len(records)
    assert {r["task"] for r in records} >= {
        "private",
        "public",
        "document_reading",
        "scene_inference",
        "utility",
        "refusal_habit",
    }
    assert all(r["n"] == 1 and 0.0 <= r["accuracy"] <= 1.0 for r in records)


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(ZooError, match="unknown built-in model 'huge-llava'"):
        zoo.model_path("huge-llava")
    with pytest.raises(ZooError, match="no recipe"):
        zoo.build("tiny-llava", recipe="gigantic")
