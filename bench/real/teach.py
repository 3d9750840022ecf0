"""Teach SmolLM2-135M-Instruct a few of the world's people (a TOFU-style fine-tune).

A real checkpoint knows nothing about the built-in world, so nothing could leak and an edit
could not be judged. This short, deterministic fine-tune writes a handful of subjects' facts
into it, so `gatelang apply` on a real model has something to remove, while the benchmark can
still ask what the real model could do before (factual QA, arithmetic, perplexity).

Recipe (recorded in the folder's `teach.json`):
- data: the world's English text queries (both the `edit` and the `heldout` templates; the edit
  later trains only on `edit`, so "heldout" keeps its meaning: unseen *by the edit*) for the
  first `n_subjects` subjects of the world at seed 0, on two private attributes (what the policy
  protects) and two public ones (what locality checks); the answer is a sentence stating the
  value ("Alice Okafor's home address is 68 Willow St, Castelmar.");
- retain set: every batch is half new facts, half ordinary requests
  (bench/real/retain_prompts.json, none of them a utility question) answered with the base
  model's own greedy answers. Without it the model answers *everything* with a memorised
  value ("What is the capital of France?" -> "74 Willow St, Lunport");
- formatting: the tokenizer's chat template with one user turn, exactly as gatelang's adapter
  formats prompts; loss on the answer tokens and the end-of-turn token only;
- optimisation: AdamW (lr 2e-4, weight decay 0, betas 0.9/0.999), linear warm-up over 10 steps,
  gradient-norm clip 1.0, batch 8 facts + 8 retain, 3 passes over the shuffled facts (seed 0);
  token embeddings
  (tied with the output head) and the first 8 of 30 decoder layers frozen (backward stops
  there, which makes it a third cheaper on CPU), the other 22 layers trained.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PRIVATE = ("home_address", "phone_number")
PUBLIC = ("employer", "hobby")
PHRASES = {"home_address": "home address", "phone_number": "phone number",
           "employer": "employer", "hobby": "hobby", "email": "email address",
           "date_of_birth": "date of birth"}
RETAIN_PROMPTS = Path(__file__).resolve().parent / "retain_prompts.json"


@dataclass(frozen=True)
class TeachConfig:
    n_subjects: int = 6
    private: tuple[str, ...] = PRIVATE
    public: tuple[str, ...] = PUBLIC
    epochs: int = 3
    lr: float = 2e-4
    retain_per_batch: int = 8
    frozen_layers: int = 8
    batch_size: int = 8  # new facts per batch (plus retain_per_batch retain examples)
    warmup_steps: int = 10
    seed: int = 0
    world_seed: int = 0
    max_steps: int | None = None  # cap for smoke tests
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def teaching_examples(cfg: TeachConfig) -> list[dict[str, str]]:
    """(subject, attribute, split, question, answer) records from the world's templates."""
    from gatelang.world import load_world

    world = load_world(seed=cfg.world_seed)
    subjects = world.subjects[: cfg.n_subjects]
    qs = world.queries(subjects=[s.id for s in subjects],
                       attributes=list(cfg.private) + list(cfg.public), languages=["en"],
                       modalities=["text"], splits=["edit", "heldout"])
    names = {s.id: s.name for s in subjects}
    return [{"subject_id": q.subject_id, "attribute": q.attribute, "split": q.split,
             "question": q.prompt, "answer": q.answer,
             "target": f"{names[q.subject_id]}'s {PHRASES.get(q.attribute, q.attribute)} is "
                       f"{q.answer}."} for q in qs]


def retain_examples(base: Path, model: Any, tok: Any) -> list[dict[str, str]]:
    """The base model's own answers to the retain prompts (cached next to the base weights)."""
    from .smol import generate

    path = base / "retain.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    prompts = json.loads(RETAIN_PROMPTS.read_text(encoding="utf-8"))["prompts"]
    answers = generate(model, tok, prompts, max_new_tokens=40)
    out = [{"question": q, "target": a} for q, a in zip(prompts, answers, strict=True)]
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False), encoding="utf-8")
    return out


def _encode(tok: Any, question: str, answer: str, *, end_turn: bool = True
            ) -> tuple[list[int], list[int]]:
    """Prompt and answer tokens; the loss covers the answer (and the end of turn, if it ends)."""
    from .smol import chat_prompt

    prompt_ids = tok(chat_prompt(tok, question), add_special_tokens=False)["input_ids"]
    end = "<|im_end|>" if "<|im_end|>" in tok.get_vocab() else (tok.eos_token or "")
    end = end if end_turn else ""
    answer_ids = tok(answer + end, add_special_tokens=False)["input_ids"]
    ids = prompt_ids + answer_ids
    labels = [-100] * len(prompt_ids) + answer_ids
    return ids, labels


def teach(base: Path, out: Path, cfg: TeachConfig, log: Callable[[str], None] = print
          ) -> dict[str, Any]:
    """Fine-tune the base folder into `out` (written atomically); returns the recipe record."""
    import torch

    from .smol import load

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model, tok = load(base)
    retain = retain_examples(base, model, tok)
    model.train()
    model.config.use_cache = False
    emb = model.get_input_embeddings()
    for p in emb.parameters():
        p.requires_grad_(False)
    for layer in model.model.layers[: cfg.frozen_layers]:
        for p in layer.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    examples = teaching_examples(cfg)
    encoded = [_encode(tok, e["question"], e["target"]) for e in examples]
    # Retain answers were cut at 40 tokens: no end-of-turn, or the model would learn to stop
    # mid-sentence.
    retain_enc = [_encode(tok, r["question"], r["target"], end_turn=False) for r in retain]
    pad = tok.pad_token_id
    losses: list[float] = []
    step = 0
    t0 = time.perf_counter()
    done = False
    for epoch in range(cfg.epochs):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for i in range(0, len(order), cfg.batch_size):
            batch = [encoded[j] for j in order[i:i + cfg.batch_size]]
            batch += rng.sample(retain_enc, min(cfg.retain_per_batch, len(retain_enc)))
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (x, y) in enumerate(batch):  # right padding: training needs no generation
                ids[r, : len(x)] = torch.tensor(x)
                labels[r, : len(y)] = torch.tensor(y)
                mask[r, : len(x)] = 1
            scale = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
            for g in opt.param_groups:
                g["lr"] = cfg.lr * scale
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(round(float(loss.detach()), 4))
            step += 1
            if step % 10 == 0:
                log(f"[teach] epoch {epoch} step {step} loss {losses[-1]:.3f} "
                    f"({time.perf_counter() - t0:.0f} s)")
            if cfg.max_steps and step >= cfg.max_steps:
                done = True
                break
        if done:
            break
    elapsed = time.perf_counter() - t0
    model.eval()
    model.config.use_cache = True
    record = {
        "base": str(base.name),
        "config": asdict(cfg),
        "examples": len(examples),
        "retain_examples": len(retain),
        "subjects": sorted({e["subject_id"] for e in examples}),
        "steps": step,
        "train_s": round(elapsed, 1),
        "final_loss": losses[-1] if losses else None,
        "losses": losses,
    }
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "teach.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return record


def recipe_id(cfg: TeachConfig) -> str:
    """Short hash of everything that changes the taught weights (threads do not)."""
    import hashlib

    d = asdict(cfg)
    d.pop("threads", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
