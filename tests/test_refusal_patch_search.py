"""The refusal patch's configuration search: targets from the policy, what is tried next, and the
search loop itself (on a random tiny LLaVA with a trainer that records what it is asked)."""

from __future__ import annotations

import pytest

from gatelang.errors import EXIT_REQUIREMENT
from gatelang.methods import get_method
from gatelang.methods.refusal_patch.data import selection_split, template_key
from gatelang.methods.refusal_patch.search import (
    DEFAULT_TARGETS,
    SearchError,
    next_config,
    requirement_targets,
    search,
    shortfalls,
)
from gatelang.models import load_model
from gatelang.models.tiny import build_tiny_checkpoint
from gatelang.passes.base import PassContext
from gatelang.world import load_world

CFG = get_method("refusal_patch").resolve({})
LOOSE = [{"metric": m, "split": "heldout", "op": op, "threshold": t} for m, op, t in (
    ("refusal", ">=", -1.0), ("leakage", "<=", 1.0), ("locality", ">=", 0.0),
    ("over_refusal", "<=", 1.0), ("utility_drop", "<=", 1.0))] + [
    {"metric": "leakage", "split": "prefill", "op": "<=", "threshold": 1.0}]


def test_policy_requirements_replace_the_default_targets():
    t = requirement_targets([
        {"metric": "refusal", "split": "heldout", "op": ">=", "threshold": 0.9},
        {"metric": "leakage", "split": "prefill", "op": "<=", "threshold": 0.1},
        {"metric": "leakage", "split": "relearn", "op": "<=", "threshold": 0.0},  # not selectable
        {"metric": "neurons_touched", "split": "all", "op": "<=", "threshold": 0.01},
    ])
    assert t["refusal"] == (">=", 0.9)
    assert t["prefill"] == ("<=", 0.1)
    assert t["leakage"] == DEFAULT_TARGETS["leakage"]  # the relearn requirement did not leak in
    assert set(t) == set(DEFAULT_TARGETS)


def test_a_modality_requirement_replaces_the_default_on_every_question():
    t = requirement_targets([
        {"metric": "refusal", "split": "document", "op": ">=", "threshold": 0.9}])
    assert t["refusal(document)"] == (">=", 0.9) and "refusal" not in t
    assert t["leakage"] == DEFAULT_TARGETS["leakage"]


def test_shortfalls_are_distances_to_the_missed_targets_only():
    targets = {"refusal": (">=", 0.95), "leakage": ("<=", 0.02)}
    assert shortfalls({"refusal": 0.9, "leakage": 0.0}, targets) == pytest.approx(
        {"refusal": 0.05})
    assert shortfalls({"refusal": 0.95, "leakage": 0.02}, targets) == {}
    # one answer of twelve would make it: met; two would not
    twelve = {"refusal": 11 / 12, "n:refusal": 12.0, "leakage": 0.0}
    assert shortfalls(twelve, {"refusal": (">=", 0.95)}) == {}
    assert "refusal" in shortfalls({**twelve, "refusal": 10 / 12}, {"refusal": (">=", 0.95)})
    # on four answers one is a quarter of the number: no slack
    assert "refusal" in shortfalls({"refusal": 0.75, "n:refusal": 4.0},
                                   {"refusal": (">=", 0.95)})


def test_next_config_fixes_protection_and_locality_in_turn():
    a = next_config(CFG, {"refusal": 0.1})
    assert a == {"steps": CFG.steps * 2}
    joins = next_config(CFG, {"refusal(scene)": 0.4}, {"wrong_language": 0.2})
    assert joins == {"hard_weight": CFG.hard_weight * 2}
    cfg = CFG.model_copy(update={"steps": 400})
    assert next_config(cfg, {"leakage": 0.1}) == {"units_per_secret": CFG.units_per_secret + 1}
    loc = next_config(CFG, {"utility_drop": 0.01})
    assert loc == {"retain_weight": CFG.retain_weight * 2,
                   "locality_weight": CFG.locality_weight * 2}
    both = next_config(CFG, {"refusal": 0.1, "over_refusal": 0.1})
    assert set(both) == {"steps", "retain_weight", "locality_weight"}
    spent = CFG.model_copy(update={"steps": 400, "units_per_secret": 4, "refusal_weight": 1.0})
    assert next_config(spent, {"refusal": 0.1}) is None


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llava-random")
    build_tiny_checkpoint("llava", folder, seed=0)
    return PassContext(loaded=load_model(str(folder), device="cpu"), seed=0)


def _queries():
    return load_world(0).queries(subjects=["Alice Okafor", "Chen Moreau"],
                                 attributes=["home_address"], languages=["en"],
                                 modalities=["text"], splits=["edit"])


class Recorder:
    """A trainer that returns no weight change and records what the search asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, list, list]] = []

    def __call__(self, cfg, fit, select):
        self.calls.append((cfg.model_dump(), list(fit), list(select)))
        return {}, {"units": []}


def test_search_trains_on_the_fit_split_and_stops_at_the_first_that_meets(ctx):
    rec = Recorder()
    queries = _queries()
    weights, summary = search(ctx, CFG, queries, rec, requirements=LOOSE)
    assert weights == {} and len(rec.calls) == 1
    _, fit, select = rec.calls[0]
    assert {template_key(q) for q in fit}.isdisjoint({template_key(q) for q in select})
    assert (fit, select) == selection_split(queries, CFG.selection_fraction, seed=0)
    trace = summary["search"]
    assert trace["met"] and trace["stopped"] == "met" and trace["chosen"] == 0
    assert trace["chosen_config"] == {}
    assert trace["selection"]["selection_questions"] == len(select)
    assert trace["selection"]["utility_tasks"] > 0


def test_a_search_that_cannot_meet_the_targets_stops_with_exit_3_and_advice(ctx):
    rec = Recorder()  # an unchanged random model never refuses
    cfg = CFG.model_copy(update={"search_trials": 2})
    with pytest.raises(SearchError) as err:
        search(ctx, cfg, _queries(), rec)
    assert err.value.exit_code == EXIT_REQUIREMENT
    msg = str(err.value)
    assert "refusal: 0.0%, target >= 95%" in msg and "short by 95.0%" in msg
    assert "try:" in msg and "gatelang methods" in msg
    trace = err.value.trace
    assert len(trace["trials"]) == 2 and not trace["met"]
    # the second trial changed what the first one missed
    assert trace["trials"][1]["config"] == {"steps": CFG.steps * 2}
    assert rec.calls[1][0]["steps"] == CFG.steps * 2


def test_one_template_per_attribute_leaves_nothing_to_select_on(ctx):
    one = [q for q in _queries() if template_key(q)[3] == template_key(_queries()[0])[3]]
    with pytest.raises(SearchError, match="search off"):
        search(ctx, CFG, one, Recorder())
