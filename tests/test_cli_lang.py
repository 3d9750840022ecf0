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
    marker = {"text": "  edit.", "json": '"schema_version": 2',
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
    require = policy["properties"]["require"]["oneOf"]
    assert require[0]["enum"] == ["strict"]
    pattern = re.compile(require[1]["items"]["oneOf"][0]["pattern"])
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
    blocks = re.findall(r"```(\w*)\n(.*?)```", tutorial, re.S)
    gate = [text for kind, text in blocks if kind == "gate"]
    policy, subjects_line = gate[0], gate[-1].strip()  # §2's policy, §4's people file
    assert subjects_line.startswith("subjects protected = from")
    policy = re.sub(r"^subjects protected = .*$", subjects_line, policy, flags=re.M)
    (tmp_path / "people.csv").write_text(next(t for k, t in blocks if k == "csv"),
                                         encoding="utf-8")
    f = tmp_path / "home.gate"
    f.write_text(policy, encoding="utf-8")
    assert run(capsys, "check", str(f))[0] == 0
    code, out, _ = run(capsys, "plan", str(f))
    assert code == 0
    # §5 shows what `gatelang plan home.gate` prints after §4: its totals must be today's.
    shown = re.search(r"^\d+ nodes, \d+ edges; .*$", tutorial, re.M).group(0)
    assert shown in out, out[-300:]
    edit_op = re.search(r"^  [0-9a-f]{16}  (edit\.\w+)", out, re.M).group(1)
    assert edit_op in tutorial


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


# -- adversarial input (tests/hardening/ and the fuzz findings) -----------------------------

HARDENING = Path(__file__).parent / "hardening"
_LOCATED = re.compile(r"^.+:\d+:\d+: (error|warning)\[G\d{3}\]: ", re.M)


def _in_thread(fn, timeout: float = 20):
    """fn() in a daemon thread; fails instead of hanging when fn blocks (FIFO regressions)."""
    import threading

    box: list = []
    t = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the command blocked"
    return box[0]


def test_yaml_names_outside_the_name_syntax_fail_check(capsys) -> None:
    """Defect 1: `a b`, `~`, `<script>` as YAML policy / subject-set names passed `check`."""
    code, _, err = run(capsys, "check", str(HARDENING / "bad-names.yaml"))
    assert code == 2 and err.count("error[G006]") == 4
    assert f"{HARDENING / 'bad-names.yaml'}:4:3: error[G006]: subject set name" in err
    # convert stops at the same error instead of "would change the policy's meaning" (12).
    code, _, err = run(capsys, "convert", str(HARDENING / "bad-names.yaml"))
    assert code == 2 and "error[G006]" in err and "meaning" not in err


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs symlinks and FIFOs")
def test_check_dir_reads_only_regular_files_inside_it(tmp_path, capsys) -> None:
    """Defect 2: links out of the folder were followed (/etc/passwd printed, /dev/zero read
    until memory ran out); a FIFO named x.gate blocked forever."""
    import os

    d = tmp_path / "policies"
    d.mkdir()
    shutil.copy(REF, d / "ok.gate")
    os.symlink("/etc/passwd", d / "passwd.gate")
    os.symlink("/dev/zero", d / "zero.gate")
    os.symlink("/dev/zero", d / "zero.yaml")
    os.mkfifo(d / "fifo.gate")
    os.mkfifo(d / "fifo.yaml")
    os.symlink("ok.gate", d / "alias.gate")  # a link that stays inside is fine
    code, _, err = _in_thread(lambda: run(capsys, "check", str(d)))
    assert code == 2
    assert "root:" not in err  # nothing of /etc/passwd is shown
    assert f"{d / 'passwd.gate'}:1:1: error[G120]" in err
    assert f"{d / 'zero.gate'}:1:1: error[G120]" in err
    assert f"{d / 'zero.yaml'}:1:1: error[G120]" in err
    assert f"{d / 'fifo.gate'}:1:1: error[G004]" in err and "FIFO" in err
    assert f"{d / 'fifo.yaml'}:1:1: error[G004]" in err
    assert "7 file(s) checked: 5 error(s)" in err
    # fmt neither reads nor rewrites them either.
    code, _, err = _in_thread(lambda: run(capsys, "fmt", "--check", str(d)))
    assert code == 2 and "root:" not in err
    assert (d / "passwd.gate").is_symlink()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_named_on_the_command_line_is_refused(tmp_path, capsys) -> None:
    import os

    link = tmp_path / "zero.gate"
    os.symlink("/dev/zero", link)
    for argv in (["check", str(link)], ["plan", str(link)], ["fmt", "--diff", str(link)],
                 ["convert", str(link)], ["diff", str(link), str(REF)]):
        code, _, err = _in_thread(lambda argv=argv: run(capsys, *argv))
        assert code == 2 and f"{link}:1:1: error[G004]" in err and "a device" in err, argv


def test_oversized_policy_is_located_at_1_1(tmp_path, capsys, monkeypatch) -> None:
    """Defect 13: G004 for an oversized or unreadable file had no line:col."""
    from gatelang.syntax import source

    monkeypatch.setattr(source, "MAX_BYTES", 100)
    big = tmp_path / "big.gate"
    big.write_text(REF.read_text())
    code, _, err = run(capsys, "check", str(big))
    assert code == 2 and err.startswith(f"{big}:1:1: error[G004]: {big}: file is larger than")
    code, _, err = run(capsys, "check", str(tmp_path / "missing.gate"))
    assert code == 2 and err.startswith(f"{tmp_path / 'missing.gate'}:1:1: error[G004]")


def _git_repo(tmp_path: Path) -> tuple[Path, list[str]]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    return repo, ["-c", "user.name=t", "-c", "user.email=t@example.com"]


def test_diff_git_refuses_revisions_that_look_like_options(tmp_path, capsys) -> None:
    """Defect 3: `--git=--output=FILE` reached `git archive` as an option and truncated FILE."""
    repo, env = _git_repo(tmp_path)
    shutil.copy(REF, repo / "p.gate")
    (repo / "victim.txt").write_text("precious\n")
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", *env, "commit", "-q", "-m", "x"], cwd=repo, check=True)
    for rev in ("--output=victim.txt", "--output", "-x", "-", "a\nb"):
        code, out, err = run(capsys, "diff", f"--git={rev}", str(repo / "p.gate"))
        assert code == 2 and "is not a revision" in err and out == "", rev
        assert (repo / "victim.txt").read_text() == "precious\n"
    code, out, _ = run(capsys, "diff", "--git=HEAD", str(repo / "p.gate"))
    assert code == 0 and out == "no semantic changes\n"


def test_diff_git_skips_committed_symlinks(tmp_path, capsys) -> None:
    """Defect 7: a committed absolute symlink made tarfile raise AbsoluteLinkError."""
    import os

    repo, env = _git_repo(tmp_path)
    shutil.copy(REF, repo / "p.gate")
    os.symlink("/etc/passwd", repo / "abs.gate")
    os.symlink("../../outside.gate", repo / "up.gate")
    os.symlink("p.gate", repo / "alias.gate")
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", *env, "commit", "-q", "-m", "x"], cwd=repo, check=True)
    code, out, err = run(capsys, "diff", "--git", "HEAD", str(repo / "p.gate"))
    assert code == 0 and out == "no semantic changes\n", err
    # The policy itself a link at that revision: a clear refusal, nothing read through it.
    (repo / "abs.gate").unlink()
    shutil.copy(REF, repo / "abs.gate")
    code, _, err = run(capsys, "diff", "--git", "HEAD", str(repo / "abs.gate"))
    assert code == 1 and "is a symbolic link" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["plan"], ["fmt", "--diff"], ["convert"], ["check"]])
