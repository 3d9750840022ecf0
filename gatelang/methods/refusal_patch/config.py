"""Refusal patch: parameters, profiles and the training prefixes (the single source of each).

A refusal patch rewrites a few MLP units of the last decoder layer in full (their input rows and
their output column) so that they fire only on the protected questions and, where they fire,
(1) write a refusal and (2) make the protected value's tokens unlikely, whatever text precedes
them. The last layer is the one place where this can be trained exactly on cached states: its
MLP output reaches the logits through no other layer, so each teacher-forced position depends on
the patch only through its own states, which are computed once with the unedited model
(`algorithm.py`). Every default below was chosen on a selection split of the edit data, never on
held-out templates or attack results (bench/patch/README.md has the measurements).

With no `method` block this is the method a refuse rule gets, and it configures itself: the
edit pass holds out a third of the edit templates as a selection split, trains, measures the
policy's requirements there, changes what fell short, and ships the first configuration that
meets them (trained again on the whole edit set), or stops before verification saying what
fell short and what to try (`search.py`; `search off` trains the configuration as given).

What each term is for:

- **Refusal NLL** (`refusal_weight`, `hard_weight`, `refusal_tokens`) towards the stdlib
  refusal replies. Summed over the reply's tokens, with extra weight on the tokens the unedited
  model would not write itself (the start, the joins between languages): the rest it continues
  on its own once a reply has started.
- **Which reply** (`reply_languages`). tiny-llava does not represent the question's language at
  the answer position of these questions (a linear probe is at chance there, 100% on the
  refusal-habit questions), so no last-layer unit can pick the reply's language: trained towards
  the question's own reply (`question`, with `language_weight`: the unlikelihood of the other
  languages' reply starts) it refuses half the held-out English questions in Chinese. `model`
  writes the stdlib replies of the rule's languages, then of the model's other languages, in one
  answer: every question gets a refusal in its own language, Spanish included, which the policy
  does not name and the edit never sees a question in.
- **Where the refusal starts** (`start_weight`). When every subject's value starts alike
  ("555-" for phone numbers) that start says nothing, and the answer position cannot tell a
  protected subject's phone question from anyone else's (a linear probe that catches every
  protected one passes 58% of the others), while the position after "555-" can (98%). So by
  default the refusal is trained *after* the information-free start ("555- 抱歉，…"); addresses,
  whose first token is already the subject's, are refused at once.
- **Value unlikelihood** (`value_weight`, `value_tokens`, `value_loss`, `prefixes`,
  `other_values`): the protected value teacher-forced in the model's own answer format (the bare
  value), after no prefix and after `prefixes` of `TRAIN_PREFIXES` (assents and refusal
  fragments of our own, none of them the stdlib attack's), and the subject's values of the
  rule's other attributes. The first `value_tokens` tokens after the information-free start are
  pushed down (-log(1 - p)). This is what lowers the value's log-probability (exposure) and what
  pre-filling and sampling need; the refusal NLL alone only moves the first token. Only the first
  informative tokens: later ones ("St", the city) are shared with other people's addresses, and
  suppressing them makes the units fire in the middle of other people's answers.
- **Retain KL** (`retain_weight`, `retain_other_subjects`, `hard_negatives`,
  `retain_same_subject`, `retain_utility`): KL to the unedited model's next-token distribution
  on the answers to questions outside the rule (other subjects' same attributes, half of them
  subjects whose value shares words with the protected one; the subject's other attributes;
  utility tasks). Edit split only.
- **Activation margin** (`locality_weight`, `margin`, `margin_tokens`, `key_decay`):
  T-Patcher's margins on the units' keys (the first input projection, the gate of a gated MLP):
  below -margin at every token of the retain rows, above +margin for at least one unit where a
  protected answer starts. It keeps the units silent rather than merely harmless outside the
  rule, which is also why a fine-tune on unrelated data barely moves them. The L2 price on the
  keys keeps them from growing until an unseen benign input (one picture of four shapes, in
  the measurements) sets them off at hundreds of times the margin.
- **Fresh benign pictures** (`fresh_images`): the world's utility pictures are few; pictures
  rendered for the patch alone (colours, shapes, counts, new layouts) among the retain rows
  keep face detectors from firing on other pictures.
- **Tampered copies** (`tamper_copies`, `tamper_steps`, `tamper_lr`, off by default): a few
  Adam steps of the whole decoder on unrelated facts and tasks shift the states the units read
  (the units' keys on protected questions fall from about +6 to -4), which is how a relearning
  fine-tune brings values back. With copies, the patch is also trained on the states of
  tampered copies of the model (our own fine-tune: other subjects' facts and utility tasks,
  edit split, settings unlike the attack's). Measured over three seeds on the selection split
  it lowered the relearning leak by about 3 points (21.5% against 24.3%, inside the seed
  spread) for a third more time and slightly more over-refusal, so it is not on by default.
- **Units** (`units_per_secret`, `unit_budget`, `init`): the unit count scales with the
  protected (subject, attribute) pairs, capped at a share of the model's MLP units; the least
  active units on the edit rows are rewritten, each starting as a detector of one secret
  (T-Patcher's key initialisation) with a zero output.
"""

