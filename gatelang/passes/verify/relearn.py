"""`verify.relearn`: the protected questions after a short fine-tune on unrelated data.

A few fine-tuning steps on data that does not contain the forgotten facts bring most of them
back when an edit only suppresses them (arXiv 2410.08827, 2409.18025): the knowledge is still in
the weights, and any update that disturbs the suppression releases it. Whoever can fine-tune a
released model gets that for free.

The training set holds none of the protected facts: other subjects' facts (world queries about
subjects outside the node's `subjects`, every attribute, the rules' languages, the edit split,
with their true answers as teacher-forced targets; a row whose answer equals a protected
subject's value is dropped too, so a shared value is never rehearsed) mixed with the world's
utility tasks (edit split, the rules' languages). Each batch takes ceil(batch/2) fact rows and
the rest utility rows, from pools shuffled with the run's seed, so `before` and `after` train
on exactly the same batches. Trained: the weights and biases of every Linear/Conv1D in the
decoder's layers (attention and MLP projections); embeddings, norms, `lm_head` and the vision
tower stay frozen. Adam (`relearn_lr`), `relearn_steps` steps of `relearn_batch` rows, mean
token NLL of the answer span; the model stays in eval mode (no dropout).

`after` fine-tunes the edited model, then asks the protected questions greedily; every trained
tensor is copied back exactly (checked). `before` is the unedited model's plain greedy answers:
relearning a model that never forgot measures nothing, and it would double the attack's cost.
With no edit (an audit) the unedited model itself is fine-tuned, so `audit --attacks` shows
what relearning does to it. Rows per question under split `relearn`; the training losses are
in the pass data (`relearn`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch

from gatelang.errors import PlanError
from gatelang.measure import EvalItem, ItemResult
from gatelang.measure.verification import evaluate_items
from gatelang.passes.base import NodeSpec, PassContext, PassResult, register, weights_of
from gatelang.passes.edit_set import as_item, encode
from gatelang.passes.tensors import forward_logits, freeze, per_row_nll, restore_grad
from gatelang.passes.verify.answers import judged_answers
from gatelang.passes.verify.attack import AttackCheck, row
from gatelang.passes.verify.quantized import decoder_projections

SPLIT = "relearn"


def _norm(value: str) -> str:
    return " ".join(str(value).split()).casefold()


def protected_subjects(ctx: PassContext, node: NodeSpec) -> set[str]:
    """The ids of the node's subjects (names or ids in the plan)."""
    return {ctx.world.subject(s).id for s in node.params.get("subjects") or []}


def _languages(ctx: PassContext, node: NodeSpec) -> list[str]:
    return [str(x) for x in node.params.get("rule_languages") or ctx.world.languages]


def training_pools(ctx: PassContext, node: NodeSpec, items: Sequence[EvalItem] = ()
                   ) -> tuple[list[Any], list[Any]]:
    """(fact queries, utility tasks) the relearning fine-tune draws from, in a stable order.

    Facts are about subjects outside the node's `subjects` only, text questions only, and rows
    whose answer equals any protected value (the protected subjects' answers to the node's
    attributes in every modality, and the protected items' values) are left out.
    """
    protected = protected_subjects(ctx, node)
    if not protected:
        raise PlanError(f"{node.op}: the node names no subjects, so nothing is known to be "
                        "unrelated to the protected facts")
    languages = _languages(ctx, node)
    attributes = node.params.get("attributes") or None
    secrets = {_norm(q.answer) for q in ctx.world.queries(
        subjects=sorted(protected), attributes=attributes, languages=languages)}
    secrets |= {_norm(it.expected) for it in items}
    secrets |= {_norm(v) for it in items for v, _ in it.also}
    others = [s.id for s in ctx.world.subjects if s.id not in protected]
    # Text rows only: the relearning signal is the same, and image rows (hundreds of image
    # tokens on a real VLM) would multiply the attack's cost for nothing it measures.
    facts = [q for q in ctx.world.queries(subjects=others, languages=languages, splits=["edit"],
                                          modalities=["text"])
             if q.subject_id not in protected and _norm(q.answer) not in secrets]
    utility = [q for q in ctx.world.utility_tasks(languages=languages)
               if q.split == "edit" and q.image is None]
    return facts, utility


