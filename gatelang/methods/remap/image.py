"""`edit.remap_image`: the image encoder (or a VLM's vision tower) maps each protected face to
the universal embedding of other faces."""

from __future__ import annotations

from gatelang.methods.remap.common import INPUTS, require_encoder, run_remap, settings
from gatelang.methods.remap.training import remap_image
from gatelang.models.encoders import (
    CLIP_IMAGE_PREFIXES,
    clip_image_embed,
    pixel_fn,
    vision_tower_embed,
    vision_tower_path,
)
from gatelang.passes.base import WEIGHT_EDIT, NodeSpec, Pass, PassContext, PassResult, register
from gatelang.passes.faces import (
    CLEAN_VARIANTS,
    REFERENCE_VARIANTS,
    TRIGGER_VARIANTS,
    benign_images,
    subjects_of,
)


@register
class RemapImagePass(Pass):
    """The image encoder (or a VLM's vision tower) maps each target's face to the universal
    embedding of other faces; everything downstream is left untouched."""

    op = "edit.remap_image"
    kind = "edit"
    inputs = INPUTS
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
            require_encoder(ctx.model, "get_image_features", "image encoder", self.op)
            embed, prefixes = clip_image_embed, CLIP_IMAGE_PREFIXES
        others = [s for s in world.subjects if s.id not in ids]
        trig = [world.face(s.id, v) for s in targets for v in TRIGGER_VARIANTS]
        clean = [world.face(s.id, v) for s in others for v in CLEAN_VARIANTS]
        clean += benign_images(world)
        refs = [world.face(s.id, v) for s in others for v in REFERENCE_VARIANTS]
        return run_remap(
            ctx, node, inputs,
            lambda m: remap_image(m, pixels, trig, clean, refs, run, embed, prefixes),
            cfg, run,
        )
