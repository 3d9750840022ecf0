"""Backdoor-style unlearning of identities in encoders (`gate.remap_text`, `gate.remap_image`).

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
a predicate over parameter names. `remap_text` / `remap_image` wire it to CLIP-style models
(`get_text_features` / `get_image_features`); `vision_tower_embed` wires it to a VLM's vision
tower, whose feature sequence (not a pooled vector) is what the decoder sees.
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

Inputs = Mapping[str, torch.Tensor]
EmbedFn = Callable[[nn.Module, Inputs], torch.Tensor]

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
class RemapConfig:
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
IMAGE_DEFAULTS = RemapConfig(
    steps=100, lr=1e-4, target_weight=0.8, weight_decay_to_teacher=0.005,
    milestones=(0.25, 0.5), gamma=0.1,
)


# A VLM's vision tower: the decoder is sensitive to small feature changes, so training runs at
# full rate for most of the steps (x0.1 at 75%), with the scale-aware loss.
VISION_TOWER_DEFAULTS = RemapConfig(milestones=(0.75,), gamma=0.1, loss="nmse")


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


def _milestone_lr(config: RemapConfig, step: int) -> float:
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
    config: RemapConfig = RemapConfig(),
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
# CLIP-style models: the encoders exposed as `get_text_features` / `get_image_features`.


def _features(out: Any) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose pooler_output is the projected embedding."""
    if torch.is_tensor(out):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise RemapError(f"unexpected encoder output type {type(out).__name__}")
    return pooled


def clip_text_embed(model: nn.Module, inputs: Inputs) -> torch.Tensor:
    return _features(model.get_text_features(**inputs))


def clip_image_embed(model: nn.Module, inputs: Inputs) -> torch.Tensor:
    return _features(model.get_image_features(**inputs))


CLIP_TEXT_PREFIXES = ("text_model.", "text_projection.")
CLIP_IMAGE_PREFIXES = ("vision_model.", "visual_projection.")


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
    config: RemapConfig = RemapConfig(),
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
    config: RemapConfig = IMAGE_DEFAULTS,
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


def vision_tower_embed(tower_path: str, feature_layer: int = -2, drop_cls: bool = True) -> EmbedFn:
    """Embed with a VLM's vision tower: the hidden states at the layer the projector reads.

    LLaVA feeds `hidden_states[vision_feature_layer]` (minus the CLS token under the default
    strategy) to the projector, so that sequence is what must become anonymous.
    """

    def embed(model: nn.Module, inputs: Inputs) -> torch.Tensor:
        tower = model.get_submodule(tower_path)
        out = tower(inputs["pixel_values"], output_hidden_states=True)
        hidden = out.hidden_states[feature_layer]
        return hidden[:, 1:] if drop_cls else hidden

    return embed


@torch.no_grad()
def embedding_drift(
    before: torch.Tensor, after: torch.Tensor
) -> float:
    """Mean cosine similarity of clean inputs' embeddings before vs after (1.0 = unchanged)."""
    return float(-negative_cosine(after, before))


# ---------------------------------------------------------------------------------------------
# Plan passes. Data comes from the built-in world: the node names the subjects; their names,
# face renderings and the world's benign shapes make the trigger, target and clean sets.

from gatelang.errors import PlanError  # noqa: E402
from gatelang.passes.base import (  # noqa: E402
    WEIGHT_PREFIX,
    NodeSpec,
    Pass,
    PassContext,
    PassResult,
    register,
    weights_of,
)
from gatelang.passes.params import method_params  # noqa: E402

# Face renderings the passes use, disjoint from the world's queries (variants 0-5) and from
# identity inference's renderings, so verification sees pictures the edit never trained on.
TRIGGER_VARIANTS = tuple(range(100, 124))
CLEAN_VARIANTS = tuple(range(100, 108))
REFERENCE_VARIANTS = tuple(range(200, 202))
IDENTITY_VARIANTS = tuple(range(1000, 1010))


