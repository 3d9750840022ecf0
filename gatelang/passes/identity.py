"""Identity inference attack (`verify.identity_inference`) and zero-shot checks for encoders.

The attack (IDIA, Hintersdorf et al.) asks whether a CLIP-style model still links a person's face
to their name: each face rendering is zero-shot classified over the candidate names with several
prompt templates; per template the predictions over the person's images are put to a majority
vote; the person counts as identified if at least `min_correct` templates vote right. Several
templates make the attack robust to one phrasing having been unlearned and not the others.

The scoring is a pure function over embeddings (`idia_from_embeddings`), so it is tested without
a model; `identity_inference` wires it to a CLIP-style model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gatelang.passes.remap import RemapError, clip_image_embed, clip_text_embed

# Templates the attack uses; none of them is among the remap's training templates, so a
# successful remap has to generalise beyond the phrasings it saw.
IDIA_TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "a face photo of {}",
    "{} in a photo.",
    "a cropped photo of {}",
    "a good photo of {}",
    "a bright photo of {}.",
    "an image showing {}",
)


@dataclass
class IdentityInferenceResult:
    """Per-subject outcome of the attack; rates are fractions in [0, 1]."""

    identified: dict[str, bool] = field(default_factory=dict)
    correct_templates: dict[str, int] = field(default_factory=dict)
    votes: dict[str, list[str]] = field(default_factory=dict)  # winning candidate per template

    def rate(self, subject_ids: Sequence[str] | None = None) -> float:
        """True-positive rate over `subject_ids` (all attacked subjects when None)."""
        ids = list(self.identified) if subject_ids is None else list(subject_ids)
        if not ids:
            return float("nan")
        missing = [s for s in ids if s not in self.identified]
        if missing:
            raise RemapError(f"identity inference did not attack {missing}")
        return sum(self.identified[s] for s in ids) / len(ids)

    def to_json(self) -> dict[str, Any]:
        return {
            "identified": dict(self.identified),
            "correct_templates": dict(self.correct_templates),
            "votes": {k: list(v) for k, v in self.votes.items()},
        }


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(x.flatten(1).float(), dim=-1)


def majority(labels: Sequence[str]) -> str:
    """Most frequent label; ties go to the label seen first (deterministic)."""
    counts = Counter(labels)
    best = max(counts.values())
    return next(lbl for lbl in labels if counts[lbl] == best)


def idia_from_embeddings(
    image_embeds: Mapping[str, torch.Tensor],
    name_embeds: Sequence[torch.Tensor],
    candidates: Sequence[str],
    min_correct: int = 1,
) -> IdentityInferenceResult:
    """Score the attack from embeddings.

    `image_embeds[subject] ` is [n_images, D]; `name_embeds[t]` is [n_candidates, D] for template t;
    `candidates[c]` is the id of candidate c (a subject id, or a distractor's own label).
    """
    if min_correct < 1:
        raise RemapError(f"min_correct must be >= 1, got {min_correct}")
    if not name_embeds:
        raise RemapError("identity inference needs at least one prompt template")
    result = IdentityInferenceResult()
    texts = [_normalize(t) for t in name_embeds]
    for subject, imgs in image_embeds.items():
        if imgs.shape[0] == 0:
            raise RemapError(f"no face image of subject {subject!r} to attack with")
        im = _normalize(imgs)
        votes = []
        for t in texts:
            preds = (im @ t.T).argmax(-1).tolist()
            votes.append(majority([candidates[i] for i in preds]))
        correct = sum(v == subject for v in votes)
        result.votes[subject] = votes
        result.correct_templates[subject] = correct
        result.identified[subject] = correct >= min_correct
    return result


def zero_shot_accuracy(
    image_embeds: torch.Tensor, class_embeds: torch.Tensor, labels: Sequence[int]
) -> float:
    """Share of images whose most similar class text is their label."""
    if image_embeds.shape[0] != len(labels):
        raise RemapError(f"{image_embeds.shape[0]} images for {len(labels)} labels")
    if not labels:
        return float("nan")
    preds = (_normalize(image_embeds) @ _normalize(class_embeds).T).argmax(-1)
    return float((preds == torch.as_tensor(list(labels))).float().mean())


@torch.no_grad()
def encode_texts(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 256
) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True,
                        return_tensors="pt")
        out.append(clip_text_embed(model, {"input_ids": enc["input_ids"],
                                           "attention_mask": enc["attention_mask"]}).float())
    return torch.cat(out)


@torch.no_grad()
def encode_images(
    model: nn.Module,
    pixel_values: Callable[[Sequence[Any]], torch.Tensor],
    images: Sequence[Any],
    batch_size: int = 256,
) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch_size):
        out.append(clip_image_embed(model, {"pixel_values": pixel_values(images[i : i + batch_size])}).float())
    return torch.cat(out)


def identity_inference(
    model: nn.Module,
    tokenizer: Any,
    pixel_values: Callable[[Sequence[Any]], torch.Tensor],
    faces: Mapping[str, Sequence[Any]],
    candidates: Mapping[str, str],
    templates: Sequence[str] = IDIA_TEMPLATES,
    min_correct: int = 1,
) -> IdentityInferenceResult:
    """Run the attack on a CLIP-style model.

    `faces[subject]` are that subject's face images (renderings the edit did not train on);
    `candidates` maps candidate id -> name (every subject plus any distractor names).
    """
    was_training = model.training
    model.eval()
    try:
        ids = list(candidates)
        name_embeds = [
            encode_texts(model, tokenizer, [t.format(candidates[c]) for c in ids]) for t in templates
        ]
        image_embeds = {s: encode_images(model, pixel_values, list(imgs)) for s, imgs in faces.items()}
    finally:
        model.train(was_training)
    return idia_from_embeddings(image_embeds, name_embeds, ids, min_correct)