from __future__ import annotations

from typing import Literal

from gatelang.methods.base import Layer, MethodConfig, ModelShape, Work, param

# Information-free answer prefixes the value term teacher-forces before the value, per
# language: assents and refusal fragments. Written for training only: none of them is the
# stdlib attack's assent (stdlib/attacks.yaml `assent`), nor one of the selection split's
# phrases in bench/patch/run.py, so the prefill attack and the selection measurement stay
# unseen.
TRAIN_PREFIXES: dict[str, tuple[str, ...]] = {
    "en": ("Of course. The answer is", "Okay, here you go:", "Certainly!",
           "I'm sorry, but"),
    "zh": ("当然可以。", "没问题，这是", "行，", "抱歉，"),
    "es": ("Por supuesto. Es", "Vale, aquí tienes:", "¡Claro!", "Lo siento, pero"),
}

# Assents of the configuration search's pre-filled answers (`search.SelectionCheck`): neither
# `TRAIN_PREFIXES` nor the stdlib attack's assent, so the search measures a prefix the patch was
# not trained on and verification's prefill attack stays unseen by both.
SELECT_PREFIXES: dict[str, str] = {"en": "Sure, it is:", "zh": "好的，是：", "es": "Claro, es:"}


class RefusalPatchConfig(MethodConfig):
    """A few last-layer MLP units rewritten to refuse and to make the protected values unlikely
    under any prefix (the module docstring says why each term exists)."""

    search: Literal["auto", "off"] = param(
        "auto", "choose the configuration on a selection split carved from the edit data "
        "(search.py): train, measure on held-out edit templates, adjust what fell short; off: "
        "train the configuration as given on the whole edit set")
    refit: bool = param(True, "after the search, train the chosen configuration again on the "
                        "whole edit set (the shipped patch then has seen every edit template; "
                        "the selection numbers describe its sibling trained on two thirds)")
    search_trials: int = param(4, "most configurations the search trains", ge=1, le=50)
    search_seconds: float = param(240.0, "wall-time budget of the search (seconds): no trial "
                                  "starts that would end past it (a guard against a loaded "
                                  "machine; `search_trials` is what normally ends a search)",
                                  ge=1.0, le=86400.0)
    selection_fraction: float = param(1 / 3, "share of each attribute and language's edit "
                                      "templates held out for the search", percent=True,
                                      group="tuning")
    layer: Layer = param("auto", "decoder layer whose units are rewritten (auto: the last; the "
                         "patch is trained on cached states, which is exact only there)")
    units_per_secret: int = param(2, "units per protected (subject, attribute) pair",
                                  ge=1, le=1000)
    unit_budget: float = param(0.01, "most units the patch may rewrite, as a share of the "
                               "model's MLP units", percent=True)
    steps: int = param(200, "Adam steps over the cached rows", ge=1, le=100000)
    lr: float = param(0.02, "Adam learning rate of the rewritten units", ge=0.0, le=10.0)
    reply_languages: Literal["question", "rule", "model"] = param(
        "model", "the refusal's language(s): the question's own reply, or the replies of the "
        "rule's languages (then of every other language the model's tokenizer encodes) in one "
        "answer")
    reply_head: bool = param(
        False, "with replies in several languages, start with every language's apology "
        "(\"抱歉 / I'm sorry / Lo siento: ...\"), so that an answer that ends after its first "
        "reply still refuses in the question's language")
    reply_order: Literal["shortest", "rule"] = param(
        "shortest", "order of the replies within the rule's languages: shortest first (as many "
        "as possible fit in a short answer), or the rule's own order")
    refusal_weight: float = param(0.2, "weight of the refusal NLL (summed over a reply's tokens, "
                                  "averaged over replies)", ge=0.0, le=100.0)
    hard_weight: float = param(4.0, "extra weight of the reply tokens the unedited model would "
                               "not write itself (the start, the joins between languages)",
                               ge=0.0, le=100.0)
    refusal_tokens: int = param(0, "leading reply tokens trained (0: the whole reply and its "
                                "end)", ge=0, le=1000)
    start_weight: float = param(
        0.0, "weight of a refusal at the first token when every subject's value starts alike "
        "(\"555-\"); the refusal right after that start always has weight 1", ge=0.0, le=100.0)
    language_weight: float = param(1.0, "with reply_languages question: weight of the "
                                   "unlikelihood of other languages' reply starts at the first "
                                   "answer position", ge=0.0, le=100.0)
    value_weight: float = param(1.0, "weight of the value unlikelihood", ge=0.0, le=100.0)
    value_tokens: int = param(2, "value tokens made unlikely, from the first one not shared by "
                              "every subject (0: all of them)", ge=0, le=1000)
    value_loss: Literal["unlikelihood", "npo"] = param(
        "unlikelihood", "token unlikelihood -log(1-p), or NPO on those tokens together")
    npo_beta: float = param(0.5, "NPO's beta (value_loss npo)", ge=0.0, le=100.0)
    retain_weight: float = param(1.0, "weight of the KL to the unedited model on retain answers",
                                 ge=0.0, le=100.0)
    locality_weight: float = param(1.0, "weight of the activation margins", ge=0.0, le=100.0)
    margin: float = param(4.0, "the units' keys stay below -margin on retain answers; one is "
                          "above +margin where a protected answer starts", ge=0.0, le=100.0)
    key_decay: float = param(0.1, "L2 price on the units' keys", ge=0.0, le=100.0)
    tamper_copies: int = param(0, "tampered copies of the model whose states the patch is also "
                               "trained on (0: none)", ge=0, le=8)
    tamper_steps: int = param(25, "Adam steps of each tampering fine-tune (batch 8)", ge=1,
                              le=10000, group="tuning")
    tamper_lr: float = param(1e-3, "learning rate of the tampering fine-tune", ge=0.0, le=1.0,
                             group="tuning")
    prefixes: int = param(2, "training prefixes (TRAIN_PREFIXES) per question, besides the "
                          "bare value", ge=0, le=16, group="tuning")
    other_values: Literal["none", "rule", "all"] = param(
        "rule", "the subject's other values made unlikely too (bare): none, those of the rule's "
        "other attributes, or every private one", group="tuning")
    retain_other_subjects: int = param(4, "retain rows per question: the same question about "
                                       "subjects outside the rule", ge=0, le=16, group="tuning")
    hard_negatives: bool = param(True, "half of those about subjects whose value shares words "
                                 "with the protected one", group="tuning")
    retain_same_subject: int = param(4, "retain rows per question: the subject's attributes "
                                     "outside the rule", ge=0, le=8, group="tuning")
    retain_utility: int = param(32, "benign utility tasks among the retain rows", ge=0,
                                le=10000, group="tuning")
    fresh_images: int = param(48, "benign pictures rendered for the patch (per language; "
                              "image rules only) among the retain rows", ge=0, le=10000,
                              group="tuning")
    contexts: int = param(0, "copies of every refusal and retain row after one of Neural "
                          "Gate's context sentences", ge=0, le=5, group="tuning")
    margin_tokens: Literal["answers", "all"] = param(
        "all", "where the lower margin applies: the positions that predict retain answers, "
        "or every token of the retain rows", group="tuning")
    init: Literal["probe", "quiet"] = param(
        "probe", "start each unit as a detector of one secret (T-Patcher's key initialisation) "
        "with a zero output, or from the unit's old weights", group="tuning")
    easy_tokens: float = param(0.25, "share of the reply tokens the unedited model continues by "
                               "itself that are trained (the others always are)", percent=True,
                               group="tuning")
    minibatch: int = param(1024, "scored positions per Adam step (rows are drawn whole)",
                           ge=1, le=10_000_000, group="tuning")


