"""The language commands end to end: exit codes, outputs, files written."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gatelang.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
REF = EXAMPLES / "home-address.gate"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_examples_directory(capsys) -> None:
    code, _, err = run(capsys, "check", str(EXAMPLES))
    assert code == 0, err
    assert "0 error(s)" in err and "8 file(s)" in err  # 7 .gate files + the YAML twin


def test_check_reports_all_errors_and_exits_2(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.gate"
    bad.write_text("gatelang 1\nuse stdlib.languages\npolicy p {\n"
                   "  refuse home_adress about nobody in en via txt\n}\n")
    code, _, err = run(capsys, "check", str(bad))
    assert code == 2
    assert len(re.findall(r"error\[G1\d\d\]", err)) == 3
    assert f"{bad}:4:10: error[G101]" in err and "^^^^" in err


def test_check_json_output(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.gate"
    bad.write_text("gatelang 1\npolicy {\n")
    code, out, _ = run(capsys, "check", "--format", "json", str(bad), str(REF))
    data = json.loads(out)
    assert code == 2 and data["errors"] == 1
    assert data["files"][0]["diagnostics"][0]["code"] == "G001"
    assert data["files"][1]["ok"] is True


def test_strict_turns_warnings_into_failure(tmp_path, capsys) -> None:
    f = tmp_path / "w.gate"
    f.write_text('gatelang 1\nsubjects s = ["A", "A"]\n')
    assert run(capsys, "check", str(f))[0] == 0
    assert run(capsys, "check", "--strict", str(f))[0] == 2


@pytest.mark.parametrize("fmt", ["text", "json", "dot", "mermaid"])
def test_plan_formats(fmt, capsys) -> None:
    code, out, err = run(capsys, "plan", str(REF), "--format", fmt)
    assert code == 0, err
    marker = {"text": "edit.neural_gate", "json": '"schema_version": 2',
              "dot": "digraph plan", "mermaid": "flowchart LR"}[fmt]
    assert marker in out


def test_plan_writes_a_file_and_reports_model_mismatch(tmp_path, capsys) -> None:
    target = tmp_path / "out" / "plan.json"
    assert run(capsys, "plan", str(REF), "--format", "json", "-o", str(target))[0] == 0
    assert json.loads(target.read_text())["policies"] == ["no_home_addresses"]
    code, _, err = run(capsys, "plan", str(EXAMPLES / "anonymize-encoders.gate"))
    assert code == 2 and "error[G303]" in err
    assert run(capsys, "plan", str(EXAMPLES / "anonymize-encoders.gate"),
               "--model", "tiny-clip")[0] == 0


def test_fmt_check_and_rewrite(tmp_path, capsys) -> None:
    f = tmp_path / "p.gate"
    shutil.copy(REF, f)
    assert run(capsys, "fmt", "--check", str(f))[0] == 0
    f.write_text(REF.read_text().replace("  refuse", "     refuse"))
    code, _, err = run(capsys, "fmt", "--check", str(f))
    assert code == 1 and "would reformat" in err
    assert run(capsys, "fmt", str(f))[0] == 0
    assert f.read_text() == REF.read_text()


def test_convert_both_ways(tmp_path, capsys) -> None:
    code, out, _ = run(capsys, "convert", str(REF))
    assert code == 0 and yaml.safe_load(out)["policies"]["no_home_addresses"]
    y = tmp_path / "home-address.yaml"
    y.write_text(out)
    code, back, _ = run(capsys, "convert", str(y))
    assert code == 0 and back == REF.read_text()


def test_diff_reports_loosening(tmp_path, capsys) -> None:
    new = tmp_path / "new.gate"
    new.write_text(REF.read_text()
                   .replace(', "王秀英"', "")
                   .replace("refusal(heldout) >= 95%", "refusal(heldout) >= 90%")
                   .replace("in en, zh", "in en, zh, es"))
    code, out, _ = run(capsys, "diff", str(REF), str(new))
    assert code == 0
    assert "- refused subjects removed: 王秀英  [looser]" in out
    assert "+ languages added: es  [stricter]" in out
    assert "refusal(heldout) >= 95% -> 90% (loosened)" in out
    assert run(capsys, "diff", "--exit-code", str(REF), str(new))[0] == 1
    code, out, _ = run(capsys, "diff", "--format", "json", str(REF), str(REF))
    assert code == 0 and json.loads(out) == []


def test_diff_against_a_git_revision(tmp_path, capsys) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    policy = repo / "p.gate"
    policy.write_text(REF.read_text().replace(
        'subjects protected = ["Alice Okafor", "Chen Moreau", "王秀英"]',
        'subjects protected = from "people.csv" column "name"'))
    (repo / "people.csv").write_text("name\nAlice Okafor\nChen Moreau\n")
    env = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "p.gate", "people.csv"], cwd=repo, check=True)
    subprocess.run(["git", *env, "commit", "-q", "-m", "policy"], cwd=repo, check=True)
    policy.write_text(policy.read_text().replace("leakage(heldout) <= 5%",
                                                  "leakage(heldout) <= 1%"))
    (repo / "people.csv").write_text("name\nAlice Okafor\nChen Moreau\nPriya Raman\n")
    code, out, err = run(capsys, "diff", "--git", "HEAD", str(policy))
    assert code == 0, err
    assert "leakage(heldout) <= 5% -> 1% (tightened)" in out
    # The subject file is read at the same revision as the policy.
    assert "refused subjects added: Priya Raman  [stricter]" in out
    policy.write_text("gatelang 1\n")
    subprocess.run(["git", "add", "p.gate"], cwd=repo, check=True)
    subprocess.run(["git", *env, "commit", "-q", "-m", "broken"], cwd=repo, check=True)
    code, _, err = run(capsys, "diff", "--git", "HEAD~1", str(policy))
    assert code == 0, err
    policy.write_text("gatelang 1\npolicy {\n")
    subprocess.run(["git", *env, "commit", "-qam", "broken"], cwd=repo, check=True)
    policy.write_text("gatelang 1\n")
    code, _, err = run(capsys, "diff", "--git", "HEAD", str(policy))
    assert code == 2 and "HEAD:p.gate:2:8: error[G001]" in err
    code, _, err = run(capsys, "diff", "--git", "nosuchrev", str(policy))
    assert code == 1 and "git:" in err


def test_schema_describes_the_yaml_form(capsys) -> None:
    code, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    assert code == 0 and schema["required"] == ["gatelang"]
    policy = schema["properties"]["policies"]["additionalProperties"]
    pattern = re.compile(policy["properties"]["require"]["items"]["pattern"])
    twin = yaml.safe_load((EXAMPLES / "home-address.yaml").read_text())
    for line in twin["policies"]["no_home_addresses"]["require"]:
        assert pattern.match(line), line
    assert not pattern.match("happiness >= 5%")
    assert set(twin) <= set(schema["properties"])


def test_malformed_input_never_tracebacks(tmp_path, capsys) -> None:
    binary = tmp_path / "x.gate"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    for argv in (["check", str(binary)], ["plan", str(binary)], ["fmt", str(binary)],
                 ["convert", str(binary)], ["diff", str(binary), str(REF)],
                 ["check", str(tmp_path / "missing.gate")], ["plan", str(tmp_path)],
                 ["convert", str(tmp_path / "x.txt")]):
        code, _, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        assert "Traceback" not in err and "error" in err


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "gatelang", "check", str(REF)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_hook_mode_skips_yaml_that_is_not_a_policy(tmp_path, capsys) -> None:
    other = tmp_path / "ci.yaml"
    other.write_text("jobs: {}\n")
    assert run(capsys, "check", str(other))[0] == 2
    assert run(capsys, "check", "--skip-non-policy", str(other), str(REF))[0] == 0
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"gatelang-check", "gatelang-fmt"}
    for h in hooks:
        assert main(h["entry"].split()[1:] + [str(REF)]) == 0


def test_tutorial_policy_checks_and_plans(tmp_path, capsys) -> None:
    tutorial = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    policy = tutorial.split("```gate\n", 1)[1].split("```", 1)[0]
    f = tmp_path / "home.gate"
    f.write_text(policy, encoding="utf-8")
    assert run(capsys, "check", str(f))[0] == 0
    code, out, _ = run(capsys, "plan", str(f))
    assert code == 0
    assert "13 nodes, 17 edges" in out and "edit.neural_gate" in out


def test_diff_sees_recombined_rules(tmp_path, capsys) -> None:
    head = "gatelang 1\nuse stdlib.attributes\nuse stdlib.languages\npolicy p {\n"
    old = tmp_path / "old.gate"
    new = tmp_path / "new.gate"
    old.write_text(head + '  refuse home_address about "A" in en via text\n'
                   '  refuse email about "B" in en via text\n}\n')
    new.write_text(head + '  refuse home_address about "B" in en via text\n'
                   '  refuse email about "A" in en via text\n}\n')
    code, out, _ = run(capsys, "diff", str(old), str(new))
    assert "no longer refused: email of 'B' in en via text; home_address of 'A'" in out
    assert "[looser]" in out and "now refused" in out
