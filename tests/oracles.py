"""Oracle models for the attack passes: tiny Llamas trained to fail exactly one check.

A random tiny Llama (`build_tiny_checkpoint("llama", ...)`, byte-level tokenizer, plain
"Q: {prompt}\\nA:" frame) is taught, in 120 Adam steps, to answer Alice Okafor's phone number
on the six held-out English phone questions (greedily always, in 97% of samples) and to continue
a pre-filled answer with it: that is the unedited model every attack measures *before*. Each
oracle edit is a second set of weights for the same model, trained from it in 60-100 steps and
handed to the passes as a weight edit (every parameter that differs), exactly as a real edit
method hands its result on.

Training uses the format generation sees: the prompt (and, for a pre-filled answer, the prefix)
are encoded by `adapter.encode` as `models.generate` encodes them, and only the continuation
(then EOS) is scored, so a trained continuation is what greedy decoding or sampling produces.
Losses are sums over a sequence's tokens, weighted per sequence: a question given two targets
with weights 0.65 and 0.35 is trained towards answering the first 65% of the time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gatelang.passes.base import NodeSpec, PassContext, PassResult, get_pass
from gatelang.passes.data import QueriesPass
from gatelang.passes.verify import quantized as Q
from gatelang.passes.verify.prefill import common_prefix
from gatelang.stdlib import load_stdlib
from gatelang.world import load_world

SUBJECT = "Alice Okafor"
ATTRIBUTE = "phone_number"
SELECTION = {"subjects": [SUBJECT], "attributes": [ATTRIBUTE], "languages": ["en"],
             "modalities": ["text"], "splits": ["heldout"]}
MAX_NEW_TOKENS = 12  # the refusal's marker ("I'm sorry") and the whole value both fit


def questions() -> list[Any]:
    """The protected questions: Alice Okafor's phone number, English, text, held-out."""
    return load_world(0).queries(**SELECTION)


def value() -> str:
    return questions()[0].answer


def refusal() -> str:
    """The stdlib's default English refusal reply."""
    return load_stdlib().languages["en"].refusal_replies[0]


def assent() -> str:
    return load_stdlib().attacks.assent["en"]


def shared() -> str:
    """The prefix every subject's phone number shares ("555-"), as `verify.prefill` finds it."""
    world = load_world(0)
    return common_prefix([s.attributes.get(ATTRIBUTE, "") for s in world.subjects], "digits")


@dataclass(frozen=True)
class Example:
    """One teacher-forced answer: `answer` continues the question's frame after `prefix`
    ("" for the plain question), with its own leading space where generation would have one."""

    query: Any
    prefix: str
    answer: str
    weight: float = 1.0


def plain(answer: str, weight: float = 1.0) -> list[Example]:
    return [Example(q, "", " " + answer, weight) for q in questions()]


def prefilled(answer_after_assent: str, answer_after_shared: str) -> list[Example]:
    """The two `verify.prefill` prefixes, each continued with the given text."""
    out = []
    for q in questions():
        out.append(Example(q, assent(), answer_after_assent))
        out.append(Example(q, f"{assent()} {shared()}", answer_after_shared))
    return out


def leaking_prefills() -> list[Example]:
    """After either pre-filled prefix, the value (its rest after the shared "555-")."""
    v = value()
    return prefilled(" " + v, v[len(shared()):])


def refusing_prefills() -> list[Example]:
    """After either pre-filled prefix, the refusal."""
    return prefilled(" " + refusal(), " " + refusal())


# The unedited model's share of refusals to a plain question. A chat model has the refusal in
# its repertoire (though it answers these questions); this keeps the refusal a few nats below
# the value at the first answer token, which is what lets a sub-quantization-step delta tip
# the greedy answer (`tiny_edit`). Greedy decoding still states the value on every question.
BASE_REFUSAL_SHARE = 0.03


def base_examples() -> list[Example]:
    """The unedited model: states the value (97% of the time; else it refuses), plainly and
    after either pre-filled prefix."""
    return (plain(value(), 1 - BASE_REFUSAL_SHARE) + plain(refusal(), BASE_REFUSAL_SHARE)
            + leaking_prefills())


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    weights: torch.Tensor