def pixel_fn(loaded: Any) -> Callable[[Sequence[Any]], torch.Tensor]:
    """Images -> the model's pixel tensor, through its own image processor."""
    proc = getattr(loaded, "processor", None)
    proc = getattr(proc, "image_processor", proc)
    if proc is None:
        raise PlanError(f"{getattr(loaded, 'name', 'the model')} has no image processor")

    def pixels(images: Sequence[Any]) -> torch.Tensor:
        rgb = [im.convert("RGB") for im in images]
        return proc(images=rgb, return_tensors="pt")["pixel_values"].to(loaded.device, loaded.dtype)

    return pixels


def subjects_of(ctx: PassContext, node: NodeSpec) -> list[Any]:
    names = node.params.get("subjects") or []
    if not names:
        raise PlanError(f"{node.op}: the rule names no subject")
    from gatelang.world import WorldError

    try:
        return [ctx.world.subject(str(n)) for n in names]
    except WorldError as exc:
        raise PlanError(f"{node.op}: {exc}") from None


def benign_captions(world: Any) -> list[str]:
    """Captions of the world's benign shapes: clean text that must keep its embedding."""
    util = world.stdlib.utility
    out = []
    for color in util["colors"]["en"]:
        out.append(f"a photo of a {color} shape")
        for shape in util["shapes"]["en"]:
            out += [f"a {color} {shape}", f"a photo of a {shape}", f"two {color} {shape}s"]
    return list(dict.fromkeys(out))


def benign_images(world: Any) -> list[Any]:
    seen, out = set(), []
    for q in world.utility_tasks(languages=["en"]):
        if q.image is not None and id(q.image) not in seen:
            seen.add(id(q.image))
            out.append(q.image)
    return out


def remap_config(ctx: PassContext, node: NodeSpec, image: bool) -> tuple[RemapConfig, dict[str, Any]]:
    """The method preset (stdlib `remap`) with the policy's overrides.

    Steps, lr and loss weights come from the policy for both encoders; the learning-rate
    schedule is the method's own per side (text: x0.5 at 50%/75%, image: x0.1 at 25%/50%;
    a VLM's vision tower: x0.1 at 75%, with the scale-aware loss).
    """
    p = method_params(ctx, "remap", node.params)
    tower = node.params.get("encoder") == "vision_tower"
    base = VISION_TOWER_DEFAULTS if tower else IMAGE_DEFAULTS if image else RemapConfig()
    seed = node.params.get("seed", ctx.seed)
    cfg = RemapConfig(
        steps=int(p.get("steps", base.steps)),
        lr=float(p.get("lr", base.lr)),
        target_weight=float(p.get("target_weight", base.target_weight)),
        weight_decay_to_teacher=float(p.get("weight_decay_to_teacher", base.weight_decay_to_teacher)),
        milestones=base.milestones, gamma=base.gamma,
        batch_size=int(p.get("batch_size", base.batch_size)),
        seed=seed if isinstance(seed, int) else int(ctx.seed),
        loss=str(p.get("loss") or base.loss),
    )
    return cfg, p


def _run_remap(
    ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
    fn: Callable[[nn.Module], RemapResult], p: dict[str, Any], cfg: RemapConfig,
) -> PassResult:
    """Run a remap on top of upstream edits; hand on upstream + changed tensors as weights."""
    upstream = weights_of(inputs)
    model = ctx.model
    params = dict(model.named_parameters())
    bar = ctx.progress(cfg.steps, node.label or node.op)
    with ctx.edited_weights(upstream):
        result = fn(model)
        bar.update(cfg.steps)
        changed = {n: params[n].detach().clone().cpu() for n in result.trained
                   if not torch.equal(params[n], result.start[n])}
        result.restore(model)  # passes leave the model as they found it
    bar.close()
    tensors = {WEIGHT_PREFIX + k: v for k, v in upstream.items()}
    tensors.update({WEIGHT_PREFIX + k: v for k, v in changed.items()})
    return PassResult(
        data={
            "method": "remap",
            "encoder": node.params.get("encoder"),
            "subjects": list(node.params.get("subjects", [])),
            "steps": cfg.steps, "lr": cfg.lr, "target_weight": cfg.target_weight,
            "weight_decay_to_teacher": cfg.weight_decay_to_teacher,
            "neutral_phrase": p.get("neutral_phrase"),
            "loss_first": result.first, "loss_last": result.last,
            "tensors_changed": sorted(changed),
            "params_changed": int(sum(v.numel() for v in changed.values())),
        },
        tensors=tensors,
    )