def schedule(facts: Sequence[Any], utility: Sequence[Any], steps: int, batch: int,
             seed: int) -> list[list[Any]]:
    """`steps` batches of `batch` rows: ceil(batch/2) facts, the rest utility tasks (all facts
    when there are no utility tasks, all utility tasks when a policy protects every subject and
    leaves no unrelated fact), each pool shuffled once with `seed` and cycled."""
    if not facts and not utility:
        raise PlanError("verify.relearn: no unrelated facts or benign tasks to fine-tune on")
    rng = random.Random(seed)
    pools = [list(facts), list(utility)]
    for pool in pools:
        rng.shuffle(pool)
    n_facts = (math.ceil(batch / 2) if utility else batch) if facts else 0
    quota = (n_facts, batch - n_facts)
    cursor = [0, 0]
    out = []
    for _ in range(steps):
        rows = []
        for k, pool in enumerate(pools):
            for _ in range(quota[k]):
                rows.append(pool[cursor[k] % len(pool)])
                cursor[k] += 1
        out.append(rows)
    return out


def trained_parameters(ctx: PassContext) -> dict[str, torch.nn.Parameter]:
    """The decoder's attention and MLP projection weights and biases, by parameter name."""
    out: dict[str, torch.nn.Parameter] = {}
    for name, mod in decoder_projections(ctx):
        for pname, p in mod.named_parameters(recurse=False):
            out[f"{name}.{pname}"] = p
    return out


def relearn_and_ask(ctx: PassContext, items: list[EvalItem], batches: list[list[Any]],
                    lr: float) -> tuple[list[ItemResult], list[float]]:
    """Fine-tune on `batches`, ask `items` greedily, then copy every trained tensor back.

    Returns the judged answers and the loss of each step.
    """
    model = ctx.model
    params = trained_parameters(ctx)
    saved = {n: p.detach().clone() for n, p in params.items()}
    flags = freeze(model)
    losses: list[float] = []
    try:
        for p in params.values():
            p.requires_grad_(True)
        opt = torch.optim.Adam(list(params.values()), lr=lr)
        for rows in batches:
            batch = encode(ctx, [as_item(q) for q in rows], [q.answer for q in rows],
                           [False] * len(rows))
            with torch.enable_grad():
                loss = per_row_nll(forward_logits(model, batch), batch.labels).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        del opt
        for p in params.values():
            p.requires_grad_(False)
        results = evaluate_items(ctx.loaded, items, max_new_tokens=ctx.options.max_new_tokens)
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.grad = None
                p.copy_(saved[n])
        restore_grad(model, flags)
    changed = [n for n, p in params.items() if not torch.equal(p.detach(), saved[n])]
    if changed:
        raise RuntimeError(f"verify.relearn did not restore {changed[0]!r}")
    return results, losses


def _summary(losses: list[float]) -> dict[str, Any]:
    return {"loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None}


@register
class VerifyRelearn(AttackCheck):
    op = "verify.relearn"
    check = "relearn"

    def run(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult]) -> PassResult:
        self.log: dict[str, Any] = {}
        result = super().run(ctx, node, inputs)
        result.data["relearn"] = self.log
        return result

    def attack(self, ctx: PassContext, node: NodeSpec, inputs: dict[str, PassResult],
               items: list[EvalItem], known: dict[str, bool], cfg: dict[str, Any]
               ) -> list[dict[str, Any]]:
        facts, utility = training_pools(ctx, node, items)
        batches = schedule(facts, utility, int(cfg["relearn_steps"]), int(cfg["relearn_batch"]),
                           ctx.seed)
        lr = float(cfg["relearn_lr"])
        losses: list[list[float]] = []

        def measure() -> list[ItemResult]:
            results, step_losses = relearn_and_ask(ctx, items, batches, lr)
            losses.append(step_losses)
            return results

        weights = weights_of(inputs)
        if weights:
            before = judged_answers(ctx, items)  # the plain answers `known` already decoded
            with ctx.edited_weights(weights):
                after = measure()
        else:
            before = after = measure()
        trained_on = [q for rows in batches for q in rows]
        self.log = {
            "steps": len(batches), "batch": int(cfg["relearn_batch"]), "lr": lr,
            "rows": len(trained_on), "fact_rows": sum(1 for q in trained_on if q.subject_id),
            "utility_rows": sum(1 for q in trained_on if not q.subject_id),
            "subjects": sorted({q.subject_id for q in trained_on if q.subject_id}),
            "loss": _summary(losses[-1]),
        }
        return [row(item, SPLIT, before=b, after=a, known=known[item.id])
                for item, b, a in zip(items, before, after, strict=True)]
