"""Parser, YAML loader and formatter: spans, comments, round trips, idempotence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatelang.errors import DiagnosticError
from gatelang.ir import check, check_text
from gatelang.syntax import ast
from gatelang.syntax.format import convert, fmt, format_source, format_text
from gatelang.syntax.parser import grammar_text, parse_gate
from gatelang.syntax.source import parse_source
from gatelang.syntax.yaml_form import parse_yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.gate"))

SRC = """gatelang 1
# leading
use stdlib.attributes.contact  # trailing
use stdlib.languages
subjects protected = ["Alice Okafor",   # first
  "Chen Moreau"]
policy p {
  description "Say \\"no\\"."
  refuse home_address, phone_number about protected, "Priya Raman" in en, zh via text, image
  keep other_subjects
  method neural_gate { sparsity 0.5%  steps 40  layer auto }
  require {
    refusal(heldout) >= 95%  # strict
    # before close
  }
}
"""


def test_parse_builds_spans_on_every_node() -> None:
    f = parse_gate(SRC, "p.gate")
    assert f.header.version == 1
    policy = f.items[-1]
    assert isinstance(policy, ast.Policy)
    refuse = policy.items[1]
    assert isinstance(refuse, ast.Refuse)
    assert [a.text for a in refuse.attributes] == ["home_address", "phone_number"]
    assert refuse.subjects[1].quoted and refuse.subjects[1].text == "Priya Raman"
    assert (refuse.span.line, refuse.span.col) == (9, 3)
    assert refuse.attributes[1].span.col == 24
    desc = policy.items[0]
    assert isinstance(desc, ast.Field) and desc.value.text == 'Say "no".'
    method = policy.items[3]
    assert isinstance(method, ast.Method)
    assert [(p.name.text, p.value.kind, p.value.value) for p in method.params] == [
        ("sparsity", "percent", 0.5), ("steps", "number", 40.0), ("layer", "name", "auto")]
    assert [c.text for c in f.comments] == ["# leading", "# trailing", "# first", "# strict",
                                            "# before close"]


def test_syntax_error_names_what_was_expected() -> None:
    with pytest.raises(DiagnosticError) as exc:
        parse_gate("gatelang 1\npolicy p { refuse a about b in c }\n", "x.gate")
    d = exc.value.diagnostics[0]
    assert d.code == "G001" and (d.span.line, d.span.col) == (2, 34)
    assert "'via'" in (d.hint or "")


def test_keywords_are_names_where_no_keyword_fits() -> None:
    # `policy` is a keyword, but a subject set may still be called `owner` after `about`.
    f = parse_gate('gatelang 1\nsubjects keep_list = ["A"]\n', "x.gate")
    assert f.items[0].name.text == "keep_list"


def test_yaml_form_loads_to_the_same_tree_shape() -> None:
    y = parse_yaml(
        "gatelang: 1\nuse: [stdlib.languages, {file: other.gate}]\n"
        "subjects:\n  s: [\"Alice Okafor\"]\n  t: {from: people.csv, column: name}\n"
        "policies:\n  p:\n    rules:\n      - refuse: home_address\n        about: [s, Bob Smith]\n"
        "        in: [en, no]\n        via: text\n    method: {neural_gate: {steps: 4}}\n",
        "x.yaml",
    )
    use_file = y.items[1]
    assert isinstance(use_file, ast.Use) and use_file.is_file
    refuse = y.items[-1].items[0]
    # A bare word is a set name, anything else a person; `no` stays the string "no".
    assert [(s.text, s.quoted) for s in refuse.subjects] == [("s", False), ("Bob Smith", True)]
    assert [lang.text for lang in refuse.languages] == ["en", "no"]


def test_yaml_rejects_aliases_and_never_constructs_objects() -> None:
    with pytest.raises(DiagnosticError) as exc:
        parse_yaml("gatelang: 1\nsubjects:\n  a: &x [\"A\"]\n  b: *x\n", "x.yaml")
    assert "aliases" in exc.value.diagnostics[0].message
    with pytest.raises(DiagnosticError):
        parse_yaml("gatelang: !!python/object/apply:os.system ['true']\n", "x.yaml")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_canonical_and_formatting_is_idempotent(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert fmt(path) == text
    once = format_text(SRC, "p.gate")
    assert format_text(once, "p.gate") == once


def test_yaml_example_is_canonical() -> None:
    path = ROOT / "docs" / "examples" / "home-address.yaml"
    assert fmt(path) == path.read_text(encoding="utf-8")


def test_fmt_keeps_comments_and_meaning() -> None:
    out = format_text(SRC, "p.gate")
    for c in ("# leading", "# trailing", "# first", "# strict", "# before close"):
        assert c in out
    assert "    # before close\n  }\n" in out
    a = check_text(SRC, "p.gate").ir
    b = check_text(out, "p.gate").ir
    assert a is not None and b is not None
    assert a.semantic_dump() == b.semantic_dump()


def test_long_lists_wrap_one_item_per_line() -> None:
    names = ", ".join(f'"Person Number {i}"' for i in range(10))
    out = format_text(f"gatelang 1\nsubjects many = [{names}]\n", "x.gate")
    assert out.count("\n  \"Person Number") == 10
    assert format_text(out, "x.gate") == out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_gate_yaml_round_trip_gives_the_same_ir(path: Path) -> None:
    original = check(path)
    assert original.ir is not None, original.render()
    yaml_text = convert(path, "yaml")
    as_yaml = check_text(yaml_text, str(path.with_suffix(".yaml")), "yaml", root=path.parent)
    assert as_yaml.ir is not None, as_yaml.render()
    assert as_yaml.ir.semantic_dump() == original.ir.semantic_dump()
    back = format_source(parse_source(yaml_text, "x.yaml"), "gate")
    assert back == path.read_text(encoding="utf-8")  # comments and layout survive both ways


def test_yaml_fmt_is_idempotent() -> None:
    yaml_text = format_source(parse_source(SRC, "p.gate"), "yaml")
    again = format_source(parse_source(yaml_text, "p.yaml"), "yaml")
    assert again == yaml_text


def test_grammar_is_package_data_and_in_the_spec() -> None:
    grammar = grammar_text()
    assert "start: header item*" in grammar
    spec = (ROOT / "specs" / "grammar.md").read_text(encoding="utf-8")
    block = spec.split("```lark\n", 1)[1].split("```", 1)[0]
    assert block == grammar


def test_several_syntax_errors_are_reported_in_one_run() -> None:
    src = ("gatelang 1\npolicy p {\n  refuse a about in en via text\n  keep x y\n}\n"
           'policy q { refuse b about c in en via @ text }\nsubjects s = ["a" "b"]\n')
    with pytest.raises(DiagnosticError) as exc:
        parse_gate(src, "x.gate")
    assert [(d.code, d.span.line) for d in exc.value.diagnostics] == [
        ("G001", 3), ("G001", 4), ("G001", 6), ("G001", 7)]


def test_deeply_nested_yaml_is_a_diagnostic_not_a_crash() -> None:
    result = check_text("gatelang: 1\nsubjects: " + "[" * 3000, "deep.yaml")
    assert not result.ok and result.errors[0].code == "G002"


def test_very_long_lines_are_shown_as_a_window_around_the_span() -> None:
    src = "gatelang 1\nsubjects a = [" + '"x",' * 500 + '"y" "z"]\n'
    text = check_text(src, "long.gate").render()
    shown, caret = text.splitlines()[1:3]
    assert len(shown) < 200 and shown.count("…") == 1
    assert caret.index("^") == shown.index('"z"')


def test_names_may_use_any_script() -> None:
    src = ('gatelang 1\nuse stdlib.attributes.contact\nuse stdlib.languages\n'
           'subjects 客户 = ["王秀英"]\npolicy 保护 {\n'
           '  refuse home_address about 客户 in zh via text\n}\n')
    gate = check_text(src, "u.gate")
    assert gate.ir is not None and "客户" in gate.ir.subject_sets
    as_yaml = format_source(parse_source(src, "u.gate"), "yaml")
    again = check_text(as_yaml, "u.yaml")
    assert again.ir is not None and again.ir.semantic_dump() == gate.ir.semantic_dump()
    with pytest.raises(DiagnosticError):
        parse_gate('gatelang 1\nsubjects 1abc = ["x"]\n', "d.gate")  # no leading digit


# -- adversarial input (tests/hardening/) ----------------------------------------------------

HARDENING = Path(__file__).parent / "hardening"


@pytest.mark.parametrize("name", ["a b", "~", "<script>", "1st", "x.y", ""])
def test_yaml_policy_and_subject_set_names_follow_the_name_syntax(name: str) -> None:
    """Defect 1: YAML names outside the `.gate` name syntax passed `check` (and reached HTML)."""
    for text in (
        f'gatelang: 1\npolicies:\n  {json.dumps(name)}:\n    rules: []\n',
        f'gatelang: 1\nsubjects:\n  {json.dumps(name)}: ["Alice Okafor"]\n',
    ):
        with pytest.raises(DiagnosticError) as exc:
            parse_yaml(text, "n.yaml")
        d = exc.value.diagnostics[0]
        assert d.code == "G006" and d.span is not None and (d.span.line, d.span.col) == (3, 3)


def test_yaml_names_in_any_script_still_pass() -> None:
    src = parse_yaml('gatelang: 1\nsubjects:\n  客户: ["王秀英"]\n  vip-2: ["A"]\n', "n.yaml")
    assert [i.name.text for i in src.items] == ["客户", "vip-2"]


def test_bad_yaml_names_fixture_reports_each_name() -> None:
    result = check(HARDENING / "bad-names.yaml")
    assert [(d.code, d.span.line) for d in result.errors] == [
        ("G006", 4), ("G006", 5), ("G006", 7), ("G006", 13)]


def test_cr_only_line_ends_are_line_ends() -> None:
    """Defect 10: with CR-only line ends the first comment swallowed the whole file."""
    cr = parse_gate((HARDENING / "cr-only.gate").read_text(encoding="utf-8"), "cr.gate")
    lf = parse_gate((ROOT / "docs/examples/home-address.gate").read_text(encoding="utf-8"),
                    "lf.gate")
    assert [type(i).__name__ for i in cr.items] == [type(i).__name__ for i in lf.items]
    assert [i.span for i in cr.items] == [i.span.model_copy(update={"file": "cr.gate"})
                                          for i in lf.items]
    # A string may not run past a lone CR either.
    with pytest.raises(DiagnosticError) as exc:
        parse_source('gatelang 1\rsubjects s = ["a\rb"]\r', "s.gate")
    assert exc.value.diagnostics[0].span.line == 2


def test_cr_only_file_formats_like_its_lf_twin() -> None:
    assert fmt(HARDENING / "cr-only.gate") == (ROOT / "docs/examples/home-address.gate").read_text(
        encoding="utf-8")


def test_empty_require_round_trips_through_yaml() -> None:
    """Defect 12: `require {}` became `require:` (null), which the YAML loader refused."""
    as_yaml = convert(HARDENING / "require-empty.gate", "yaml")
    assert "    require: []\n" in as_yaml
    back = format_source(parse_source(as_yaml, "r.yaml"), "gate")
    assert "  require {}\n" in back
    assert check_text(as_yaml, "r.yaml").ok


@pytest.mark.parametrize("name", ["surrogate.gate", "surrogate.yaml"])
def test_lone_surrogate_escape_is_a_located_error(name: str) -> None:
    """Defect 7: a `\\ud800` escape made a lone surrogate that crashed plan/fmt/convert."""
    result = check(HARDENING / name)
    d = result.errors[0]
    assert d.code == ("G001" if name.endswith(".gate") else "G002")
    assert d.span is not None and (d.span.line, d.span.col) in ((6, 29), (7, 17))
    result.render().encode("utf-8")  # printable: nothing unencodable in the message


def test_surrogate_pair_escapes_still_work() -> None:
    src = parse_gate('gatelang 1\nsubjects s = ["\\ud83d\\ude00"]\n', "p.gate")
    assert src.items[0].members[0].text == "\U0001f600"


def test_lone_surrogate_in_text_held_in_memory_is_located() -> None:
    result = check_text('gatelang 1\nsubjects s = ["a\ud800"]\n', "m.gate")
    d = result.errors[0]
    assert d.code == "G004" and (d.span.line, d.span.col) == (2, 17)
    result.render().encode("utf-8")


def test_every_line_end_counts_the_same_for_parser_and_caret() -> None:
    """The renderer splits lines like `str.splitlines` (form feed, U+2028, ...): so does the
    `.gate` reader, or the caret would sit under the wrong line."""
    text = check_text('gatelang 1\n# a\u2028subjects s = ["x" "y"]\n', "u.gate").render()
    head, source, _caret = text.splitlines()[:3]
    assert head.startswith("u.gate:3:19: error[G001]") and source.endswith('["x" "y"]')
    # A name holding such a character (written as an escape) keeps it through fmt and convert.
    formatted = format_text('gatelang 1\nsubjects s = ["a\\u2028b"]\n', "u.gate")
    assert '"a\\u2028b"' in formatted
    as_yaml = format_source(parse_source(formatted, "u.gate"), "yaml")
    assert parse_source(as_yaml, "u.yaml").items[0].members[0].text == "a\u2028b"