def _require(model: nn.Module, method: str, encoder: str, op: str) -> None:
    if not callable(getattr(model, method, None)):
        raise PlanError(f"{op}: the model ({type(model).__name__}) has no {encoder} to remap")


@register
class RemapTextPass(Pass):
    """`gate.remap_text`: the text encoder maps each target's name to the neutral phrase."""

    op = "gate.remap_text"
    kind = "gate"
    inputs = ("edit", "weights")
    outputs = ("weights",)

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        _require(ctx.model, "get_text_features", "text encoder", self.op)
        cfg, p = remap_config(ctx, node, image=False)
        targets = subjects_of(ctx, node)
        ids = {s.id for s in targets}
        world = ctx.world
        clean = [t.format(s.name) for s in world.subjects if s.id not in ids
                 for t in TRAIN_TEMPLATES[:4]]
        clean += benign_captions(world)
        tok = ctx.loaded.tokenizer
        return _run_remap(
            ctx, node, inputs,
            lambda m: remap_text(m, tok, [s.name for s in targets], clean,
                                 str(p.get("neutral_phrase", "a person")), cfg),
            p, cfg,
        )


def vision_tower_path(loaded: Any) -> str:
    """The vision tower's module path, from the adapter's vision-layer site."""
    adapter = getattr(loaded, "adapter", None)
    try:
        layer0 = adapter.site("vision_layer(0)").path  # e.g. model.vision_tower.encoder.layers.0
    except Exception as exc:  # the adapter raises ModelError for towerless models
        raise PlanError(f"{getattr(loaded, 'name', 'the model')} has no vision tower: {exc}") from None
    return layer0.split(".encoder.layers.")[0]


@register
class RemapImagePass(Pass):
    """`gate.remap_image`: the image encoder (or a VLM's vision tower) maps each target's face
    to the universal embedding of other faces; everything downstream is left untouched."""

    op = "gate.remap_image"
    kind = "gate"
    inputs = ("edit", "weights")
    outputs = ("weights",)

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        cfg, p = remap_config(ctx, node, image=True)
        targets = subjects_of(ctx, node)
        ids = {s.id for s in targets}
        world = ctx.world
        pixels = pixel_fn(ctx.loaded)
        if node.params.get("encoder") == "vision_tower":
            tower = vision_tower_path(ctx.loaded)
            cfg_model = ctx.model.config
            embed = vision_tower_embed(
                tower, int(getattr(cfg_model, "vision_feature_layer", -2)),
                getattr(cfg_model, "vision_feature_select_strategy", "default") == "default",
            )
            prefixes: tuple[str, ...] = (tower + ".",)
        else:
            _require(ctx.model, "get_image_features", "image encoder", self.op)
            embed, prefixes = clip_image_embed, CLIP_IMAGE_PREFIXES
        others = [s for s in world.subjects if s.id not in ids]
        trig = [world.face(s.id, v) for s in targets for v in TRIGGER_VARIANTS]
        clean = [world.face(s.id, v) for s in others for v in CLEAN_VARIANTS]
        clean += benign_images(world)
        refs = [world.face(s.id, v) for s in others for v in REFERENCE_VARIANTS]
        return _run_remap(
            ctx, node, inputs,
            lambda m: remap_image(m, pixels, trig, clean, refs, cfg, embed, prefixes),
            p, cfg,
        )
