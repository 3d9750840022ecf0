"""Property tests: no input, however broken, escapes as anything but a diagnostic."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatelang.cli import main
from gatelang.errors import DiagnosticError
from gatelang.ir import check_text
from gatelang.syntax.format import format_text

ROOT = Path(__file__).resolve().parent.parent
GATE = (ROOT / "docs/examples/home-address.gate").read_text(encoding="utf-8")
LAYERED = (ROOT / "docs/examples/layered.gate").read_text(encoding="utf-8")
YAML = (ROOT / "docs/examples/home-address.yaml").read_text(encoding="utf-8")
TOKENS = ["{", "}", "[", "]", ",", "(", ")", '"', "%", "#", "\n", " ", "policy", "refuse",
          "about", "in", "via", "all", "keep", "method", "require", ">=", "<=", "95%", "0.5",
          "-", ":", "- ", "&a", "*a", "!!python/object", "\x00", "\\", "é", "王", "gatelang 1"]
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw, base: str) -> str:
    text = base
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 12)))
        insert = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)))
        text = text[:i] + insert + text[j:]
    return text


def _only_diagnostics(text: str, file: str) -> None:
    result = check_text(text, file)
    if result.ir is None:
        assert result.errors
        for d in result.diagnostics:
            assert d.code.startswith("G") and d.message
            d.render(text)  # rendering never fails either


@SETTINGS
@given(st.text(max_size=300))
def test_random_text_gives_diagnostics(text: str) -> None:
    _only_diagnostics(text, "random.gate")
    _only_diagnostics(text, "random.yaml")


@SETTINGS
@given(mutated(GATE))
def test_mutated_gate_policies_give_diagnostics(text: str) -> None:
    _only_diagnostics(text, "mutated.gate")


@SETTINGS
@given(mutated(LAYERED))
def test_mutated_layered_policies_give_diagnostics(text: str) -> None:
    _only_diagnostics(text, "mutated.gate")


@SETTINGS
@given(mutated(YAML))
def test_mutated_yaml_policies_give_diagnostics(text: str) -> None:
    _only_diagnostics(text, "mutated.yaml")


@SETTINGS
@given(mutated(GATE))
def test_fmt_is_idempotent_and_keeps_meaning(text: str) -> None:
    try:
        once = format_text(text, "m.gate")
    except DiagnosticError:
        return
    assert format_text(once, "m.gate") == once
    before, after = check_text(text, "m.gate"), check_text(once, "m.gate")
    assert (before.ir is None) == (after.ir is None)
    if before.ir is not None:
        assert before.ir.semantic_dump() == after.ir.semantic_dump()


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutated(GATE))
def test_cli_exits_cleanly_on_mutated_files(tmp_path_factory, text: str) -> None:
    folder = tmp_path_factory.mktemp("cli")
    f = folder / "p.gate"
    f.write_text(text, encoding="utf-8", errors="surrogatepass")
    for argv in (["check", str(f)], ["plan", str(f)], ["fmt", "--check", str(f)]):
        assert main(argv) in (0, 1, 2)


@SETTINGS
@given(mutated(LAYERED))
def test_gate_to_yaml_and_back_keeps_meaning(text: str) -> None:
    from gatelang.syntax.format import _YAML_UNPRINTABLE, format_source
    from gatelang.syntax.source import parse_source

    try:
        src = parse_source(text, "m.gate")
    except DiagnosticError:
        return
    as_yaml = format_source(src, "yaml")
    back = format_source(parse_source(as_yaml, "m.yaml"), "gate")
    if not _YAML_UNPRINTABLE.search(text):  # comments with control characters get escaped
        # One conversion reaches the fixed point: YAML -> gate -> YAML gives the same YAML.
        assert format_source(parse_source(back, "b.gate"), "yaml") == as_yaml
    gate_ir = check_text(text, "m.gate", root=ROOT / "docs/examples").ir
    yaml_ir = check_text(as_yaml, "m.yaml", root=ROOT / "docs/examples").ir
    assert (gate_ir is None) == (yaml_ir is None)
    if gate_ir is not None:
        assert gate_ir.semantic_dump() == yaml_ir.semantic_dump()


@SETTINGS
@given(mutated(YAML))
def test_yaml_fmt_is_idempotent_and_keeps_meaning(text: str) -> None:
    try:
        once = format_text(text, "m.yaml")
    except DiagnosticError:
        return
    assert format_text(once, "m.yaml") == once
    before, after = check_text(text, "m.yaml"), check_text(once, "m.yaml")
    assert (before.ir is None) == (after.ir is None)
    if before.ir is not None:
        assert before.ir.semantic_dump() == after.ir.semantic_dump()
