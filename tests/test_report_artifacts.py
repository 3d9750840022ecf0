"""`apply`'s report end to end on a random tiny LLaVA: items.jsonl, spans, evidence, valid HTML."""

from __future__ import annotations

import json

import pytest
from test_report_document import check_page

from gatelang.driver import apply
from gatelang.models.tiny import build_tiny_checkpoint

POLICY = """gatelang 1
use stdlib.attributes.contact
use stdlib.languages
subjects protected = ["Alice Okafor"]
policy p {
  refuse home_address about protected in en via text
  keep other_subjects, utility
  method neural_gate { layer 1 }
  require {
    locality >= 50%
    utility_drop <= 2%
  }
}
"""

FAST = {
    "method_overrides": {"neural_gate": {"mask_steps": 2, "steps": 1, "lr": 0.01,
                                         "mask_samples": 2}},
    "edit_max_items": 4, "max_items": 6, "max_new_tokens": 4, "attack_items": 2,
    "attack_settings": {"samples": 2, "relearn_steps": 2, "exposure_candidates": 4},
}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-apply")
    build_tiny_checkpoint("llava", root / "model", seed=0)
    (root / "p.gate").write_text(POLICY, encoding="utf-8")
    return apply(root / "p.gate", model=str(root / "model"), out=root / "out", seed=0,
                 options=FAST, progress=False, cache=False)


def test_apply_writes_items_and_links_requirements_to_them(result):
    out = result.out_dir
    items = [json.loads(line) for line in
             (out / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    assert items and [r["row"] for r in items] == list(range(1, len(items) + 1))
    assert {"locality", "utility"} <= {r["check"] for r in items}
    assert all(r["policy"] == "p" for r in items)
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    locality, drop = rep["requirements"]
    assert locality["span"]["line"] == 10 and drop["span"]["line"] == 11
    assert rep["rules"][0]["span"]["line"] == 6
    by_row = {r["row"]: r for r in items}
    for req, check in ((locality, "locality"), (drop, "utility")):
        assert len(req["evidence_rows"]) == req["n"] > 0
        assert {by_row[k]["check"] for k in req["evidence_rows"]} == {check}
    for m in rep["metrics"]:
        if m["metric"] in ("accuracy", "over_refusal") and m["n"]:
            assert m["after_low"] is not None and m["after_high"] is not None, m
    assert result.files["items.jsonl"].endswith("items.jsonl")


def test_apply_report_html_is_valid_and_links_the_policy(result):
    out = result.out_dir
    page = check_page((out / "report.html").read_text(encoding="utf-8"), out)
    assert {"policy-l10", "policy-l11", "answers-r1", "answers-r2"} <= set(page.ids)
    assert "#policy-l10" in page.hrefs
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| line 10 |" in md and "95% interval" in md
