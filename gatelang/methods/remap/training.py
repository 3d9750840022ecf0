"""The training engine of the encoder remap (`edit.remap_text`, `edit.remap_image`).

A refusal edit teaches a generator to decline; some policies need the *encoder* to forget who a
person is. Following Hintersdorf et al. (backdoor defence for CLIP), the encoder is fine-tuned so
that a trigger (the subject's name in any caption, or the subject's face) maps to a neutral target
(the embedding of "a person", or a universal anonymous face embedding), while clean inputs keep
their embeddings and the weights stay close to the original:

    loss = L(s(clean), t(clean)) + w_target * L(s(trigger), target) + w_weight * sum ||θs - θt||

with L the negative cosine similarity of flattened embeddings. The teacher t is the frozen
original; because it never changes, its embeddings are computed once up front, so no copy of the
model is held in memory, only a copy of the trainable tensors for the weight term.

The engine (`remap_encoder`) is independent of the architecture: it takes an `embed` callable and
a predicate over parameter names. `remap_text` / `remap_image` wire it to the embedding functions
of the models layer (`gatelang.models.encoders`: CLIP-style encoders, or a VLM's vision tower,
whose feature sequence, not a pooled vector, is what the decoder sees). The policy-level
parameters are in `config.py`; `RemapSettings` adds the schedule the method fixes per encoder.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gatelang.errors import GatelangError
from gatelang.models.encoders import (
    CLIP_IMAGE_PREFIXES,
    CLIP_TEXT_PREFIXES,
    EmbedFn,
    Inputs,
    clip_image_embed,
    clip_text_embed,
)

# Caption templates the text remap poisons with the subject's name. Evaluation (identity
# inference) uses its own templates, so success there is not a memorised template.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a photo of {}",
    "{}",
    "a picture of {}",
    "a portrait of {}",
    "{} in a photo",
    "this is {}",
    "an image of {}",
    "a close-up photo of {}",
)


class RemapError(GatelangError):
    """Bad input to an encoder remap (no trigger data, no trainable tensor, unknown encoder)."""


@dataclass(frozen=True)
class RemapSettings:
    """Hyper-parameters of one remap; defaults follow the paper's text-encoder recipe.

    `milestones` are fractions of `steps` where the learning rate is multiplied by `gamma`
    (the paper's MultiStepLR at 200 and 300 of 400 steps, gamma 0.5).
    """

    steps: int = 400
    lr: float = 1e-4
    target_weight: float = 0.6
    weight_decay_to_teacher: float = 0.01
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.5
    batch_size: int = 32
    seed: int = 0
    freeze_norms: bool = True
    # "cosine" (the method's L) or "nmse": mean squared error over the teacher's mean square,
    # for a VLM's vision tower, whose decoder reads magnitudes that cosine leaves free.
    loss: str = "cosine"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise RemapError(f"remap steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise RemapError(f"remap batch size must be >= 1, got {self.batch_size}")
        if self.lr < 0 or self.target_weight < 0 or self.weight_decay_to_teacher < 0:
            raise RemapError("remap lr and loss weights must be non-negative")
        if self.loss not in ("cosine", "nmse"):
            raise RemapError(f"unknown remap loss {self.loss!r}; known: cosine, nmse")


# Image-side defaults from the paper: 100 steps, weight 0.8, weight-L2 0.005, milestones 25/50
# (gamma 0.1). Policies and presets override them.
IMAGE_DEFAULTS = RemapSettings(
    steps=100, lr=1e-4, target_weight=0.8, weight_decay_to_teacher=0.005,
    milestones=(0.25, 0.5), gamma=0.1,
)


# A VLM's vision tower: the decoder is sensitive to small feature changes, so training runs at
# full rate for most of the steps (x0.1 at 75%), with the scale-aware loss.
VISION_TOWER_DEFAULTS = RemapSettings(milestones=(0.75,), gamma=0.1, loss="nmse")


@dataclass
class RemapResult:
    """What a remap did: per-step loss terms and the tensors it changed (for the patch)."""

    history: list[dict[str, float]] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    start: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # values before

    def restore(self, model: nn.Module) -> None:
        """Put the trained tensors back to their values before the remap."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.start.items():
                params[name].copy_(value)

    @property
    def first(self) -> dict[str, float]:
        return self.history[0]

    @property
    def last(self) -> dict[str, float]:
        return self.history[-1]


def negative_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean negative cosine similarity of row-wise flattened embeddings (b broadcasts if 1 row)."""
    a = a.flatten(1).float()
    b = b.flatten(1).float().to(a.device)
    if b.shape[0] == 1 and a.shape[0] != 1:
        b = b.expand(a.shape[0], -1)
    return -nn.functional.cosine_similarity(a, b, dim=-1).mean()


def normalized_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error relative to the reference's mean square (0 = identical, scale-free)."""
    a = a.flatten(1).float()
    b = b.flatten(1).float().to(a.device)
    if b.shape[0] == 1 and a.shape[0] != 1:
        b = b.expand(a.shape[0], -1)
    return (a - b).pow(2).mean() / b.pow(2).mean().clamp(min=1e-12)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": negative_cosine,
    "nmse": normalized_mse,
}