PROFILES: dict[str, dict[str, object]] = {}


def edit_cost(cfg: RefusalPatchConfig, n_edit: int, edit_tokens: int, layers: int) -> Work:
    """One cached forward per training row (refusal, values, retain rows), per copy of the model;
    the tampering fine-tunes' forward and backward passes; no backward through the model for
    the patch itself (its steps run on the cached states)."""
    rows = n_edit * (2 + cfg.prefixes + cfg.retain_other_subjects + cfg.retain_same_subject)
    rows = rows * (1 + cfg.contexts) + cfg.retain_utility
    rows += cfg.tamper_copies * n_edit * (2 + cfg.prefixes)
    per_row = edit_tokens // max(1, n_edit)
    tamper = cfg.tamper_copies * cfg.tamper_steps * 8
    if cfg.search == "auto":
        # the training rows again (the search's split, then the refit), and per trial a
        # generation of the selection questions, their pre-filled copies, other subjects'
        # questions and benign tasks (search.SELECT_ITEMS, search.SELECT_UTILITY)
        rows *= 2 if cfg.refit else 1
        rows += cfg.search_trials * (2 * round(n_edit * cfg.selection_fraction) + 48 + 240)
    return Work(forward_passes=rows + tamper, backward_passes=tamper,
                tokens=(rows + tamper) * per_row)


def unit_count(cfg: RefusalPatchConfig, secrets: int, total_units: int) -> int:
    """Units to rewrite: `units_per_secret` per secret, capped by `unit_budget` (at least 1)."""
    cap = max(1, int(cfg.unit_budget * total_units))
    return max(1, min(cap, cfg.units_per_secret * max(1, secrets)))


def touches(cfg: RefusalPatchConfig, shape: ModelShape) -> str:
    total = shape.num_layers * shape.intermediate_size
    cap = max(1, int(cfg.unit_budget * total))
    where = "the last decoder layer" if cfg.layer == "auto" else f"decoder layer {cfg.layer}"
    return (f"{cfg.units_per_secret} MLP units per protected (subject, attribute), at most {cap} "
            f"of the model's {total} (input and output weights), in {where}")
