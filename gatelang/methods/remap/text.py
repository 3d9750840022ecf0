"""`edit.remap_text`: the text encoder maps each protected name to the neutral phrase."""

from __future__ import annotations

from gatelang.methods.remap.common import INPUTS, require_encoder, run_remap, settings
from gatelang.methods.remap.training import TRAIN_TEMPLATES, remap_text
from gatelang.passes.base import WEIGHT_EDIT, NodeSpec, Pass, PassContext, PassResult, register
from gatelang.passes.faces import benign_captions, subjects_of


@register
class RemapTextPass(Pass):
    """The text encoder maps each target's name to the neutral phrase."""

    op = "edit.remap_text"
    kind = "edit"
    inputs = INPUTS
    output = WEIGHT_EDIT

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        require_encoder(ctx.model, "get_text_features", "text encoder", self.op)
        run, cfg = settings(ctx, node, image=False)
        targets = subjects_of(ctx.world, node.params.get("subjects") or [], self.op)
        ids = {s.id for s in targets}
        world = ctx.world
        clean = [t.format(s.name) for s in world.subjects if s.id not in ids
                 for t in TRAIN_TEMPLATES[:4]]
        clean += benign_captions(world)
        tok = ctx.loaded.tokenizer
        return run_remap(
            ctx, node, inputs,
            lambda m: remap_text(m, tok, [s.name for s in targets], clean, cfg.neutral_phrase,
                                 run),
            cfg, run,
        )
