"""Adding a method touches one folder: a toy method registered from tests/plugins/toy_zero
is checked, planned, applied and verified like a built-in one, and listed by the CLI."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from gatelang.cli import main
from gatelang.driver import apply, verify_lock
from gatelang.ir import check_text, loads
from gatelang.methods import get_method, unregister_method
from gatelang.models.tiny import build_tiny_checkpoint
from gatelang.planner import known_ops, plan, render

PLUGINS = Path(__file__).parent / "plugins"
POLICY = """gatelang 1
use stdlib.attributes.contact
use stdlib.languages
subjects protected = ["Alice Okafor"]
policy p {
  refuse home_address about protected in en via text
  method toy_zero { profile two  layer 1 }
  require { neurons_touched <= 50% }
}
"""


@pytest.fixture()
def toy(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    module = importlib.import_module("toy_zero")
    yield module
    unregister_method("toy_zero")
    from gatelang.passes import REGISTRY

    REGISTRY.pop("edit.toy_zero", None)
    for name in [m for m in sys.modules if m == "toy_zero" or m.startswith("toy_zero.")]:
        sys.modules.pop(name)


def test_the_compiler_knows_the_method_from_its_config(toy) -> None:
    method = loads(POLICY).policies[0].method
    assert method.name == "toy_zero" and method.profile == "two"
    assert method.params == {"layer": 1, "units": 2}
    bad = check_text(POLICY.replace("layer 1", "units 0"), "p.gate")
    assert [d.code for d in bad.errors] == ["G115"]
    unknown = check_text(POLICY.replace("layer 1", "depth 1"), "p.gate")
    assert [d.code for d in unknown.errors] == ["G107"]
    assert "edit.toy_zero" in known_ops()
    text = render(plan(loads(POLICY)))
    assert "edit.toy_zero" in text and "2 MLP units of decoder layer 1" in text


def test_the_method_runs_end_to_end(toy, tmp_path, capsys) -> None:
    model = build_tiny_checkpoint("llava", tmp_path / "model", seed=0)
    (tmp_path / "p.gate").write_text(POLICY, encoding="utf-8")
    res = apply(tmp_path / "p.gate", model=str(model), out=tmp_path / "out", progress=False,
                options={"max_items": 4, "max_new_tokens": 2, "attack_items": 2,
                         "attack_settings": {"samples": 2, "relearn_steps": 2}})
    assert res.passed, res.report["requirements"]
    assert res.report["methods"] == ["toy_zero"]
    assert res.report["patch"]["neurons_touched"] == 2
    (edit,) = [t for t in res.report["patch"]["tensors"]]
    assert edit["name"].endswith("layers.1.mlp.down_proj.weight")
    again = verify_lock(res.lock_path)
    assert again.passed and not again.drift
    assert main(["methods", "toy_zero", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["profiles"] == {"two": {"units": 2}}
    assert get_method("toy_zero").defaults() == {"layer": 0, "units": 1}