@pytest.mark.parametrize("name", ["surrogate.gate", "surrogate.yaml"])
def test_lone_surrogate_gives_a_located_error(name, argv, capsys) -> None:
    """Defect 7: a `\\ud800` escape in a subject name crashed plan, fmt --diff, convert."""
    code, out, err = run(capsys, *argv, str(HARDENING / name))
    assert code == 2 and _LOCATED.search(err), err
    assert "Traceback" not in err and "internal error" not in err
    (out + err).encode("utf-8")


def test_refuse_rule_on_a_clip_model_is_a_located_plan_error(capsys) -> None:
    """Defect 7: `plan --model tiny-clip` of a refuse policy planned (and crashed later)."""
    code, out, err = run(capsys, "plan", str(REF), "--model", "tiny-clip")
    assert code == 2 and out == ""
    assert f"{REF}:12:3: error[G306]: model tiny-clip cannot answer questions" in err
    assert "G304" not in err  # the layer is moot when there are no decoder layers


def test_cr_only_policy_checks_and_plans_like_its_lf_twin(capsys) -> None:
    """Defect 10: CR-only line ends made the file silently empty (check ok, 0 nodes)."""
    code, lf, _ = run(capsys, "plan", str(REF))
    code, cr, err = run(capsys, "plan", str(HARDENING / "cr-only.gate"))
    assert code == 0, err
    assert cr.splitlines()[-1] == lf.splitlines()[-1]  # "N nodes, M edges; ..."
    assert run(capsys, "check", str(HARDENING / "cr-only.gate"))[0] == 0
    # convert proves the meaning is kept (it used to refuse the file, defect 12).
    code, out, err = run(capsys, "convert", str(HARDENING / "cr-only.gate"))
    assert code == 0 and "no_home_addresses:" in out, err


