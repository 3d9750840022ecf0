"""`gatelang schema --kind ...`, and every JSON document the suite's runs write validated against
the schema gatelang publishes for it (with jsonschema where installed, and always by parsing
with the pydantic model the schema is generated from)."""

from __future__ import annotations

import json

import pytest

from gatelang.cli import main
from gatelang.report.schemas import KINDS, DocumentError, json_schema, validate_document
from gatelang.syntax.schema import json_schema as policy_schema

try:  # optional: the models are the source of truth, jsonschema is a second opinion
    import jsonschema
except ImportError:  # pragma: no cover - depends on the environment
    jsonschema = None

POLICY = """gatelang 1
use stdlib.attributes.contact
use stdlib.languages
subjects protected = ["Alice Okafor"]
policy p {
  refuse home_address about protected in en via text
  keep other_subjects, utility
  method neural_gate { layer 1 }
  require { refusal(heldout) >= 95% }
}
"""
FAST = {
    "method_overrides": {"neural_gate": {"mask_steps": 2, "steps": 1, "lr": 0.01,
                                         "mask_samples": 2}},
    "edit_max_items": 4, "max_items": 6, "max_new_tokens": 4, "attack_items": 2,
    "attack_settings": {"samples": 2, "relearn_steps": 2, "exposure_candidates": 4},
}


@pytest.mark.parametrize("kind", KINDS)
def test_schema_command_prints_each_kind(kind, capsys):
    assert main(["schema", "--kind", kind]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema == json.loads(json.dumps(json_schema(kind)))
    if jsonschema is not None:
        jsonschema.Draft202012Validator.check_schema(schema)


def test_default_kind_is_the_policy_schema(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(policy_schema()))


def test_unknown_kind_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["schema", "--kind", "plan"])
    assert exc.value.code == 2


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """report.json and gate.lock from `apply`, audit.json from `audit --out`."""
    from gatelang.driver import apply
    from gatelang.ir import load
    from gatelang.measure.audit import audit
    from gatelang.models.tiny import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("schema")
    build_tiny_checkpoint("llava", root / "model", seed=0)
    (root / "p.gate").write_text(POLICY, encoding="utf-8")
    apply(root / "p.gate", model=str(root / "model"), out=root / "out", options=FAST,
          progress=False, device="cpu", threads=1)
    report = audit(load(root / "p.gate"), str(root / "model"), device="cpu", batch_size=8,
                   max_new_tokens=4, target_per_cell=2, progress=False)
    report.write(root / "audit")
    return {"report": root / "out" / "report.json", "lock": root / "out" / "gate.lock",
            "audit": root / "audit" / "audit.json"}


@pytest.mark.parametrize("kind", ["report", "lock", "audit"])
def test_written_documents_match_their_schema(written, kind):
    path = written[kind]
    validate_document(kind, path)
    if jsonschema is not None:
        jsonschema.validate(json.loads(path.read_text()), json_schema(kind))


def test_a_document_missing_a_field_is_named(written, tmp_path):
    doc = json.loads(written["report"].read_text())
    del doc["patch"]["sha256"]
    bad = tmp_path / "report.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(DocumentError, match=r"patch\.sha256"):
        validate_document("report", bad)
