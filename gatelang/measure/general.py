"""General ability of a real checkpoint: what an edit of a few facts must leave unchanged.

The built-in world's utility tasks mean nothing to a pretrained model, and a pretrained model's
value is mostly what it knew before the edit. Four measures, on data written for gatelang
(`gatelang/stdlib/general/`): factual QA and arithmetic (greedy, answer must state an accepted
string), a 4-option multiple-choice set scored by option likelihood (no generation, so small
models that cannot follow an "answer with a letter" instruction are still measured), and
perplexity on held-out English prose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gatelang.stdlib.people import matches

LETTERS = "ABCD"


class QAItem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    q: str = Field(min_length=1)
    a: tuple[str, ...] = Field(min_length=1)

    @field_validator("a", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        return [str(x) for x in v]


class MCQItem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    question: str = Field(min_length=1)
    options: tuple[str, str, str, str]
    answer: int = Field(ge=0, le=3)


class GeneralSets(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    factual: tuple[QAItem, ...]
    arithmetic: tuple[QAItem, ...]
    mcq: tuple[MCQItem, ...]
    heldout_text: str


@dataclass(frozen=True)
class _Prompt:
    prompt: str
    subject_text: str = ""
    image: None = None


def _parse_mcq(text: str) -> tuple[MCQItem, ...]:
    items: list[MCQItem] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(" | ")]
        if len(parts) != 6 or parts[5] not in LETTERS or len(set(parts[1:5])) != 4:
            raise ValueError(f"mcq.txt:{n}: expected `question | A | B | C | D | letter` "
                             "with four different options")
        if parts[0] in seen:
            raise ValueError(f"mcq.txt:{n}: question repeated")
        seen.add(parts[0])
        items.append(MCQItem(question=parts[0], options=tuple(parts[1:5]),
                             answer=LETTERS.index(parts[5])))
    return tuple(items)


@lru_cache(maxsize=1)
def load_general() -> GeneralSets:
    """The shipped general-ability sets, validated."""
    root = resources.files("gatelang.stdlib.general")
    qa = yaml.safe_load((root / "qa.yaml").read_text(encoding="utf-8"))
    return GeneralSets(
        factual=tuple(QAItem(**x) for x in qa["factual"]),
        arithmetic=tuple(QAItem(**x) for x in qa["arithmetic"]),
        mcq=_parse_mcq((root / "mcq.txt").read_text(encoding="utf-8")),
        heldout_text=(root / "heldout_english.txt").read_text(encoding="utf-8"),
    )


def qa_correct(loaded: Any, items: Sequence[QAItem], *, max_new_tokens: int = 24,
               batch_size: int = 16) -> tuple[list[bool], list[str]]:
    """Greedy answers and whether each states an accepted string (whole words)."""
    answers = loaded.generate([_Prompt(i.q) for i in items], max_new_tokens=max_new_tokens,
                              batch_size=batch_size)
    return [matches(a, i.a) for a, i in zip(answers, items, strict=True)], answers


def _device(loaded: Any) -> torch.device:
    return next(loaded.model.parameters()).device


@torch.inference_mode()
def perplexity(loaded: Any, text: str, *, window: int = 512) -> float:
    """Token perplexity of `text` over non-overlapping windows (no chat template)."""
    tok = loaded.tokenizer
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    nll, count = 0.0, 0
    dev = _device(loaded)
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window + 1].to(dev)
        if len(chunk) < 2:
            break
        logits = loaded.model(chunk[None, :-1]).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        nll -= logp.gather(1, chunk[1:, None]).sum().item()
        count += len(chunk) - 1
    return math.exp(nll / max(1, count))


@torch.inference_mode()
def option_scores(loaded: Any, item: MCQItem) -> list[float]:
    """Mean log-probability per token of each option after the question.

    Length-normalised (as lm-evaluation-harness's `acc_norm`): longer options are not
    penalised for having more tokens. The question is framed as plain text,
    "Question: ...\\nAnswer:", identical for chat and base checkpoints.
    """
    tok = loaded.tokenizer
    prefix = f"Question: {item.question}\nAnswer:"
    pre_ids = tok(prefix, add_special_tokens=False)["input_ids"]
    bos = [tok.bos_token_id] if getattr(tok, "bos_token_id", None) is not None else []
    seqs, spans = [], []
    for opt in item.options:
        opt_ids = tok(" " + opt, add_special_tokens=False)["input_ids"]
        full = bos + pre_ids + opt_ids
        seqs.append(full)
        spans.append((len(full) - len(opt_ids), len(full)))
    width = max(len(s) for s in seqs)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    dev = _device(loaded)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=dev)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=dev)
    logp = torch.log_softmax(loaded.model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    out = []
    for row, (a, b) in enumerate(spans):
        targets = ids[row, a:b]
        lp = logp[row, a - 1:b - 1].gather(1, targets[:, None]).sum().item()
        out.append(lp / (b - a))
    return out


def mcq_correct(loaded: Any, items: Sequence[MCQItem]) -> list[bool]:
    """Whether the most likely option is the right one, per question."""
    out = []
    for it in items:
        scores = option_scores(loaded, it)
        out.append(max(range(4), key=scores.__getitem__) == it.answer)
    return out


@dataclass
class GeneralResult:
    factual: float
    arithmetic: float
    mcq: float
    perplexity: float
    n: dict[str, int]
    correct: dict[str, list[bool]] = field(default_factory=dict)
    answers: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"factual": self.factual, "arithmetic": self.arithmetic, "mcq": self.mcq,
                "perplexity": self.perplexity, "n": self.n}


def evaluate_general(loaded: Any, sets: GeneralSets | None = None) -> GeneralResult:
    """All four measures on `loaded` (a `LoadedModel`)."""
    sets = sets or load_general()
    fact, fact_answers = qa_correct(loaded, sets.factual)
    arith, arith_answers = qa_correct(loaded, sets.arithmetic)
    mcq = mcq_correct(loaded, sets.mcq)
    ppl = perplexity(loaded, sets.heldout_text)

    def rate(xs: list[bool]) -> float:
        return sum(xs) / max(1, len(xs))

    return GeneralResult(
        factual=rate(fact), arithmetic=rate(arith), mcq=rate(mcq), perplexity=ppl,
        n={"factual": len(fact), "arithmetic": len(arith), "mcq": len(mcq),
           "perplexity_tokens": len(loaded.tokenizer(sets.heldout_text,
                                                     add_special_tokens=False)["input_ids"])},
        correct={"factual": fact, "arithmetic": arith, "mcq": mcq},
        answers={"factual": fact_answers, "arithmetic": arith_answers})


__all__ = ["GeneralResult", "GeneralSets", "MCQItem", "QAItem", "evaluate_general",
           "load_general", "mcq_correct", "option_scores", "perplexity", "qa_correct"]