def test_a_file_without_a_policy_does_not_pass_silently(capsys) -> None:
    """Defect 10: check said ok and plan gave 0 nodes for a file that defines nothing."""
    nothing = HARDENING / "nothing.gate"
    code, _, err = run(capsys, "check", str(nothing))
    assert code == 0 and f"{nothing}:1:1: warning[G205]" in err and "1 warning(s)" in err
    assert run(capsys, "check", "--strict", str(nothing))[0] == 2
    code, out, err = run(capsys, "plan", str(nothing))
    assert code == 2 and out == "" and f"{nothing}:1:1: error[G205]" in err


def test_convert_round_trips_an_empty_require_block(tmp_path, capsys) -> None:
    """Defect 12: `require {}` was refused as "would change the policy's meaning"."""
    code, out, err = run(capsys, "convert", str(HARDENING / "require-empty.gate"))
    assert code == 0 and "require: []" in out, err
    y = tmp_path / "r.yaml"
    y.write_text(out)
    code, back, err = run(capsys, "convert", str(y))
    assert code == 0 and "  require {}\n" in back, err


def test_unexpected_errors_in_language_commands_are_not_tracebacks(monkeypatch, capsys) -> None:
    """The last line of defence: a bug in a language command is a message and exit 1."""
    import gatelang.cli.lang as lang

    def boom(args):
        raise KeyError("surprise \ud800")

    monkeypatch.setattr(lang, "cmd_check", boom)
    code, _, err = run(capsys, "check", str(REF))
    assert code == 1 and "internal error in `gatelang check`" in err and "KeyError" in err


def test_plan_dot_labels_break_lines(capsys) -> None:
    code, out, _ = run(capsys, "plan", "--format", "dot", str(REF))
    assert code == 0
    label = re.search(r'label="(data\.queries[^"]*)"', out).group(1)
    assert "\\n" in label and "\\\\n" not in label  # dot's line break, not a literal backslash


def test_check_finds_g305_without_a_model(tmp_path, capsys) -> None:
    """Rules naming every stdlib language leave no unseen language on any model: `check`
    reports it, not only `plan`."""
    f = tmp_path / "p.gate"
    f.write_text('gatelang 1\nuse stdlib.attributes.contact\nuse stdlib.languages\n'
                 'subjects s = ["Alice Okafor"]\npolicy p {\n'
                 '  refuse home_address about s in all via text\n'
                 '  require { refusal(unseen_language) >= 90% }\n}\n')
    code, _, err = run(capsys, "check", str(f))
    assert code == 2 and f"{f}:7:13: error[G305]" in err
