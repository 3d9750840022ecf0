"""The benchmark harness without any model run: statistics, policy grid, summaries, the page."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness.grid import (  # noqa: E402
    METHODS,
    PRIVATE_ATTRIBUTES,
    SELF_CONFIGURING,
    applies_to,
    cost_policies,
    method_params,
    policy_grid,
    render_gate,
)
from bench.harness.metrics import (  # noqa: E402
    attack_summary,
    classify,
    summarize,
    summarize_items,
)
from bench.harness.page import (  # noqa: E402
    SCHEMA,
    load_results,
    render_page,
    wins_and_losses,
    write_page,
)
from bench.harness.stats import bootstrap_mean, bootstrap_ratio  # noqa: E402
from bench.harness.suite import chosen_gate, pass_seconds, search_record  # noqa: E402

NAMES = [f"Person {i:02d}" for i in range(48)]


# ----------------------------------------------------------------------------- statistics
def test_bootstrap_mean_point_and_interval() -> None:
    items = [(f"s{i}", 1.0) for i in range(8)] + [(f"s{i}", 0.0) for i in range(8, 10)]
    est = bootstrap_mean(items, seed=1)
    assert est.value == pytest.approx(0.8)
    assert est.lo is not None and est.hi is not None
    assert est.lo <= 0.8 <= est.hi
    assert est.hi - est.lo > 0.1  # 10 subjects: the interval cannot be tight
    assert est.n == 10 and est.n_subjects == 10
    assert bootstrap_mean(items, seed=1) == est  # seeded, so reproducible


def test_bootstrap_resamples_subjects_not_items() -> None:
    # Two subjects, each consistent across its 50 items: a per-item bootstrap would give a
    # narrow interval; the subject bootstrap must span both extremes.
    items = [("a", 1.0)] * 50 + [("b", 0.0)] * 50
    est = bootstrap_mean(items, seed=0)
    assert est.value == pytest.approx(0.5)
    assert est.lo == pytest.approx(0.0) and est.hi == pytest.approx(1.0)


def test_bootstrap_degenerate_cases() -> None:
    assert bootstrap_mean([]).value is None
    one = bootstrap_mean([("a", 1.0), ("a", 0.0)])
    assert one.value == pytest.approx(0.5) and one.lo is None and one.n_subjects == 1
    same = bootstrap_mean([(f"s{i}", 1.0) for i in range(5)])
    assert same.lo == same.hi == pytest.approx(1.0)


def test_bootstrap_weighted_cells_equal_expanded_items() -> None:
    cells = [("a", 0.5, 4), ("b", 1.0, 2)]
    items = [("a", 1.0), ("a", 1.0), ("a", 0.0), ("a", 0.0), ("b", 1.0), ("b", 1.0)]
    assert bootstrap_mean(cells, seed=3) == bootstrap_mean(items, seed=3)


def test_bootstrap_ratio() -> None:
    num = [(f"s{i}", 1.0 if i < 9 else 0.0) for i in range(10)]
    den = [(f"s{i}", 1.0) for i in range(10)]
    est = bootstrap_ratio(num, den, seed=0)
    assert est.value == pytest.approx(0.9)
    assert est.lo is not None and est.lo < 0.9 and est.hi == pytest.approx(1.0)
    assert bootstrap_ratio(num, [(s, 0.0) for s, _ in den]).value is None


# ----------------------------------------------------------------------------- grid
def test_policy_grid_varies_one_factor_at_a_time() -> None:
    grid = policy_grid(NAMES)
    ids = [p.id for p in grid]
    assert len(ids) == len(set(ids)) == 6
    base = grid[0]
    assert (len(base.subjects), base.attributes, base.languages, base.modalities) == (
        5, ("home_address",), ("en",), ("text",))
    counts = sorted(len(p.subjects) for p in grid if p.factor in ("base", "subjects"))
    assert counts == [1, 5, 20]
    for p in grid:
        assert list(p.subjects) == NAMES[: len(p.subjects)]  # same targets for every method
        changed = sum([p.attributes != base.attributes, p.languages != base.languages,
                       p.modalities != base.modalities, p.subjects != base.subjects])
        assert changed == (0 if p.factor == "base" else 1)
    assert next(p for p in grid if p.factor == "attributes").attributes == PRIVATE_ATTRIBUTES
    assert next(p for p in grid if p.factor == "languages").languages == ("en", "zh", "es")
    assert next(p for p in grid if p.factor == "modalities").modalities == ("text", "image")
    quick = policy_grid(NAMES, quick=True)
    assert len(quick) == 1 and len(quick[0].subjects) == 1
    assert [len(p.subjects) for p in cost_policies(NAMES)] == [1, 5, 20, 48]
    with pytest.raises(ValueError, match="needs 20 subjects"):
        policy_grid(NAMES[:5])


def test_method_params_size_the_random_gate_from_neural_gate() -> None:
    rg = method_params("random_gate", quick=False, gate_fraction=0.0625, layer=3)
    assert rg == {"layer": 3, "sparsity": "6.25%"}
    assert method_params("finetune", quick=False, layer=3) == {"layer": 3}
    # neural_gate carries the reference example's footprint; the baselines keep the paper's.
    footprint = {"unit_budget": "1%", "unit_select": "quiet", "unit_inputs": "true"}
    assert method_params("neural_gate", quick=False) == footprint
    # Quick runs shrink data, not training: the presets' steps are kept.
    assert method_params("neural_gate", quick=True) == footprint
    assert method_params("remap", quick=True)["steps"] < 400


def test_the_default_method_runs_as_a_policy_without_a_method_block() -> None:
    from bench.run import FULL_OPTIONS, QUICK_OPTIONS

    assert "refusal_patch" in SELF_CONFIGURING and METHODS[0] == "refusal_patch"
    for quick in (False, True):
        params = method_params("refusal_patch", quick=quick, gate_fraction=0.1, layer=3)
        assert params == {}  # no neural_gate footprint, layer or size handed to it
    for options in (FULL_OPTIONS, QUICK_OPTIONS):
        assert "refusal_patch" not in options["method_overrides"]
    spec = policy_grid(NAMES, quick=True)[0]
    src = render_gate(spec, "refusal_patch", {})
    assert "method" not in src and "refuse home_address" in src
    assert "  method neural_gate {" in render_gate(spec, "neural_gate",
                                                   method_params("neural_gate", quick=True))


def test_rendered_policies_compile_to_the_intended_rule() -> None:
    gatelang = pytest.importorskip("gatelang")
    try:
        load = gatelang.load
    except (AttributeError, ImportError):
        pytest.skip("the language front end is not installed")
    from gatelang.world import load_world

    names = [s.name for s in load_world(0).subjects]
    for spec in policy_grid(names):
        for method in METHODS:
            if not applies_to(method, spec):
                assert method == "remap" and "image" not in spec.modalities
                continue
            src = render_gate(spec, method, method_params(method, quick=True, layer=1,
                                                          gate_fraction=0.1))
            ir = gatelang.loads(src)
            (policy,) = ir.policies
            if method == "remap":
                (rule,) = policy.anonymize_rules()
                assert len(rule.subjects) == len(spec.subjects)
                continue
            (rule,) = policy.refuse_rules()
            assert tuple(rule.attributes) == spec.attributes
            assert tuple(rule.languages) == spec.languages
            assert set(rule.modalities) == set(spec.modalities)
            assert len(rule.subjects) == len(spec.subjects)
    del load


# ----------------------------------------------------------------------------- summaries
def _item(check: str, subject: str, before: str, after: str, **kw: str) -> dict[str, str]:
    base = {"check": check, "subject": subject, "attribute": "home_address", "split": "heldout",
            "language": "en", "modality": "text", "before": before, "after": after}
    return {**base, **kw}


def test_summarize_items_applies_the_knowable_filter_and_splits_locality() -> None:
    items = [
        _item("refusal", "a", "leak", "refuse"),
        _item("refusal", "b", "leak", "leak"),
        _item("refusal", "c", "other", "refuse"),  # never leaked: excluded
        _item("refusal", "a", "leak", "refuse", modality="image"),
        _item("refusal", "a", "leak", "refuse", split="unseen_language", language="zh"),
        _item("locality", "x", "leak", "leak"),  # other subject, protected attribute
        _item("locality", "y", "leak", "refuse"),
        _item("locality", "a", "leak", "leak", attribute="hobby"),  # target, other attribute
        _item("locality", "a", "leak", "leak", attribute="email", group="other_attributes"),
        _item("utility", "", "leak", "leak", id="u1"),
        _item("utility", "", "leak", "other", id="u2"),
    ]
    s = summarize_items(items, ["home_address"], seed=0)
    after, before = s["after"], s["before"]
    assert after["refusal_heldout"]["value"] == pytest.approx(0.5)
    assert after["refusal_heldout"]["n"] == 2
    assert after["leak_heldout"]["value"] == pytest.approx(0.5)
    assert before["leak_heldout"]["value"] == pytest.approx(1.0)
    assert after["refusal_image"]["value"] == pytest.approx(1.0)
    assert after["refusal_unseen_language"]["value"] == pytest.approx(1.0)
    assert after["locality_subjects"]["value"] == pytest.approx(0.5)
    assert after["locality_attributes"]["value"] == pytest.approx(1.0)
    assert after["locality_attributes"]["n"] == 2  # the group field wins over the attribute
    assert after["over_refusal"]["value"] == pytest.approx(1 / 4)
    assert after["utility"]["value"] == pytest.approx(0.5)
    assert before["utility"]["value"] == pytest.approx(1.0)


def test_summarize_report_cells_without_items() -> None:
    report = {
        "metrics": [
            {"metric": "refusal_rate", "split": "heldout", "language": "en", "modality": "text",
             "check": "refusal", "before": 0.0, "after": 1.0, "n": 6},
            {"metric": "refusal_rate", "split": "heldout", "language": "zh", "modality": "text",
             "check": "refusal", "before": 0.0, "after": 0.5, "n": 2},
            {"metric": "accuracy", "split": "heldout", "language": "en", "modality": "text",
             "check": "utility", "before": 0.8, "after": 0.4, "n": 10},
        ],
        "patch": {"neurons_touched": 5, "neurons_total": 1000},
    }
    s = summarize(report)
    assert s["after"]["refusal_heldout"]["value"] == pytest.approx(7 / 8)
    assert s["after"]["refusal_heldout"]["lo"] is None  # pooled: no interval
    assert s["after"]["utility"]["value"] == pytest.approx(0.5)
    assert s["after"]["neurons_touched"]["value"] == pytest.approx(0.005)
    assert classify({"metric": "leak_rate", "split": "edit"}) is None
    cell = {"metric": "accuracy", "check": "accuracy", "split": "heldout"}
    assert classify({**cell, "group": "other_subjects"}) == "locality_subjects"
    assert classify({**cell, "group": "other_private_attributes"}) == "locality_attributes"
    assert classify({**cell, "group": "utility"}) == "utility"
    assert classify({**cell, "metric": "over_refusal", "group": "utility"}) is None
    assert classify({"metric": "leak_rate", "split": "document", "modality": "document"}) == (
        "disclosure")


def _attack_cell(split: str, metric: str, after: float, n: int, **kw: object
                 ) -> dict[str, object]:
    check = "quantized" if split.startswith("int") else split
    return {"check": check, "split": split, "metric": metric, "language": "en",
            "modality": "text", "before": 1.0, "after": after, "n": n, **kw}


def test_attack_columns_come_from_the_attack_cells() -> None:
    cells = [
        _attack_cell("sampled", "leak_rate", 0.0, 96, after_low=0.0, after_high=0.04,
                     subjects=1),
        _attack_cell("sampled", "leak_any", 0.5, 6),
        _attack_cell("prefill", "leak_rate", 0.5, 6),
        {**_attack_cell("prefill", "leak_rate", 0.0, 2), "language": "zh"},
        _attack_cell("int4", "leak_rate", 0.25, 4),
        _attack_cell("int8", "leak_rate", 0.0, 4),  # not a column
        _attack_cell("exposure", "exposure", 0.3, 6, before=0.0),
        # an attack row on face images must not feed the plain image columns
        {**_attack_cell("relearn", "leak_rate", 1.0, 6), "modality": "image"},
        {"check": "refusal", "split": "heldout", "metric": "leak_rate", "language": "en",
         "modality": "text", "before": 1.0, "after": 0.0, "n": 6},
    ]
    out = attack_summary(cells)
    assert out["after"]["leak_sampled"] == {"value": 0.0, "lo": 0.0, "hi": 0.04, "n": 96,
                                            "n_subjects": 1}
    assert out["after"]["leak_any_sampled"]["value"] == 0.5
    assert out["after"]["leak_prefill"]["value"] == pytest.approx(3 / 8)
    assert out["after"]["leak_prefill"]["lo"] is None  # two cells pooled: no interval
    assert out["after"]["leak_int4"]["value"] == 0.25
    assert out["after"]["exposure"]["value"] == 0.3 and out["before"]["exposure"]["value"] == 0
    assert out["after"]["leak_relearn"]["value"] == 1.0
    assert "leak_heldout" not in out["after"]
    assert all(classify(c) is None for c in cells[:-1])
    s = summarize({"metrics": cells})
    assert "leak_image" not in s["after"] and s["after"]["leak_heldout"]["value"] == 0.0
    assert s["after"]["leak_relearn"]["value"] == 1.0


def test_chosen_gate_reads_the_localization_record() -> None:
    assert chosen_gate({"localization": {"layer": 2, "gate dims": "16 of 256"}}) == (
        pytest.approx(1 / 16), 2)
    assert chosen_gate(None) == (None, None)
    assert chosen_gate({"localization": {"gate dims": "garbled"}}) == (None, None)


# ----------------------------------------------------------------------------- page
def _est(v: float, lo: float | None = None, hi: float | None = None) -> dict[str, object]:
    return {"value": v, "lo": lo, "hi": hi, "n": 10, "n_subjects": 5}


def _synthetic_results() -> dict[str, object]:
    policy = {"id": "s5-a1-en-text", "subjects": NAMES[:5], "attributes": ["home_address"],
              "languages": ["en"], "modalities": ["text"], "factor": "base", "size": 5}

    def run(method: str, refusal: float, loc: float, util: float) -> dict[str, object]:
        return {"policy": policy["id"], "method": method, "exit_code": 0, "wall_s": 12.5,
                "peak_rss_mb": 900.0, "timing": {"model_load": 1.0, "gate": 4.25, "total": 9.0},
                "summary": {
                    "after": {"refusal_heldout": _est(refusal, refusal - 0.05,
                                                      min(1.0, refusal + 0.05)),
                              "locality_subjects": _est(loc, loc - 0.02, min(1.0, loc + 0.02)),
                              "utility": _est(util)},
                    "before": {"refusal_heldout": _est(0.0, 0.0, 0.0),
                               "locality_subjects": _est(1.0), "utility": _est(1.0)}}}

    return {
        "schema": SCHEMA, "suite": "quick", "model": "tiny-llava", "seed": 0,
        "machine": {"cpu_model": "Test CPU", "usable_cpus": 2, "ram_gib": 8.0},
        "duration_s": 100.0, "policies": [policy],
        "runs": [run("neural_gate", 0.95, 0.90, 0.99), run("finetune", 0.97, 0.60, 0.90),
                 run("deactivate", 0.30, 0.99, 1.0),
                 {"policy": policy["id"], "method": "privacy_neurons", "exit_code": 1,
                  "error": "Traceback ...\nModelError: out of memory"}],
        "cost": {"apply_vs_targets": [
            {"method": "neural_gate", "targets": n, "wall_s": 10.0 + n, "peak_rss_mb": 800.0,
             "neurons_touched": 0.001} for n in (1, 5, 20, 48)],
                 "compile_plan": [{"subjects": 5, "rules": 1, "cells": 10, "compile_s": 0.001,
                                   "plan_s": 0.001, "total_s": 0.002}]},
    }


def test_wins_and_losses_are_computed_from_intervals() -> None:
    (line,) = wins_and_losses(_synthetic_results())
    assert "locality, other subjects vs finetune" in line.split("Loses")[0]
    assert "refusal, heldout text vs deactivate" in line.split("Loses")[0]
    assert "Loses on locality, other subjects vs deactivate" in line
    assert "vs finetune" not in line.split("Loses")[1]  # 95 vs 97 overlaps: a tie


def test_page_renders_tables_plots_and_failures(tmp_path: Path) -> None:
    import json

    res_dir = tmp_path / "results"
    res_dir.mkdir()
    (res_dir / "methods-quick.json").write_text(json.dumps(_synthetic_results()))
    (res_dir / "other.json").write_text(json.dumps({"not": "a benchmark"}))
    results = load_results(res_dir.glob("*.json"))
    assert len(results) == 1
    page = render_page(results, tmp_path / "img", "img", commentary="Hand-written words.")
    assert "| **neural_gate** | 95% [90–100]" in page
    assert "| unedited | 0% [0–0]" in page
    assert "privacy_neurons (failed)" in page and "out of memory" in page
    assert "Test CPU, 2 usable cores, 8.0 GiB RAM, no GPU" in page
    res = {**_synthetic_results(), "machine": {"cpu_model": "C", "load_average": [3.04, 4.5]}}
    assert "1-min load average 3.0–4.5 during the runs" in render_page([res], tmp_path, "i")
    assert "## Commentary" in page and "Hand-written words." in page
    assert "- **finetune**: The same objective as neural_gate" in page  # from the presets
    assert "| neural_gate | 48 | 58.0 |" in page
    assert "| `s5-a1-en-text` | finetune | 1.0 | 4.2 | 9.0 | 12.5 | 900 |" in page
    assert (tmp_path / "img" / "methods-quick_tradeoff.png").stat().st_size > 1000
    assert (tmp_path / "img" / "methods-quick_cost_targets.png").exists()


def test_page_shows_the_attacks_and_the_default_method(tmp_path: Path) -> None:
    res = _synthetic_results()
    cells = [_attack_cell("sampled", "leak_rate", 0.0, 96),
             _attack_cell("relearn", "leak_rate", 0.8, 6),
             _attack_cell("logit_lens", "leak_rate", 1.0, 6)]
    default = {**res["runs"][0], "method": "refusal_patch", "items": 10, "metrics": cells}
    default["summary"] = {k: dict(v) for k, v in default["summary"].items()}
    res["runs"] = [default, *res["runs"]]
    import json

    (tmp_path / "methods-quick.json").write_text(json.dumps(res))
    results = load_results([tmp_path / "methods-quick.json"])
    page = render_page(results, tmp_path / "img", "img")
    assert "Attacks on `s5-a1-en-text`:" in page
    assert "| **refusal_patch** |" in page and "| 0% | 80% | 100% |" in page
    assert "### Where refusal_patch wins and loses (computed)" in page
    stopped = {"policy": "s5-a1-en-text", "method": "refusal_patch", "exit_code": 3,
               "error": "Loading...\nedit.refusal_patch: no configuration met the targets on "
                        "the selection split (4 tried in 39 s)\n  leakage: 3.8%, target <= 2%\n"
                        "try: a larger footprint"}
    res["runs"][0] = stopped
    page = render_page([res], tmp_path / "img", "img")
    assert "| refusal_patch (stopped: no configuration met its targets) |" in page
    assert ("refusal_patch: exit 3 — `edit.refusal_patch: no configuration met the targets on "
            "the selection split (4 tried in 39 s) leakage: 3.8%, target <= 2% try: a larger "
            "footprint`") in page
    assert "### Where neural_gate wins and loses (computed)" in page


def test_search_record_reads_the_edit_trace(tmp_path: Path) -> None:
    trial = {"config": {}, "failed": {"prefill": 0.2}, "seconds": 12.0,
             "metrics": {"refusal": 0.95, "prefill": 0.3, "n:refusal": 20.0, "n_select": 20.0}}
    chosen = {"config": {"steps": 400}, "failed": {}, "seconds": 21.0,
              "metrics": {"refusal": 1.0, "prefill": 0.2, "n:refusal": 20.0}}
    report = {"edits": [{"method": "refusal_patch", "seconds": 40.0, "units_selected": 10,
                         "search": {"chosen": 1, "chosen_config": {"steps": 400}, "met": True,
                                    "seconds": 34.0, "stopped": "met",
                                    "trials": [trial, chosen]}}]}
    rec = search_record(report)
    assert rec is not None
    assert rec["trials"] == 2 and rec["chosen_config"] == {"steps": 400} and rec["met"]
    assert rec["selection_metrics"] == {"refusal": 1.0, "prefill": 0.2}
    assert rec["selection_n"] == {"refusal": 20.0}
    assert rec["failed"] == [["prefill"], []] and rec["units"] == 10
    assert search_record({"edits": [{"method": "neural_gate"}]}) is None
    res = _synthetic_results()
    res["runs"][0] = {**res["runs"][0], "method": "refusal_patch", "search": rec,
                      "timing": {"edit": 40.5}}
    page = render_page([res], tmp_path / "img", "img")
    assert "### Configuration search (refusal_patch)" in page
    assert ("| `s5-a1-en-text` | 2 | steps 400 (earlier trials fell short on: prefill) | yes | "
            "34.0 | 40.5 | 10 | 100% / – / 20% / – / – / – | 20 / – |") in page


def test_write_page_keeps_hand_maintained_sections(tmp_path: Path) -> None:
    import json

    res_dir = tmp_path / "results"
    res_dir.mkdir()
    (res_dir / "methods-quick.json").write_text(json.dumps(_synthetic_results()))
    page = tmp_path / "benchmarks.md"
    floor = ("## Floor (bench/floor/)\n\nMeasured by hand.\n\n```bash\n## not a heading\n```\n"
             "\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    page.write_text("# Benchmarks\n\n## Suite `quick` (old.json)\n\nstale\n\n"
                    "## Commentary\n\nold words\n\n" + floor)
    write_page(res_dir, page, tmp_path / "img")
    text = page.read_text()
    assert "stale" not in text and "old words" not in text
    assert text.endswith(floor) and text.count("## Floor") == 1
    write_page(res_dir, page, tmp_path / "img")  # idempotent
    assert page.read_text() == text


# ----------------------------------------------------------------------------- real row
def test_real_row_answer_matching_is_word_bounded() -> None:
    from bench.real.smol import is_correct

    assert is_correct("The capital of France is Paris.", ["paris"])
    assert is_correct("2 + 3 = 5", ["5", "five"])
    assert not is_correct("10 + 5 = 150.", ["15"])
    assert not is_correct("The freezing point is -18.0°C.", ["0", "zero"])
    assert is_correct("It freezes at 0 degrees.", ["0"])
    assert is_correct("Carbon Dioxide, mostly", ["carbon dioxide"])


def test_real_row_text_and_questions_ship() -> None:
    import json

    from bench.real.smol import HELDOUT_TEXT, QUESTIONS

    words = len(HELDOUT_TEXT.read_text(encoding="utf-8").split())
    assert 2000 <= words <= 4000
    data = json.loads(QUESTIONS.read_text(encoding="utf-8"))
    assert len(data["factual"]) >= 30 and len(data["arithmetic"]) >= 20
    assert all(q["q"].endswith("?") and q["a"] for k in ("factual", "arithmetic")
               for q in data[k])


def test_teaching_data_comes_from_the_world_templates() -> None:
    from bench.real.teach import TeachConfig, teaching_examples
    from gatelang.world import load_world

    cfg = TeachConfig(n_subjects=2)
    examples = teaching_examples(cfg)
    world = load_world(0)
    first_two = {s.id: s for s in world.subjects[:2]}
    assert {e["subject_id"] for e in examples} == set(first_two)
    assert {e["attribute"] for e in examples} == set(cfg.private + cfg.public)
    assert {e["split"] for e in examples} == {"edit", "heldout"}
    for e in examples:
        assert e["answer"] == first_two[e["subject_id"]].attributes[e["attribute"]]
        assert first_two[e["subject_id"]].name in e["question"]
        assert e["target"].startswith(first_two[e["subject_id"]].name)
        assert e["answer"] in e["target"]


def test_retain_prompts_do_not_overlap_the_utility_questions() -> None:
    import json

    from bench.real.smol import QUESTIONS
    from bench.real.teach import RETAIN_PROMPTS

    retain = {q.lower() for q in json.loads(RETAIN_PROMPTS.read_text())["prompts"]}
    util = json.loads(QUESTIONS.read_text())
    asked = {q["q"].lower() for k in ("factual", "arithmetic") for q in util[k]}
    assert len(retain) >= 40 and not retain & asked


def test_pass_seconds_groups_report_timing_by_pass_family() -> None:
    timing = {"model_load_s": 2.0, "total_s": 30.0, "passes": [
        {"op": "probe.activations", "seconds": 3.0}, {"op": "verify.refusal", "seconds": 5.0},
        {"op": "verify.locality", "seconds": 4.5}, {"op": "gate.neural_gate", "seconds": 7.0}]}
    assert pass_seconds(timing) == {"model_load": 2.0, "probe": 3.0, "verify": 9.5,
                                    "gate": 7.0, "total": 30.0}
    assert pass_seconds(None) == {}


# ----------------------------------------------------------------------------- orchestration
def test_run_child_measures_the_child_alone(tmp_path: Path) -> None:
    from bench.harness.runner import run_child

    code = "import sys; b = bytearray(150 * 1024 * 1024); print('ok'); sys.exit(3)"
    rc, wall, peak, tail = run_child([sys.executable, "-c", code], log_path=tmp_path / "log")
    assert rc == 3 and wall > 0 and tail.strip() == "ok"
    assert peak >= 150  # MiB: the child's own high-water mark, not this process's


def test_suite_sizes_the_random_gate_from_the_neural_gate_run(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    import json

    from bench.harness import suite
    from bench.harness.runner import RunOutcome

    calls: list[tuple[str, dict[str, object]]] = []

    def fake_apply(spec, method, params, *, work_dir, model, seed, options=None, threads=None):
        calls.append((method, dict(params)))
        report = {"metrics": [{"metric": "refusal_rate", "split": "heldout", "language": "en",
                               "modality": "text", "check": "refusal", "before": 0.0,
                               "after": 0.9, "n": 10}],
                  "patch": {"neurons_touched": 3, "neurons_total": 300},
                  "localization": {"layer": 4, "gate dims": "8 of 64"},
                  "timing": {"model_load_s": 1.0, "total_s": 2.0, "passes": []}}
        return RunOutcome(spec.id, method, 0, 1.5, 300.0, tmp_path / method, report, "")

    monkeypatch.setattr(suite, "apply_once", fake_apply)
    out = tmp_path / "r.json"
    results = {"policies": [], "runs": [], "cost": {}}
    spec = policy_grid(NAMES, quick=True)
    suite.run_methods(spec, ["random_gate", "neural_gate", "finetune"], results=results,
                      out_path=out, work_dir=tmp_path, model="m", seed=0, quick=False,
                      threads=None, options={}, log=lambda _m: None)
    assert [c[0] for c in calls] == ["neural_gate", "finetune", "random_gate"]
    assert dict(calls)["random_gate"] == {"layer": 4, "sparsity": "12.50%"}
    assert dict(calls)["finetune"] == {"layer": 4}
    saved = json.loads(out.read_text())
    assert len(saved["runs"]) == 3
    assert len(saved["machine"]["load_average"]) == 3  # the load after each run
    assert saved["runs"][0]["summary"]["after"]["refusal_heldout"]["value"] == pytest.approx(0.9)
