"""A default-method run whose configuration search cannot meet the policy stops before
verification: exit 3, the reason on the command line, and a record in the output folder that a
later run replaces. On a random tiny LLaVA, which never refuses, so the search must fail."""

from __future__ import annotations

import json

import pytest

from gatelang.cli import main
from gatelang.driver import apply
from gatelang.errors import EXIT_REQUIREMENT, SelectionError
from gatelang.models.tiny import build_tiny_checkpoint

POLICY = """gatelang 1
use stdlib.attributes.contact
use stdlib.languages
subjects protected = ["Alice Okafor"]
policy p {
  refuse home_address about protected in en via text
  keep other_subjects
  method refusal_patch { steps 2  search_trials 2  fresh_images 0  retain_utility 4 }
  require {
    refusal(heldout) >= 90%
  }
}
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-random")
    build_tiny_checkpoint("llava", folder, seed=0)
    return folder


def test_search_failure_stops_with_a_record(model, tmp_path):
    (tmp_path / "p.gate").write_text(POLICY, encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(SelectionError) as err:
        apply(tmp_path / "p.gate", model=str(model), out=out, progress=False, threads=1,
              options={"max_new_tokens": 4})
    assert err.value.exit_code == EXIT_REQUIREMENT
    assert "refusal:" in str(err.value) and "target >= 90%" in str(err.value)
    assert "stopped.md" in str(err.value)
    record = json.loads((out / "stopped.json").read_text(encoding="utf-8"))
    assert record["status"] == "stopped" and record["method"] == "refusal_patch"
    assert len(record["search"]["trials"]) == 2
    assert record["search"]["trials"][1]["config"] == {"steps": 4}
    md = (out / "stopped.md").read_text(encoding="utf-8")
    assert md.startswith("# Stopped before verification") and "| 2 | steps 4 |" in md
    assert not list(out.glob("patch*.safetensors")) and not (out / "gate.lock").exists()


def test_the_cli_exits_3_and_says_what_fell_short(model, tmp_path, capsys):
    (tmp_path / "p.gate").write_text(POLICY, encoding="utf-8")
    code = main(["apply", str(tmp_path / "p.gate"), "--model", str(model), "--out",
                 str(tmp_path / "o"), "--threads", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == EXIT_REQUIREMENT
    assert "no configuration met the targets" in err and "try:" in err
    assert "Traceback" not in err
