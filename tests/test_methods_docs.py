"""Method documentation generated from the registry: docs/methods.md and `gatelang methods`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gatelang.cli import main
from gatelang.methods import (
    MethodConfig,
    MethodSpec,
    docs,
    get_method,
    methods,
    param,
    register_method,
    unregister_method,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "methods.md"
STALE = (f"the generated block of docs/methods.md is out of date with the method configs; "
         f"regenerate it with `{docs.REGENERATE}` and commit the result")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class _ToyConfig(MethodConfig):
    renamed = {"old_knob": "knob"}

    knob: int = param(3, "a toy knob | with a pipe", ge=0, le=9)
    share: float = param(0.25, "a toy share", percent=True, group="tuning")


TOY = MethodSpec(name="toy_docs_method", family="neuron_ablation",
                 description="A toy method. Registered by a test only.", config=_ToyConfig,
                 edit={"refuse": "edit.toy"}, passes=(), profiles={"small": {"share": 0.1}})


@pytest.fixture
def toy():
    register_method(TOY)
    try:
        yield TOY
    finally:
        unregister_method(TOY.name)


# -- docs/methods.md ---------------------------------------------------------------------------
def test_committed_doc_block_matches_the_registry() -> None:
    block = docs.generated_block(DOC.read_text(encoding="utf-8"))
    assert block == docs.render_methods_markdown(), STALE
    assert docs.methods_doc_is_current(DOC), STALE


def test_doc_has_one_block_and_no_deprecated_names_in_prose() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text.count(docs.BEGIN) == 1 and text.count(docs.END) == 1
    before, _, after = text.partition(docs.BEGIN)
    prose = before + after.partition(docs.END)[2]
    assert "kl_factor" not in prose
    assert "retain_weight" in prose and "tiny_llava" in prose


def test_rendered_markdown_covers_every_method_sorted() -> None:
    md = docs.render_methods_markdown()
    headings = [line[4:].strip("`") for line in md.splitlines() if line.startswith("### ")]
    assert headings == sorted(methods())
    ng = docs.render_method_markdown(get_method("neural_gate"))
    assert "| `retain_weight` | float | `1.25` | `0`–`100` | method |" in ng
    assert "| `gate_threshold` | percent | `30%` | `0%`–`100%` | method |" in ng
    assert "| `unit_select` | enum | `salient` | `salient`, `quiet` | tuning |" in ng
    assert "- `tiny_llava` (13 settings):" in ng and "| `unit_budget` | `1%` | `100%` |" in ng
    assert "- `kl_factor` → `retain_weight`" in ng
    assert "localize `localize.neural_gate`; edit (refuse) `edit.neural_gate`" in ng


def test_a_config_change_makes_the_doc_stale(tmp_path, toy) -> None:
    copy = tmp_path / "methods.md"
    shutil.copy(DOC, copy)
    assert not docs.methods_doc_is_current(copy)
    assert docs.main(["--check", str(copy)]) == 1
    assert docs.update_methods_doc(copy) is True
    text = copy.read_text(encoding="utf-8")
    assert "### `toy_docs_method`" in text and "a toy knob \\| with a pipe" in text
    assert "- `old_knob` → `knob`" in text and "| `share` | `10%` | `25%` |" in text
    assert docs.update_methods_doc(copy) is False
    # the prose outside the block is untouched
    assert text.split(docs.BEGIN)[0] == DOC.read_text(encoding="utf-8").split(docs.BEGIN)[0]


def test_update_needs_the_markers(tmp_path) -> None:
    f = tmp_path / "no-markers.md"
    f.write_text("# nothing generated here\n")
    with pytest.raises(ValueError, match="BEGIN GENERATED"):
        docs.update_methods_doc(f)
    assert docs.main([str(f)]) == 2


def test_module_entry_point_regenerates(tmp_path) -> None:
    copy = tmp_path / "methods.md"
    text = DOC.read_text(encoding="utf-8")
    copy.write_text(docs.replace_generated_block(text, "stale\n"), encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "gatelang.methods.docs", str(copy)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert copy.read_text(encoding="utf-8") == text


# -- gatelang methods --------------------------------------------------------------------------
def test_cli_lists_every_registered_method(capsys) -> None:
    code, out, err = run(capsys, "methods")
    assert code == 0, err
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert names == sorted(methods())
    assert "refusal_edit" in out and "encoder_remap" in out


def test_cli_lists_a_plugin_method(capsys, toy) -> None:
    code, out, _ = run(capsys, "methods")
    assert code == 0 and "toy_docs_method" in out


def test_cli_method_json(capsys) -> None:
    code, out, err = run(capsys, "methods", "neural_gate", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["name"] == "neural_gate" and data["family"] == "refusal_edit"
    assert data["profiles"]["tiny_llava"]["retain_weight"] == 2.0
    assert len(data["profiles"]["tiny_llava"]) == 13
    params = {p["name"]: p for p in data["params"]}
    assert params["retain_weight"]["default"] == 1.25
    assert params["retain_weight"]["group"] == "method"
    assert params["retain_weight"]["min"] == 0.0 and params["retain_weight"]["max"] == 100.0
    assert params["unit_select"]["choices"] == ["salient", "quiet"]
    assert params["unit_budget"]["kind"] == "percent"
    assert params["unit_budget"]["display_default"] == "100%"
    assert data["renamed"] == {"kl_factor": "retain_weight"}
    assert "kl_factor" not in params


def test_cli_all_methods_json(capsys) -> None:
    code, out, _ = run(capsys, "methods", "--json")
    assert code == 0
    assert [m["name"] for m in json.loads(out)["methods"]] == sorted(methods())


def test_cli_method_table_and_markdown(capsys) -> None:
    code, out, _ = run(capsys, "methods", "neural_gate")
    assert code == 0
    assert "retain_weight" in out and "tiny_llava:" in out and "kl_factor -> retain_weight" in out
    code, out, _ = run(capsys, "methods", "remap", "--markdown")
    assert code == 0 and out == docs.render_method_markdown(get_method("remap"))
    code, out, _ = run(capsys, "methods", "--markdown")
    assert code == 0 and out == docs.render_methods_markdown()


def test_cli_unknown_method_exits_2(capsys) -> None:
    code, out, err = run(capsys, "methods", "nueral_gate")
    assert code == 2 and out == ""
    assert "unknown method 'nueral_gate'" in err and "Traceback" not in err
    for name in methods():
        assert name in err
