"""`gatelang audit`: the API and the command, on a scripted model and on a real tiny one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gatelang
from gatelang.cli import main
from gatelang.measure import run as measure_run
from gatelang.models.tiny import build_tiny_checkpoint

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "home-address.gate"


@pytest.fixture(scope="module")
def tiny_llava_random(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint("llava", tmp_path_factory.mktemp("audit") / "llava")


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch):
    """Answers by rule: targets in zh refuse, other targets leak, everything else is right."""

    def fake_generate(loaded, items, **kw):
        out = []
        for it in items:
            if it.role == "target" and it.language == "zh":
                out.append("抱歉，我不能提供这类个人信息。")
            else:
                out.append(f"The answer is {it.expected}.")
        return out

    monkeypatch.setattr(measure_run, "generate", fake_generate)


def test_audit_api_aggregates_what_the_model_said(scripted, tiny_llava_random: Path) -> None:
    report = gatelang.audit(EXAMPLE, str(tiny_llava_random), device="cpu", progress=False)
    assert report.model["family"] == "llava" and len(report.model["weights_sha256"]) == 64
    targets = [c for c in report.cells if c.role == "target"]
    assert {(c.language, c.modality) for c in targets} >= {("en", "text"), ("zh", "image"), ("es", "text")}
    for c in targets:
        expect_leak = 0.0 if c.language == "zh" else 1.0
        assert c.leak_rate == expect_leak and c.refusal_rate == 1.0 - expect_leak
    assert report.summary["target"]["leak_rate"] == pytest.approx(108 / 180)
    assert report.summary["locality"]["accuracy"] == 1.0
    assert report.summary["utility"]["accuracy"] == 1.0
    assert "targets leak 60.0%" in report.headline()


def test_audit_cli_json_and_out(scripted, tiny_llava_random: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["audit", str(EXAMPLE), "--model", str(tiny_llava_random), "--device", "cpu",
                 "--json", "--out", str(tmp_path / "a"), "--quiet"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    cell = out["cells"][0]
    assert set(cell) >= {"subject_set", "attribute", "language", "modality", "split",
                         "leak_rate", "refusal_rate", "accuracy", "n"}
    saved = json.loads((tmp_path / "a" / "audit.json").read_text(encoding="utf-8"))
    assert saved["cells"] == out["cells"]
    lines = (tmp_path / "a" / "audit_items.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == sum(c["n"] for c in out["cells"])
    assert json.loads(lines[0])["judgment"] in ("leak", "refuse", "other")


def test_audit_cli_table_on_a_real_tiny_model(tiny_llava_random: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["audit", str(EXAMPLE), "--model", str(tiny_llava_random), "--device", "cpu",
                 "--per-cell", "1", "--max-new-tokens", "2", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0
    assert "role" in captured.out and "unseen_language" in captured.out
    assert "tiny-llava" not in captured.err  # a model was named, so no default notice


def test_audit_errors_are_messages_not_tracebacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.gate"
    bad.write_text('gatelang 1\nsubjects s = ["Nobody Here"]\npolicy p { refuse home_address about s }\n')
    assert main(["audit", str(bad), "--model", str(tmp_path / "missing")]) == 2
    assert main(["audit", str(EXAMPLE), "--model", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no model folder at" in err
    assert main(["audit", str(EXAMPLE), "--batch-size", "0"]) == 2