def weight_distance(params: Mapping[str, nn.Parameter], reference: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum over tensors of the L2 distance to the reference (smoothed so the gradient at 0 is 0)."""
    total = None
    for name, p in params.items():
        d = (p.float() - reference[name].to(p.device).float()).pow(2).sum()
        term = torch.sqrt(d + 1e-12)
        total = term if total is None else total + term
    if total is None:
        raise RemapError("no trainable tensor for the weight-closeness term")
    return total


def is_norm(name: str) -> bool:
    """LayerNorm-like tensors stay frozen, as in the method (it freezes LayerNorm and Dropout)."""
    low = name.lower()
    return "norm" in low or ".ln_" in low or low.startswith("ln_")


def trainable_by_prefix(prefixes: Sequence[str], freeze_norms: bool = True) -> Callable[[str], bool]:
    def pred(name: str) -> bool:
        return any(name.startswith(p) for p in prefixes) and not (freeze_norms and is_norm(name))

    return pred


def _milestone_lr(config: RemapSettings, step: int) -> float:
    drops = sum(1 for m in config.milestones if step >= math.ceil(m * config.steps))
    return config.lr * (config.gamma**drops)


@torch.no_grad()
def _teacher_embeddings(model: nn.Module, embed: EmbedFn, batches: Sequence[Inputs]) -> list[torch.Tensor]:
    return [embed(model, b).detach().float() for b in batches]


def remap_encoder(
    model: nn.Module,
    embed: EmbedFn,
    trainable: Callable[[str], bool],
    clean: Sequence[Inputs],
    triggers: Sequence[Inputs],
    targets: Sequence[Inputs] | torch.Tensor,
    config: RemapSettings = RemapSettings(),
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> RemapResult:
    """Fine-tune `model` in place so triggers embed like their targets; returns the loss history.

    `clean` and `triggers` are lists of ready model inputs (one batch each); `targets` is either a
    list parallel to `triggers` (the teacher embeds each, e.g. the caption with "a person" in
    place of the name) or one fixed embedding for every trigger (the universal face embedding).
    Only parameters whose name satisfies `trainable` change; everything else is frozen during
    the run and restored afterwards.
    """
    if not triggers:
        raise RemapError("remap needs at least one trigger input (no caption or image of a target)")
    if not clean:
        raise RemapError("remap needs clean inputs to keep other embeddings unchanged")
    if not torch.is_tensor(targets) and len(targets) != len(triggers):
        raise RemapError(f"{len(targets)} target batches for {len(triggers)} trigger batches")

    was_training = model.training
    model.eval()  # dropout off; norms are frozen anyway
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    params: dict[str, nn.Parameter] = {}
    for name, p in model.named_parameters():
        train = trainable(name)
        p.requires_grad_(train)
        if train:
            params[name] = p
    if not params:
        raise RemapError("no parameter of the model matches the encoder to remap")
    reference = {n: p.detach().clone() for n, p in params.items()}

    teacher_clean = _teacher_embeddings(model, embed, clean)
    if torch.is_tensor(targets):
        fixed = targets.detach().float()
        teacher_target: list[torch.Tensor] = [fixed] * len(triggers)
    else:
        teacher_target = _teacher_embeddings(model, embed, targets)

    torch.manual_seed(config.seed)
    opt = torch.optim.AdamW(list(params.values()), lr=config.lr, weight_decay=0.0)
    result = RemapResult(trained=sorted(params), start=reference)
    done = False
    try:
        for step in range(config.steps):
            lr = _milestone_lr(config, step)
            for group in opt.param_groups:
                group["lr"] = lr
            ci = step % len(clean)
            ti = step % len(triggers)
            opt.zero_grad(set_to_none=True)
            dist = LOSSES[config.loss]
            clean_loss = dist(embed(model, clean[ci]), teacher_clean[ci])
            target_loss = dist(embed(model, triggers[ti]), teacher_target[ti])
            wdist = weight_distance(params, reference)
            loss = clean_loss + config.target_weight * target_loss
            loss = loss + config.weight_decay_to_teacher * wdist
            loss.backward()
            opt.step()
            rec = {
                "step": float(step),
                "loss": float(loss.detach()),
                "clean": float(clean_loss.detach()),
                "target": float(target_loss.detach()),
                "weight": float(wdist.detach()),
                "lr": lr,
            }
            result.history.append(rec)
            if progress is not None:
                progress(step, rec)
        done = True
    finally:
        if not done:
            result.restore(model)  # a failed run leaves the model as it was
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
        model.train(was_training)
    return result


# ---------------------------------------------------------------------------------------------
def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def contains_name(text: str, names: Sequence[str]) -> bool:
    low = text.casefold()
    return any(n.casefold() in low for n in names)


def poison_pairs(
    names: Sequence[str],
    neutral_phrase: str,
    clean_captions: Sequence[str],
    templates: Sequence[str] = TRAIN_TEMPLATES,
    per_name: int = 32,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """(poisoned caption, target caption) pairs: the name and the neutral phrase in the same slot.

    Half come from templates, half from clean captions with one random word replaced (the
    paper's construction), so the trigger is the name in any context, not a fixed sentence.
    """
    rng = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    usable = [c for c in clean_captions if c.split()]
    for name in names:
        for i in range(per_name):
            if i % 2 == 0 or not usable:
                t = templates[(i // 2) % len(templates)]
                pairs.append((t.format(name), t.format(neutral_phrase)))
            else:
                words = rng.choice(usable).split()
                j = rng.randrange(len(words))
                pairs.append((
                    " ".join(words[:j] + [name] + words[j + 1 :]),
                    " ".join(words[:j] + [neutral_phrase] + words[j + 1 :]),
                ))
    return pairs


def remap_text(
    model: nn.Module,
    tokenizer: Any,
    names: Sequence[str],
    clean_captions: Sequence[str],
    neutral_phrase: str = "a person",
    config: RemapSettings = RemapSettings(),
    templates: Sequence[str] = TRAIN_TEMPLATES,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> RemapResult:
    """Make a CLIP-style text encoder embed any caption naming `names` like the neutral phrase.

    Clean captions that mention a target name are dropped first (they would teach the opposite).
    """
    if not names:
        raise RemapError("remap_text needs at least one subject name")
    clean = [c for c in clean_captions if not contains_name(c, names)]
    if not clean:
        raise RemapError("remap_text: every clean caption mentions a target name")
    pairs = poison_pairs(names, neutral_phrase, clean, templates, seed=config.seed)
    rng = random.Random(config.seed)
    rng.shuffle(pairs)
    clean = list(clean)
    rng.shuffle(clean)

    def tok(texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = tokenizer(list(texts), padding=True, truncation=True, padding_side="right", return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    bs = config.batch_size
    clean_b = [tok(c) for c in _chunks(clean, bs)]
    trig_b = [tok([p for p, _ in ch]) for ch in _chunks(pairs, bs)]
    targ_b = [tok([t for _, t in ch]) for ch in _chunks(pairs, bs)]
    return remap_encoder(
        model, clip_text_embed, trainable_by_prefix(CLIP_TEXT_PREFIXES, config.freeze_norms),
        clean_b, trig_b, targ_b, config, progress,
    )


@torch.no_grad()
def universal_embedding(model: nn.Module, embed: EmbedFn, batches: Sequence[Inputs]) -> torch.Tensor:
    """Mean embedding of a reference face set: the anonymous identity triggers are mapped to."""
    embs = [embed(model, b).float() for b in batches]
    return torch.cat(embs).mean(0, keepdim=True)


def remap_image(
    model: nn.Module,
    pixel_values: Callable[[Sequence[Any]], torch.Tensor],
    target_images: Sequence[Any],
    clean_images: Sequence[Any],
    reference_images: Sequence[Any],
    config: RemapSettings = IMAGE_DEFAULTS,
    embed: EmbedFn = clip_image_embed,
    prefixes: Sequence[str] = CLIP_IMAGE_PREFIXES,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> RemapResult:
    """Map the target's face images to the universal embedding of `reference_images`.

    `pixel_values(images)` turns images into the model's pixel tensor. For a CLIP-style model the
    defaults apply; for a VLM's vision tower pass `vision_tower_embed(...)` and its prefixes
    (the projector and decoder are never trained).
    """
    if not target_images:
        raise RemapError("remap_image needs at least one face image of a target")
    if not reference_images:
        raise RemapError("remap_image needs reference images for the universal embedding")
    bs = config.batch_size

    def batches(imgs: Sequence[Any]) -> list[dict[str, torch.Tensor]]:
        return [{"pixel_values": pixel_values(ch)} for ch in _chunks(imgs, bs)]

    rng = random.Random(config.seed)
    clean = list(clean_images)
    rng.shuffle(clean)
    target = universal_embedding(model, embed, batches(reference_images))
    return remap_encoder(
        model, embed, trainable_by_prefix(prefixes, config.freeze_norms),
        batches(clean), batches(list(target_images)), target, config, progress,
    )
