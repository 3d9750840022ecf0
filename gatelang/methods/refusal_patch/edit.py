"""`edit.refusal_patch`: rewrite a few last-layer MLP units to refuse and to forget the values.

The pass builds the training rows from the edit split (`data.build_rows`), runs the unedited
model once over them to cache the states the last layer's MLP reads (`algorithm.cache_states`;
with `tamper_copies`, also a tampered copy of the model, `algorithm.tampered_states`), picks
the least active units, trains them on the cache (`algorithm.train_patch`), and hands on the
new values of the layer's input and down projections as ``weight:<name>`` tensors (upstream
edits included). The model is left as it was found.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from gatelang.errors import PlanError
from gatelang.methods.neural_gate.edit import EDIT_INPUTS
from gatelang.methods.refusal_patch.algorithm import (
    Cache,
    PatchResult,
    Weights,
    cache_states,
    merge_caches,
    tampered_states,
    thin,
    train_patch,
    write_units,
)
from gatelang.methods.refusal_patch.config import TRAIN_PREFIXES, RefusalPatchConfig, unit_count
from gatelang.methods.refusal_patch.data import KINDS, Row, build_rows, secret_of, tamper_batches
from gatelang.methods.refusal_patch.search import search
from gatelang.passes.base import (
    WEIGHT_EDIT,
    WEIGHT_PREFIX,
    NodeSpec,
    Pass,
    PassContext,
    PassResult,
    method_config,
    register,
    weights_of,
)
from gatelang.passes.data import required_edit_queries


def _encode_answers(ctx: PassContext, queries: Sequence[Any]) -> Any:
    enc = ctx.loaded.adapter.encode(list(queries), [q.answer for q in queries])
    return enc.to(ctx.loaded.device, ctx.loaded.dtype)


def patch_layer(cfg: RefusalPatchConfig, num_layers: int) -> int:
    """The layer the patch rewrites: the last one (`auto`), or the configured one if it is."""
    last = num_layers - 1
    if cfg.layer == "auto":
        return last
    if int(cfg.layer) != last:
        raise PlanError(f"edit.refusal_patch: layer {cfg.layer} is not the last decoder layer "
                        f"({last}); the patch is trained on cached last-layer states, which is "
                        "exact only there (use `layer auto`)")
    return last


def reply_languages(ctx: PassContext, cfg: RefusalPatchConfig, queries: Sequence[Any]
                    ) -> list[list[str]]:
    """The languages the refusal target is written in, in groups: the rule's, then (`model`)
    the model's other languages; [] for the question's own."""
    if cfg.reply_languages == "question":
        return []
    rule = list(dict.fromkeys(q.language for q in queries))
    if cfg.reply_languages == "rule":
        return [rule]
    return [rule, [c for c in ctx.loaded.adapter.languages() if c not in rule]]


def loss_weights(cfg: RefusalPatchConfig) -> Weights:
    # the language term only means something when each question has its own language's reply
    language = cfg.language_weight if cfg.reply_languages == "question" else 0.0
    return Weights(refuse=cfg.refusal_weight, hard=cfg.hard_weight, language=language, value=cfg.value_weight,
                   value_loss=cfg.value_loss, npo_beta=cfg.npo_beta,
                   retain=cfg.retain_weight, locality=cfg.locality_weight, margin=cfg.margin,
                   key_decay=cfg.key_decay)


DATA_KEYS = ("prefixes", "refusal_tokens", "reply_languages", "retain_other_subjects",
             "retain_same_subject", "retain_utility", "tamper_copies", "tamper_steps",
             "tamper_lr", "layer", "margin_tokens", "other_values", "contexts", "start_weight",
             "value_tokens", "hard_negatives", "easy_tokens", "fresh_images", "reply_head", "reply_order")


def patch_cache(ctx: PassContext, cfg: RefusalPatchConfig, queries: Sequence[Any], *,
                exclude: Sequence[Any] = (), progress: Any = None) -> tuple[Cache, list[Row]]:
    """The training rows and the cached states they are trained on (the unedited model's, then
    each tampered copy's). Depends only on the `DATA_KEYS` of the config, so a configuration
    search reuses it across the training settings."""
    if not queries:
        raise PlanError("edit.refusal_patch: the edit set is empty")
    layer = patch_layer(cfg, ctx.loaded.adapter.num_layers)
    rows = build_rows(ctx.world, ctx.stdlib, queries, prefixes=TRAIN_PREFIXES,
                      n_prefixes=cfg.prefixes, refusal_tokens=cfg.refusal_tokens,
                      reply_languages=reply_languages(ctx, cfg, queries),
                      other_subjects=cfg.retain_other_subjects,
                      same_subject=cfg.retain_same_subject, utility=cfg.retain_utility,
                      other_values=cfg.other_values, contexts=cfg.contexts,
                      start_weight=cfg.start_weight, value_tokens=cfg.value_tokens,
                      hard=cfg.hard_negatives, fresh_images=cfg.fresh_images,
                      reply_head=cfg.reply_head,
                      shortest_first=cfg.reply_order == "shortest",
                      exclude=exclude)
    update = (lambda n: progress.update(n)) if progress is not None else None
    caches = [cache_states(ctx.loaded, layer, rows, progress=update,
                           all_tokens=cfg.margin_tokens == "all")]
    for c in range(cfg.tamper_copies):
        batches = tamper_batches(ctx.world, queries, steps=cfg.tamper_steps, batch=8,
                                 seed=ctx.seed * 1000 + c)
        # every refusal and value row, a third of the retain rows: a tampered copy is there to
        # keep the units firing where they must, at a third of the cost of a full copy
        sub = [r for i, r in enumerate(rows) if r.kind != "retain" or i % 3 == c % 3]
        caches.append(tampered_states(ctx.loaded, layer, sub, batches, lr=cfg.tamper_lr,
                                      encode=lambda qs: _encode_answers(ctx, qs),
                                      all_tokens=cfg.margin_tokens == "all"))
    return thin(merge_caches(caches), cfg.easy_tokens), rows


def patch_train(ctx: PassContext, cfg: RefusalPatchConfig, cache: Cache, secrets: int
                ) -> tuple[dict[str, torch.Tensor], PatchResult]:
    """Train the units on a cache; returns (parameter name -> new value, the result)."""
    adapter = ctx.loaded.adapter
    layer = patch_layer(cfg, adapter.num_layers)
    k = unit_count(cfg, secrets, adapter.num_layers * adapter.intermediate_size)
    result = train_patch(ctx.loaded, ctx.stdlib, layer, cache, k, steps=cfg.steps, lr=cfg.lr,
                         weights=loss_weights(cfg), seed=ctx.seed, minibatch=cfg.minibatch,
                         init=cfg.init)
    return write_units(adapter, layer, result.units, result.part), result


def refusal_patch(ctx: PassContext, cfg: RefusalPatchConfig, queries: Sequence[Any], *,
                  exclude: Sequence[Any] = (), progress: Any = None,
                  caches: dict[tuple[Any, ...], tuple[Cache, list[Row]]] | None = None,
                  ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train a patch for the protected `queries` (edit split) on the current model weights.

    Returns (parameter name -> new value, summary). `exclude` are queries whose templates the
    retain rows must not use (a selection split held out for choosing a configuration).
    `caches` keeps the cached states between calls on the same queries (a configuration
    search), keyed by the settings they depend on (`DATA_KEYS`).
    """
    t0 = time.perf_counter()
    key = tuple(getattr(cfg, k) for k in DATA_KEYS)
    if caches is not None and key in caches:
        cache, rows = caches[key]
    else:
        cache, rows = patch_cache(ctx, cfg, queries, exclude=exclude, progress=progress)
        if caches is not None:
            caches[key] = (cache, rows)
    t_cache = time.perf_counter() - t0
    secrets = len({secret_of(q) for q in queries})
    new, result = patch_train(ctx, cfg, cache, secrets)
    summary = {
        "layer": patch_layer(cfg, ctx.loaded.adapter.num_layers),
        "units": [int(u) for u in result.units],
        "units_selected": len(result.units),
        "secrets": secrets,
        "rows": {kind: sum(1 for r in rows if r.kind == kind) for kind in KINDS},
        "positions": {kind: int((cache.kind == i).sum()) for i, kind in enumerate(KINDS)},
        "margin_tokens": int(cache.local_x.shape[0]),
        "tamper_copies": cfg.tamper_copies,
        "factored_head": result.factored,
        "loss_first": result.losses[0] if result.losses else None,
        "loss_last": result.losses[-1] if result.losses else None,
        "seconds_cache": round(t_cache, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return new, summary


@register
class RefusalPatchEdit(Pass):
    op = "edit.refusal_patch"
    kind = "edit"
    inputs = EDIT_INPUTS
    output = WEIGHT_EDIT

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        cfg: RefusalPatchConfig = method_config(ctx, node)
        queries = required_edit_queries(ctx, node, inputs)
        upstream = weights_of(inputs)
        bar = ctx.progress(0, "edit: refusal_patch (caching states)")
        with ctx.edited_weights(upstream):
            if cfg.search == "off":
                new, summary = refusal_patch(ctx, cfg, queries, progress=bar)
            else:
                caches: dict[tuple[Any, ...], tuple[Cache, list[Row]]] = {}

                def train(c: RefusalPatchConfig, fit: Sequence[Any], select: Sequence[Any]
                          ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
                    return refusal_patch(ctx, c, fit, exclude=select, progress=bar,
                                         caches=caches)

                new, summary = search(ctx, cfg, queries, train,
                                      requirements=node.params.get("requirements", ()),
                                      progress=lambda text: bar.set_description(
                                          "edit: refusal_patch search, " + text)
                                      if hasattr(bar, "set_description") else None)
                if cfg.refit:
                    # The chosen configuration, trained again on every edit template: the
                    # held-out third generalises the patch as much as it measured it.
                    trace = summary["search"]
                    chosen = cfg.model_copy(update=trace["chosen_config"])
                    new, summary = refusal_patch(ctx, chosen, queries, progress=bar)
                    summary["search"] = {**trace, "refit": True}
        bar.close()
        tensors = {WEIGHT_PREFIX + k: v for k, v in upstream.items()}
        for name, value in new.items():
            tensors[WEIGHT_PREFIX + name] = value
        return PassResult(data={"method": str(node.params.get("method")), **summary},
                          tensors=tensors)