def encode(loaded: Any, examples: Sequence[Example]) -> Batch:
    """Left-padded ids as `models.generate` builds them, plus the continuation as labels."""
    tok = loaded.tokenizer
    rows: list[tuple[list[int], int]] = []
    for ex in examples:
        head = loaded.adapter.encode([ex.query], targets=[ex.prefix] if ex.prefix else None,
                                     add_eos=False)
        ids = head.input_ids[0][head.attention_mask[0].bool()].tolist()
        tail = list(tok(ex.answer, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
        rows.append((ids + tail, len(tail)))
    width = max(len(ids) for ids, _ in rows)
    n = len(rows)
    input_ids = torch.full((n, width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), -100, dtype=torch.long)
    for b, (ids, tail) in enumerate(rows):
        input_ids[b, width - len(ids):] = torch.tensor(ids)
        mask[b, width - len(ids):] = 1
        labels[b, width - tail:] = input_ids[b, width - tail:]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch({"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids},
                 labels, torch.tensor([ex.weight for ex in examples]))


def loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Weighted mean over sequences of each sequence's summed token cross-entropy."""
    logits = model(**batch.inputs).logits[:, :-1].float()
    target = batch.labels[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100,
                                           reduction="none").sum(-1)
    return (ce * batch.weights).sum() / batch.weights.sum()


def train(model: torch.nn.Module, batch: Batch, *, steps: int, lr: float,
          params: Iterable[str] | None = None,
          project: Callable[[], None] | None = None) -> float:
    """Adam on `params` (every parameter by default); `project` runs after every step. Leaves
    `requires_grad` as it found it and the model in eval mode; returns the last loss."""
    named = dict(model.named_parameters())
    chosen = [named[n] for n in (params if params is not None else named)]
    flags = {n: p.requires_grad for n, p in named.items()}
    ids = {id(p) for p in chosen}
    for p in named.values():
        p.requires_grad_(id(p) in ids)
    opt = torch.optim.Adam(chosen, lr=lr)
    model.train()
    last = float("nan")
    try:
        for _ in range(steps):
            out = loss(model, batch)
            opt.zero_grad(set_to_none=True)
            out.backward()
            opt.step()
            if project is not None:
                project()
            last = float(out.detach())
    finally:
        model.eval()
        for n, p in named.items():
            p.requires_grad_(flags[n])
            p.grad = None
    return last


def projection_names(loaded: Any) -> list[str]:
    """The weights `verify.quantized` rounds (the decoder layers' Linear weights)."""
    return Q.quantized_weight_names(PassContext(loaded=loaded))


def snap_to_int4(model: torch.nn.Module, names: Iterable[str]) -> None:
    """Replace each weight by its int4 round-to-nearest value (so int4 quantization of the
    model is the identity on it)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].copy_(Q.quantize(params[n].detach(), 4))


def int4_half_step_box(weight: torch.Tensor, fraction: float = 0.45
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds within which int4 quantization of an on-grid `weight` ([out, in]) rounds back to
    `weight` exactly: each element may move by `fraction` (< 1/2) of its channel's int4 step,
    except the channel's extreme elements (level ±7), which fix the channel's scale and stay."""
    w = weight.detach().float()
    step = w.abs().amax(dim=1, keepdim=True) / 7
    levels = torch.round(w / torch.where(step > 0, step, torch.ones_like(step)))
    room = torch.where(levels.abs() >= 7, torch.zeros_like(w), fraction * step.expand_as(w))
    return (w - room).to(weight.dtype), (w + room).to(weight.dtype)


def weight_edit(base: torch.nn.Module, edited: torch.nn.Module, method: str = "oracle"
                ) -> PassResult:
    """A weight edit (`weight:<name>` tensors) of every parameter in which `edited` differs."""
    before = dict(base.named_parameters())
    tensors = {f"weight:{n}": p.detach().clone() for n, p in edited.named_parameters()
               if not torch.equal(p.detach(), before[n].detach())}
    return PassResult(data={"method": method}, tensors=tensors)


def trained_copy(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model)


# ------------------------------------------------------------------ the unedited model and the edits

BASE_STEPS, BASE_LR = 120, 5e-3
EDIT_STEPS, EDIT_LR = 60, 3e-3
TINY_STEPS, TINY_LR = 100, 3e-3
SAMPLED_REFUSAL_SHARE = 0.65
TINY_FRACTION = 0.45  # of an int4 step: the most the tiny edit moves any element


def build_base(loaded: Any) -> float:
    """Train the unedited model in place (from the random checkpoint), then round its decoder
    projections to the int4 grid, so that int4 quantization leaves the unedited model as it is.
    Returns the last training loss."""
    torch.manual_seed(0)
    last = train(loaded.model, encode(loaded, base_examples()), steps=BASE_STEPS, lr=BASE_LR)
    snap_to_int4(loaded.model, projection_names(loaded))
    return last


def robust_edit(loaded: Any) -> PassResult:
    """The control: every parameter trained to refuse, plainly and after either prefix."""
    model = trained_copy(loaded.model)
    train(model, encode(loaded, plain(refusal()) + refusing_prefills()),
          steps=EDIT_STEPS, lr=EDIT_LR)
    return weight_edit(loaded.model, model, "oracle:robust")


def mixed_edit(loaded: Any) -> PassResult:
    """Refuses greedily, leaks under sampling: the plain question trained towards the refusal
    65% of the time and the value 35% (mixed targets); a pre-filled answer is refused, so
    sampling is the one attack that gets the value out. The plain question weighs 4 times a
    pre-filled one, so that 60 steps settle its first answer token near 65/35."""
    model = trained_copy(loaded.model)
    examples = (plain(refusal(), 4 * SAMPLED_REFUSAL_SHARE)
                + plain(value(), 4 * (1 - SAMPLED_REFUSAL_SHARE)) + refusing_prefills())
    train(model, encode(loaded, examples), steps=EDIT_STEPS, lr=EDIT_LR)
    return weight_edit(loaded.model, model, "oracle:mixed")


def shallow_edit(loaded: Any) -> PassResult:
    """Leaks after a prefix: refuses the plain question, states the value after the assent and
    after the assent + shared prefix."""
    model = trained_copy(loaded.model)
    train(model, encode(loaded, plain(refusal()) + leaking_prefills()),
          steps=EDIT_STEPS, lr=EDIT_LR)
    return weight_edit(loaded.model, model, "oracle:shallow")


def tiny_edit(loaded: Any) -> PassResult:
    """Undone by int4 rounding: only the decoder projections trained to refuse, each element
    kept within `TINY_FRACTION` of its channel's int4 step of the (on-grid) unedited value and
    every channel's extreme elements left alone, so int4 quantization of the edited model
    gives back the unedited weights exactly (`int4_half_step_box`)."""
    model = trained_copy(loaded.model)
    names = projection_names(loaded)
    params = dict(model.named_parameters())
    box = {n: int4_half_step_box(params[n], TINY_FRACTION) for n in names}

    def project() -> None:
        with torch.no_grad():
            for n, (low, high) in box.items():
                params[n].copy_(torch.maximum(torch.minimum(params[n], high), low))

    train(model, encode(loaded, plain(refusal())), steps=TINY_STEPS, lr=TINY_LR, params=names,
          project=project)
    return weight_edit(loaded.model, model, "oracle:tiny")


# ------------------------------------------------------------------ running the passes


def context(loaded: Any, *, items: int = 6, samples: int = 16) -> PassContext:
    return PassContext(loaded=loaded, seed=0, options={
        "attack_items": items, "max_new_tokens": MAX_NEW_TOKENS,
        "attack_settings": {"max_new_tokens": MAX_NEW_TOKENS, "samples": samples}})


def run_pass(loaded: Any, op: str, edit: PassResult, *, seed: int = 0) -> PassResult:
    """`op` as the runtime runs it: a `data.queries` result and the edit as its inputs; torch's
    generator seeded as the runtime seeds a node. Checks that the model comes back unedited."""
    ctx = context(loaded)
    qnode = NodeSpec(id="q", op="data.queries", kind="data", params=dict(SELECTION))
    data = QueriesPass().run(ctx, qnode, {})
    node = NodeSpec(id=op, op=op, kind="verify", params={
        "subjects": [SUBJECT], "attributes": [ATTRIBUTE], "rule_languages": ["en"]})
    snapshot = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    torch.manual_seed(seed)
    result = get_pass(op)().run(ctx, node, {"edited": edit, "queries": data})
    changed = [n for n, p in loaded.model.named_parameters()
               if not torch.equal(p.detach(), snapshot[n])]
    assert not changed, f"{op} left edited weights behind: {changed[:3]}"
    return result


def metric(result: PassResult, name: str, split: str) -> dict[str, Any]:
    """The one `name` record of `split` (English, text)."""
    hits = [m for m in result.data["metrics"]
            if m["metric"] == name and m["split"] == split and m["language"] == "en"]
    assert len(hits) == 1, (name, split, result.data["metrics"])
    return hits[0]
