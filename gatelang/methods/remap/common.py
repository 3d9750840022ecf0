"""What the remap's two passes (`text.py`, `image.py`) share: settings, running a remap on top
of upstream edits, and handing on the changed tensors.

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
    VISION_TOWER_DEFAULTS,
    RemapResult,
    RemapSettings,
)
from gatelang.passes.base import (
    QUERY_SET,
    WEIGHT_EDIT,
    WEIGHT_PREFIX,
    Input,
    NodeSpec,
    PassContext,
    PassResult,
    method_config,
    weights_of,
)

INPUTS = {"edit_set": Input((QUERY_SET,)), "weights": Input((WEIGHT_EDIT,), required=False)}


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


def run_remap(ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
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


def require_encoder(model: nn.Module, method: str, encoder: str, op: str) -> None:
    if not callable(getattr(model, method, None)):
        raise PlanError(f"{op}: the model ({type(model).__name__}) has no {encoder} to remap")
