"""The IR: resolution, defaults, golden IR for the examples, both syntaxes agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

import gatelang
from gatelang.errors import DiagnosticError
from gatelang.ir import PolicyFile, RefuseRule, check, check_text, load, loads
from gatelang.methods import get_method
from gatelang.stdlib import load_stdlib

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
GOLDEN = Path(__file__).parent / "golden" / "ir"


def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> PolicyFile:
    monkeypatch.chdir(ROOT)  # spans then hold repository-relative paths
    return load(f"docs/examples/{name}")


@pytest.mark.parametrize("name", ["home-address.gate", "layered.gate"])
def test_golden_ir(name: str, monkeypatch: pytest.MonkeyPatch, assert_golden) -> None:
    ir = _load(name, monkeypatch)
    # The stdlib hash changes with any edit of its files (even a comment); the version is kept.
    dumped = {**ir.model_dump(mode="json"), "stdlib_sha256": "<stdlib sha256>"}
    text = json.dumps(dumped, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    golden = GOLDEN / (name + ".json")
    assert_golden(golden, text)
    # The golden file is itself valid IR.
    restored = PolicyFile.model_validate_json(golden.read_text(encoding="utf-8"))
    assert restored == ir.model_copy(update={"stdlib_sha256": "<stdlib sha256>"})


def test_reference_example_means_what_the_acceptance_runs_expect(monkeypatch) -> None:
    ir = _load("home-address.gate", monkeypatch)
    (policy,) = ir.policies
    (rule,) = policy.rules
    assert isinstance(rule, RefuseRule)
    assert rule.attributes == ("home_address", "phone_number")
    assert rule.languages == ("en", "zh")
    assert rule.modalities == ("text", "image")
    assert 2 <= len(rule.subjects) <= 3
    assert {k.what for k in policy.keep} == {"other_subjects", "other_attributes", "utility"}
    # No method block: the default refuse method, at its defaults (it configures itself
    # against the requirements on a selection split of the edit data).
    assert policy.method.name == "refusal_patch" and policy.method.profile is None
    assert policy.method.overrides == ()
    assert policy.method.params == get_method("refusal_patch").defaults()
    reqs = {(r.metric, r.split, r.op): r.threshold for r in policy.requirements}
    assert reqs == {("refusal", "heldout", ">="): 0.95, ("leakage", "heldout", "<="): 0.05,
                    ("locality", "heldout", ">="): 0.95, ("utility_drop", "all", "<="): 0.02}
    assert ir.stdlib_version == load_stdlib().version


def test_yaml_twin_has_the_same_meaning() -> None:
    gate = load(EXAMPLES / "home-address.gate")
    yaml = load(EXAMPLES / "home-address.yaml")
    assert yaml.syntax == "yaml"
    assert gate.semantic_dump() == yaml.semantic_dump()


def test_imports_and_subject_files_resolve_relative_to_their_file() -> None:
    ir = load(EXAMPLES / "layered.gate")
    assert ir.subject_sets["executives"].members == ("Alice Okafor", "Chen Moreau")
    opted = ir.subject_sets["opted_out"]
    assert opted.members == ("Priya Raman", "Tomás Herrera", "王秀英")
    assert opted.source.kind == "file" and opted.source.format == "csv"
    assert ir.uses[-1].kind == "file" and ir.uses[-1].path == "shared/subjects.gate"
    # Every file read, for lock files: the nested subject file and the import.
    assert set(ir.inputs) == {"shared/subjects.gate", "people.csv"}


def test_method_overrides_are_typed_and_merged() -> None:
    ir = loads(
        "gatelang 1\nuse stdlib.attributes.contact\nuse stdlib.languages\n"
        "policy p {\n  refuse email about \"A B\" in all via all\n"
        "  method neural_gate { sparsity 0.5%  steps 40  layer 2 }\n}\n",
    )
    m = ir.policies[0].method
    assert m.params["sparsity"] == pytest.approx(0.005)
    assert m.params["steps"] == 40 and isinstance(m.params["steps"], int)
    assert m.params["layer"] == 2
    assert m.overrides == ("sparsity", "steps", "layer")
    rule = ir.policies[0].rules[0]
    assert rule.languages == ("en", "zh", "es")
    # `via all` covers the modalities email has queries for (it has no scene queries).
    assert rule.modalities == ("text", "image", "document")


def test_all_attributes_means_private_ones_in_scope() -> None:
    ir = loads("gatelang 1\nuse stdlib.attributes\nuse stdlib.languages\n"
               'policy p {\n  refuse all about "A" in en via text\n}\n')
    attrs = ir.policies[0].rules[0].attributes
    assert "home_address" in attrs and "employer" not in attrs


def test_ir_is_frozen_and_rejects_unknown_fields(monkeypatch) -> None:
    ir = _load("home-address.gate", monkeypatch)
    with pytest.raises(ValidationError):
        ir.policies[0].model_copy(update={}).__class__(**{**ir.policies[0].model_dump(),
                                                          "surprise": 1})
    with pytest.raises(ValidationError):
        ir.policies[0].name = "other"  # type: ignore[misc]


def test_load_raises_every_error_at_once() -> None:
    with pytest.raises(DiagnosticError) as exc:
        loads("gatelang 1\npolicy p {\n  refuse a about b in c via d\n}\n")
    codes = [d.code for d in exc.value.diagnostics]
    assert codes.count("G101") == 1 and "G110" in codes and "G102" in codes and "G103" in codes
    assert exc.value.exit_code == 2


def test_check_never_raises_for_missing_files(tmp_path) -> None:
    result = check(tmp_path / "nope.gate")
    assert not result.ok and result.errors[0].code == "G004"
    result = check(tmp_path)
    assert not result.ok


def test_public_api_is_lazy_and_torch_free() -> None:
    import subprocess
    import sys

    code = ("import sys, gatelang; gatelang.compile; p = gatelang.compile("
            f"{str(EXAMPLES / 'home-address.gate')!r}); "
            "print(len(p), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[0]) > 5 and out[1] == "False"
    assert callable(gatelang.load) and "load" in dir(gatelang)
    with pytest.raises(AttributeError):
        gatelang.no_such_name  # noqa: B018


def test_profile_then_overrides_and_renamed_parameters_warn() -> None:
    from gatelang.ir import check_text

    head = ("gatelang 1\nuse stdlib.attributes.contact\nuse stdlib.languages\n"
            "policy p {\n  refuse email about \"A B\" in en via text\n")
    ir = loads(head + "  method neural_gate { profile tiny_llava  steps 3 }\n}\n")
    m = ir.policies[0].method
    assert m.profile == "tiny_llava" and m.overrides == ("steps",)
    assert m.params["steps"] == 3 and m.params["layer"] == 3  # explicit beats the profile
    res = check_text(head + "  method neural_gate { kl_factor 0.5 }\n}\n", "p.gate")
    assert res.ok and res.ir.policies[0].method.params["retain_weight"] == 0.5
    (warning,) = res.warnings
    assert warning.code == "G204" and "retain_weight" in warning.message
    assert warning.span.line == 6
    bad = check_text(head + "  method neural_gate { profile tiny }\n}\n", "p.gate")
    (err,) = bad.errors
    assert err.code == "G107" and "tiny_llava" in (err.hint or "")
    unknown = check_text(head + "  method finetune { mask_steps 3 }\n}\n", "p.gate")
    assert [e.code for e in unknown.errors] == ["G107"]


def test_fmt_rewrites_renamed_method_parameters() -> None:
    from gatelang.syntax.format import format_text

    src = ("gatelang 1\nuse stdlib.attributes.contact\nuse stdlib.languages\n"
           "policy p {\n  refuse email about \"A B\" in en via text\n"
           "  method neural_gate { kl_factor 0.5  steps 2 }\n}\n")
    out = format_text(src, "p.gate")
    assert "retain_weight 0.5" in out and "kl_factor" not in out
    assert loads(out).policies[0].method.params["retain_weight"] == 0.5


# -- adversarial input ---------------------------------------------------------------------------

_SUBJECTS_HEAD = "gatelang 1\nuse stdlib.attributes.contact\nuse stdlib.languages\n"
_SUBJECTS_POLICY = "policy p {\n  refuse home_address about s in en via text\n}\n"


def test_duplicate_subject_warning_is_linear(tmp_path) -> None:
    """Defect 6: 40k subjects with one duplicate at the end took minutes (list.count per name)."""
    import time

    names = [f"Person {i}" for i in range(99_999)]
    (tmp_path / "people.txt").write_text("\n".join([*names, names[-1]]) + "\n")
    (tmp_path / "p.gate").write_text(_SUBJECTS_HEAD + 'subjects s = from "people.txt"\n'
                                     + _SUBJECTS_POLICY)
    start = time.perf_counter()
    result = check(tmp_path / "p.gate")
    assert time.perf_counter() - start < 10
    assert result.ok and [d.code for d in result.warnings] == ["G201"]
    assert "'Person 99998'" in result.warnings[0].message


def test_subject_files_are_capped_by_count_and_size(tmp_path, monkeypatch) -> None:
    from gatelang.ir import subjects

    assert subjects.MAX_SUBJECTS == 100_000 and subjects.MAX_SUBJECT_BYTES == 16 * 2**20
    monkeypatch.setattr(subjects, "MAX_SUBJECTS", 10)
    (tmp_path / "people.txt").write_text("\n".join(f"P{i}" for i in range(11)))
    (tmp_path / "p.gate").write_text(_SUBJECTS_HEAD + 'subjects s = from "people.txt"\n'
                                     + _SUBJECTS_POLICY)
    result = check(tmp_path / "p.gate")
    d = result.errors[0]
    assert d.code == "G113" and "11 names" in d.message and d.span.line == 4
    assert [x.code for x in result.errors] == ["G113"]  # no cascade (G110, G123) from the rule
    (tmp_path / "people.txt").write_text("Alice Okafor\nChen Moreau\n")
    monkeypatch.setattr(subjects, "MAX_SUBJECT_BYTES", 10)
    d = check(tmp_path / "p.gate").errors[0]
    assert d.code == "G112" and "larger than" in d.message and d.span.line == 4


def test_inline_subject_sets_are_capped_too(monkeypatch) -> None:
    import importlib

    monkeypatch.setattr(importlib.import_module("gatelang.ir.lower"), "MAX_SUBJECTS", 10)
    members = ", ".join(f'"{i}"' for i in range(11))
    result = check_text(_SUBJECTS_HEAD + f"subjects s = [{members}]\n" + _SUBJECTS_POLICY,
                        "p.gate")
    assert [d.code for d in result.errors] == ["G113"]


def test_fifo_as_subject_file_is_refused_without_blocking(tmp_path) -> None:
    """Defect 2: a FIFO used as a subject file blocked `check` forever."""
    import os
    import threading

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "people.txt")
    (tmp_path / "p.gate").write_text(_SUBJECTS_HEAD + 'subjects s = from "people.txt"\n'
                                     + _SUBJECTS_POLICY)
    found: list = []
    t = threading.Thread(target=lambda: found.append(check(tmp_path / "p.gate")), daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "check blocked on a FIFO"
    d = found[0].errors[0]
    assert d.code == "G112" and "FIFO" in d.message and d.span.line == 4


def test_nul_in_a_use_path_says_what_it_is() -> None:
    """Defect 13: a NUL in a `use` path was reported as "outside root"."""
    for line in ('use "a\\u0000b.gate"', 'subjects s = from "a\\u0000b.txt"'):
        d = check_text(f"gatelang 1\n{line}\n", "p.gate").errors[0]
        assert d.code == "G112" and "NUL" in d.message and d.span.line == 2


def test_symlink_loop_in_a_use_path_is_located(tmp_path) -> None:
    import os

    os.symlink("loop.gate", tmp_path / "loop.gate")
    (tmp_path / "p.gate").write_text('gatelang 1\nuse "loop.gate"\n')
    d = check(tmp_path / "p.gate").errors[0]
    assert d.code == "G112" and d.span.line == 2


def test_unreadable_files_are_located_at_1_1(tmp_path) -> None:
    """Defect 13: G004 had no line:col."""
    for path in (tmp_path / "missing.gate", tmp_path, tmp_path / "x.txt"):
        result = check(path)
        d = result.errors[0]
        assert d.code == "G004" and d.span is not None and (d.span.line, d.span.col) == (1, 1)
        assert result.render().startswith(f"{path}:1:1: error[G004]")


def test_file_without_a_policy_is_not_silently_ok(tmp_path) -> None:
    """Defect 10: a file that defines nothing (as a CR-only file used to) passed silently."""
    result = check(Path(__file__).parent / "hardening" / "nothing.gate")
    assert result.ok and [d.code for d in result.warnings] == ["G205"]
    # A file of subject sets only is a library for `use`: no warning.
    assert check(EXAMPLES / "shared" / "subjects.gate", root=EXAMPLES).diagnostics == []


def test_require_strict_expands_the_profile_and_own_lines_replace_its_lines() -> None:
    from gatelang.ir import check_text
    from gatelang.stdlib import load_stdlib

    head = ("gatelang 1\nuse stdlib.attributes.contact\nuse stdlib.languages\n"
            'policy p {\n  refuse home_address about "Alice Okafor" in en via text\n'
            "  keep other_subjects\n")
    ir = loads(head + "  require strict { leakage(sampled) <= 1% }\n}\n")
    reqs = {r.key: r for r in ir.policies[0].requirements}
    assert reqs["leakage(sampled)"].threshold == pytest.approx(0.01)
    assert reqs["leakage(sampled)"].profile is None  # written by the policy
    assert reqs["leakage(prefill)"].profile == "strict"
    assert "exposure(heldout)" in reqs and "refusal(language)" in reqs
    # profile lines that do not apply (no `keep utility`) are left out, not errors
    assert "utility_drop(all)" not in reqs
    profile = load_stdlib().requirement_profiles["strict"]
    assert len(reqs) == len(profile) - 1
    bad = check_text(head + "  require strikt\n}\n", "p.gate")
    (err,) = bad.errors
    assert err.code == "G129" and (err.span.line, err.span.col) == (7, 11)
    yaml = ("gatelang: 1\nuse: [stdlib.attributes.contact, stdlib.languages]\npolicies:\n"
            "  p:\n    rules:\n      - refuse: [home_address]\n        about: [\"Alice Okafor\"]\n"
            "        in: [en]\n        via: [text]\n    keep: [other_subjects]\n"
            "    require: [strict, \"leakage(sampled) <= 1%\"]\n")
    assert loads(yaml, "p.yaml").semantic_dump() == ir.semantic_dump()


def test_refusal_languages_widen_strict_scoring_and_reach_the_plan() -> None:
    from gatelang.planner import plan
    from gatelang.syntax.format import format_source
    from gatelang.syntax.source import parse_source

    src = ("gatelang 1\nuse stdlib.attributes.contact\nuse stdlib.languages\n"
           'policy p {\n  refuse home_address about "Alice Okafor" in en via text\n'
           "  refusal_languages zh\n}\n")
    ir = loads(src, "p.gate")
    assert ir.policies[0].refusal_languages == ("zh",)
    verify = plan(ir).by_op("verify.refusal")[0]
    assert verify.params["refusal_languages"] == ["zh"]
    assert plan(ir).by_op("verify.sampled")[0].params["refusal_languages"] == ["zh"]
    yaml = format_source(parse_source(src, "p.gate", "gate"), "yaml")
    assert "refusal_languages: [zh]" in yaml
    assert loads(yaml, "p.yaml").semantic_dump() == ir.semantic_dump()
    from gatelang.ir import check_text

    bad = check_text(src.replace("refusal_languages zh", "refusal_languages xx"), "p.gate")
    assert [d.code for d in bad.errors] == ["G102"]
