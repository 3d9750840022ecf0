"""`edit.remap_text` and `edit.remap_image`: the remap's plan passes.

Data comes from the built-in world: the node names the subjects; their names, face renderings
and the world's benign shapes make the trigger, target and clean sets (`passes/faces.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gatelang.errors import PlanError
from gatelang.methods.remap.config import RemapConfig
from gatelang.methods.remap.training import (
    IMAGE_DEFAULTS,
    TRAIN_TEMPLATES,
    VISION_TOWER_DEFAULTS,
    RemapResult,
    RemapSettings,
    remap_image,
    remap_text,
)
from gatelang.models.encoders import (
    CLIP_IMAGE_PREFIXES,
    clip_image_embed,
    pixel_fn,
    vision_tower_embed,
    vision_tower_path,
)
from gatelang.passes.base import (
    QUERY_SET,
    WEIGHT_EDIT,
    WEIGHT_PREFIX,
    Input,
    NodeSpec,
    Pass,
    PassContext,
    PassResult,
    method_config,
    register,
    weights_of,
)
from gatelang.passes.faces import (
    CLEAN_VARIANTS,
    REFERENCE_VARIANTS,
    TRIGGER_VARIANTS,
    benign_captions,
    benign_images,
    subjects_of,
)

_INPUTS = {"edit_set": Input((QUERY_SET,)), "weights": Input((WEIGHT_EDIT,), required=False)}


def settings(ctx: PassContext, node: NodeSpec, image: bool) -> tuple[RemapSettings, RemapConfig]:
    """The policy's parameters with the schedule the method fixes per encoder (text: x0.5 at
    50%/75%; image: x0.1 at 25%/50%; a VLM's vision tower: x0.1 at 75%, scale-aware loss)."""
    cfg: RemapConfig = method_config(ctx, node)
    tower = node.params.get("encoder") == "vision_tower"
    base = VISION_TOWER_DEFAULTS if tower else IMAGE_DEFAULTS if image else RemapSettings()
    seed = node.params.get("seed", ctx.seed)
    run = RemapSettings(
        steps=cfg.steps, lr=cfg.lr, target_weight=cfg.target_weight,
        weight_decay_to_teacher=cfg.weight_decay_to_teacher,
        milestones=base.milestones, gamma=base.gamma, batch_size=cfg.batch_size,
        seed=seed if isinstance(seed, int) else int(ctx.seed),
        loss=base.loss if cfg.loss == "auto" else cfg.loss,
    )
    return run, cfg


def _run_remap(ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
               fn: Callable[[nn.Module], RemapResult], cfg: RemapConfig,
               run: RemapSettings) -> PassResult:
    """Run a remap on top of upstream edits; hand on upstream + changed tensors as weights."""
    upstream = weights_of(inputs)
    model = ctx.model
    params = dict(model.named_parameters())
    bar = ctx.progress(run.steps, node.label or node.op)
    with ctx.edited_weights(upstream):
        result = fn(model)
        bar.update(run.steps)
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
            "steps": run.steps, "lr": run.lr, "target_weight": run.target_weight,
            "weight_decay_to_teacher": run.weight_decay_to_teacher, "loss": run.loss,
            "neutral_phrase": cfg.neutral_phrase,
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
    """The text encoder maps each target's name to the neutral phrase."""

    op = "edit.remap_text"
    kind = "edit"
    inputs = _INPUTS
    output = WEIGHT_EDIT

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        _require(ctx.model, "get_text_features", "text encoder", self.op)
        run, cfg = settings(ctx, node, image=False)
        targets = subjects_of(ctx.world, node.params.get("subjects") or [], self.op)
        ids = {s.id for s in targets}
        world = ctx.world
        clean = [t.format(s.name) for s in world.subjects if s.id not in ids
                 for t in TRAIN_TEMPLATES[:4]]
        clean += benign_captions(world)
        tok = ctx.loaded.tokenizer
        return _run_remap(
            ctx, node, inputs,
            lambda m: remap_text(m, tok, [s.name for s in targets], clean, cfg.neutral_phrase,
                                 run),
            cfg, run,
        )


@register
class RemapImagePass(Pass):
    """The image encoder (or a VLM's vision tower) maps each target's face to the universal
    embedding of other faces; everything downstream is left untouched."""

    op = "edit.remap_image"
    kind = "edit"
    inputs = _INPUTS
    output = WEIGHT_EDIT

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        run, cfg = settings(ctx, node, image=True)
        targets = subjects_of(ctx.world, node.params.get("subjects") or [], self.op)
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
            lambda m: remap_image(m, pixels, trig, clean, refs, run, embed, prefixes),
            cfg, run,
        )
