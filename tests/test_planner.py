"""The planner: golden plan, sharing, stable ids, composition, capability checks, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest

from gatelang.errors import DiagnosticError, PlanError
from gatelang.ir import load, loads
from gatelang.planner import (
    TINY_CLIP_CAPABILITIES,
    TINY_LLAVA_CAPABILITIES,
    ModelCapabilities,
    Plan,
    known_ops,
    plan,
    render,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.gate"))
GOLDEN = Path(__file__).parent / "golden" / "plan"
HEAD = "gatelang 1\nuse stdlib.attributes\nuse stdlib.languages\n"


def _caps_for(path: Path) -> ModelCapabilities:
    return TINY_CLIP_CAPABILITIES if "anonymize" in path.read_text() else TINY_LLAVA_CAPABILITIES


def test_golden_plan(monkeypatch: pytest.MonkeyPatch, assert_golden) -> None:
    monkeypatch.chdir(ROOT)
    p = plan(load("docs/examples/home-address.gate"))
    data = p.to_dict()
    data["stdlib_sha256"] = "<stdlib sha256>"  # changes with any stdlib edit; ids use the version
    text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert_golden(GOLDEN / "home-address.json", text)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_plans_to_a_valid_dag(path: Path) -> None:
    p = plan(load(path), _caps_for(path))
    g = p.graph
    assert nx.is_directed_acyclic_graph(g) and nx.is_weakly_connected(g)
    for node in p.nodes():
        assert node.op in known_ops() and node.op.split(".")[0] == node.kind
        json.dumps(node.params)  # params are JSON, nothing else
    assert len(p.by_kind("report")) == len(p.policies)
    assert p.total_cost().forward_passes > 0
    for fmt in ("text", "dot", "mermaid", "json"):
        assert render(p, fmt)


def test_plan_round_trips_through_json_and_detects_edits() -> None:
    p = plan(load(ROOT / "docs/examples/layered.gate"))
    text = p.to_json()
    again = Plan.from_json(text)
    assert again.to_json() == text
    data = json.loads(text)
    assert data["schema_version"] == 2 and data["stdlib_version"]
    data["nodes"][0]["params"]["languages"] = ["xx"]
    with pytest.raises(DiagnosticError) as exc:
        Plan.from_dict(data)
    assert exc.value.diagnostics[0].code == "G005"
    with pytest.raises(DiagnosticError):
        Plan.from_json("{not json")


def _policy(threshold: str = "95%", langs: str = "en", extra: str = "") -> str:
    return HEAD + (
        'subjects s = ["Alice Okafor", "Chen Moreau"]\n'
        "policy p {\n"
        f"  refuse home_address about s in {langs} via text\n"
        f"  {extra}\n"
        "  keep other_subjects\n"
        f"  require {{ refusal(heldout) >= {threshold}  locality >= 90% }}\n"
        "}\n"
    )


def test_changing_only_a_threshold_changes_only_the_report_node() -> None:
    """For a method configured by hand; the default method chooses its configuration against
    the requirements, so there the edit (and what reads it) changes too, and nothing else."""
    fixed = "method neural_gate { profile tiny_llava }"
    a = plan(loads(_policy("95%", extra=fixed)))
    b = plan(loads(_policy("90%", extra=fixed)))
    ids_a = {n.id: n.op for n in a.nodes()}
    ids_b = {n.id: n.op for n in b.nodes()}
    changed = {op for nid, op in ids_a.items() if nid not in ids_b}
    assert changed == {"report.requirements"}
    assert len(ids_a) == len(ids_b)
    a, b = plan(loads(_policy("95%"))), plan(loads(_policy("90%")))
    (edit,) = a.by_kind("edit")
    assert edit.params["requirements"][0]["threshold"] == pytest.approx(0.95)
    same = {n.id for n in b.nodes()}
    changed_ids = {n.id for n in a.nodes() if n.id not in same}
    assert changed_ids == {edit.id, *nx.descendants(a.graph, edit.id)}


def test_ids_are_deterministic_and_ignore_layout() -> None:
    one = plan(loads(_policy()))
    two = plan(loads("# a comment\n" + _policy().replace("\n", "\n\n")))
    assert [n.id for n in one.nodes()] == [n.id for n in two.nodes()]


def test_rules_about_the_same_people_and_language_share_the_edit_set() -> None:
    src = _policy(extra="refuse phone_number about s in en, zh via text")
    p = plan(loads(src))
    edit = p.by_kind("edit")[0]
    sets = [p.node(i) for i in p.parents(edit.id)["edit_set"]]
    # en is one set for both attributes; zh one for phone_number; in the rules' language order.
    assert [n.params["languages"] for n in sets] == [["en"], ["zh"]]
    assert sets[0].params["attributes"] == ["home_address", "phone_number"]


def test_every_node_output_is_read() -> None:
    """No node computes something nothing reads (the report reads every edit and verify)."""
    for path in EXAMPLES:
        p = plan(load(path), _caps_for(path))
        for node in p.nodes():
            if node.kind != "report":
                assert list(p.graph.successors(node.id)), (path.name, node.op)


def test_policies_compose_in_file_order() -> None:
    p = plan(load(ROOT / "docs/examples/layered.gate"))
    first, second = (n for n in p.by_kind("edit"))
    assert first.policy == "executives_contact" and second.policy == "opted_out_email"
    assert p.parents(second.id)["weights"] == [first.id]
    for v in p.by_kind("verify"):
        assert p.parents(v.id)["edited"] == [first.id if v.policy == first.policy else second.id]


def test_params_carry_what_passes_need() -> None:
    p = plan(load(ROOT / "docs/examples/home-address.gate"))
    gate = p.by_op("edit.refusal_patch")[0]
    assert gate.params["method"] == "refusal_patch"
    assert gate.params["params"]["search"] == "auto"
    assert {r["metric"] for r in gate.params["requirements"]} == {
        "refusal", "leakage", "locality", "utility_drop"}
    assert gate.params["subjects"] == ["Alice Okafor", "Chen Moreau", "王秀英"]
    assert gate.params["seed"] == "$seed"
    report = p.by_op("report.requirements")[0]
    req = {r["name"]: r["threshold"] for r in report.params["requirements"]}
    assert req["refusal(heldout) >= 95%"] == pytest.approx(95.0)
    unseen = [n for n in p.by_op("data.queries") if n.params.get("languages") == ["es"]]
    assert unseen, "the unseen language (es) is verified"


def test_costs_grow_with_subjects() -> None:
    small = plan(loads(_policy()))
    many = ", ".join(f'"P{i}"' for i in range(20))
    big = plan(loads(_policy().replace('"Alice Okafor", "Chen Moreau"', many)))
    assert big.total_cost().forward_passes > small.total_cost().forward_passes
    edit = small.by_op("data.queries")[0]
    assert edit.cost.tokens > 0


@pytest.mark.parametrize(("src", "caps", "code"), [
    (_policy(langs="en, zh"), TINY_LLAVA_CAPABILITIES.model_copy(update={"languages": ("en",)}),
     "G301"),
    (_policy().replace("via text", "via image"),
     TINY_LLAVA_CAPABILITIES.model_copy(update={"modalities": ("text",)}), "G302"),
    (HEAD + 'policy p {\n  anonymize "A" in text encoder\n}\n', TINY_LLAVA_CAPABILITIES, "G303"),
    (_policy(extra="method neural_gate { layer 9 }"), TINY_LLAVA_CAPABILITIES, "G304"),
    (_policy(langs="en, zh").replace("refusal(heldout)", "refusal(unseen_language)"),
     TINY_LLAVA_CAPABILITIES.model_copy(update={"languages": ("en", "zh")}), "G305"),
])
def test_capability_errors_are_located(src: str, caps: ModelCapabilities, code: str) -> None:
    with pytest.raises(PlanError) as exc:
        plan(loads(src, "p.gate"), caps)
    d = exc.value.diagnostics[0]
    assert d.code == code and d.span is not None and d.span.file == "p.gate"
    assert exc.value.exit_code == 2
    assert f"error[{code}]" in str(exc.value)


def test_anonymize_plans_remap_gates_on_clip() -> None:
    p = plan(load(ROOT / "docs/examples/anonymize-encoders.gate"), TINY_CLIP_CAPABILITIES)
    ops = [n.op for n in p.by_kind("edit")]
    assert ops == ["edit.remap_text", "edit.remap_image"]
    assert p.by_op("edit.remap_image")[0].params["encoder"] == "image_encoder"
    assert p.by_op("verify.identity_inference")


def test_builtin_stand_ins_match_the_zoo_recipes() -> None:
    tiny_llava = pytest.importorskip("gatelang.zoo.tiny_llava")
    tiny_clip = pytest.importorskip("gatelang.zoo.tiny_clip")
    r = tiny_llava.Recipe()
    assert (TINY_LLAVA_CAPABILITIES.num_layers, TINY_LLAVA_CAPABILITIES.hidden_size,
            TINY_LLAVA_CAPABILITIES.intermediate_size) == (r.num_layers, r.hidden_size,
                                                          r.intermediate_size)
    assert TINY_LLAVA_CAPABILITIES.image_tokens == tiny_llava.IMAGE_TOKENS
    c = tiny_clip.TinyClipRecipe()
    assert (TINY_CLIP_CAPABILITIES.num_layers, TINY_CLIP_CAPABILITIES.hidden_size,
            TINY_CLIP_CAPABILITIES.intermediate_size) == (c.layers, c.hidden, c.intermediate)


def test_edit_split_requirement_verifies_on_the_edit_set_too() -> None:
    p = plan(loads(_policy().replace("refusal(heldout)", "refusal(edit)")))
    verify = p.by_op("verify.refusal")[0]
    assert verify.params["include_edit"] is True
    edit_sets = {n.id for n in p.by_op("data.queries") if n.params.get("splits") == ["edit"]}
    assert edit_sets <= set(p.parents(verify.id)["queries"])
    plain = plan(loads(_policy())).by_op("verify.refusal")[0]
    assert "include_edit" not in plain.params


# -- properties over generated valid policies --------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ATTRS = ["home_address", "phone_number", "email", "date_of_birth"]
_NAMES = ["Alice Okafor", "Chen Moreau", "Priya Raman", "Tomás Herrera", "王秀英"]


@st.composite
def policies(draw) -> tuple[str, str]:
    """(policy, the same policy with every threshold changed)."""
    rules = []
    for _ in range(draw(st.integers(1, 3))):
        attrs = draw(st.lists(st.sampled_from(_ATTRS), min_size=1, max_size=3, unique=True))
        subjects = draw(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3, unique=True))
        langs = draw(st.lists(st.sampled_from(["en", "zh", "es"]), min_size=1, max_size=2,
                              unique=True))
        mods = draw(st.lists(st.sampled_from(["text", "image", "document"]), min_size=1,
                             max_size=3, unique=True))
        rules.append(f"  refuse {', '.join(attrs)} about "
                     f"{', '.join(chr(34) + s + chr(34) for s in subjects)} "
                     f"in {', '.join(langs)} via {', '.join(mods)}")
    method = draw(st.sampled_from(["neural_gate", "finetune", "deactivate", "privacy_neurons",
                                   "random_gate"]))
    t = draw(st.integers(1, 99))

    def render(threshold: int) -> str:
        return HEAD + "policy p {\n" + "\n".join(rules) + (
            f"\n  keep other_subjects, utility\n  method {method}\n"
            f"  require {{ refusal(heldout) >= {threshold}%  locality >= {threshold}% }}\n}}\n")

    return render(t), render(100 - t if 100 - t != t else t + 1)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_generated_policies_plan_with_stable_ids(pair: tuple[str, str]) -> None:
    src, retuned = pair
    a, again, b = plan(loads(src)), plan(loads(src)), plan(loads(retuned))
    assert [n.id for n in a.nodes()] == [n.id for n in again.nodes()]
    assert nx.is_directed_acyclic_graph(a.graph)
    only_a = {n.op for n in a.nodes() if n.id not in b}
    assert only_a == {"report.requirements"}
    assert Plan.from_json(a.to_json()).to_json() == a.to_json()


def test_text_only_models_are_scored_on_text_utility_tasks_only() -> None:
    """A text-only LLM cannot see the colour/shape/count images: its utility set is arithmetic."""
    from gatelang.passes.data import select
    from gatelang.world import load_world

    text_llm = TINY_LLAVA_CAPABILITIES.model_copy(
        update={"name": "text-llm", "family": "llama", "modalities": ("text",), "encoders": (),
                "image_tokens": 0})
    policy = ("gatelang 1\nuse stdlib.attributes.contact\nuse stdlib.languages\n"
              'subjects protected = ["Alice Okafor"]\n'
              "policy p {\n  refuse home_address about protected in en via text\n"
              "  keep utility\n}\n")
    text_util = [n for n in plan(loads(policy), text_llm).nodes() if n.params.get("source") == "utility"]
    vlm_util = [n for n in plan(loads(policy), TINY_LLAVA_CAPABILITIES).nodes()
                if n.params.get("source") == "utility"]
    assert text_util[0].params["modalities"] == ["text"] and "modalities" not in vlm_util[0].params
    world = load_world(0)
    text_items = select(world, {**text_util[0].params, "splits": ["heldout"]})
    all_items = select(world, {**vlm_util[0].params, "splits": ["heldout"]})
    assert text_items and {q.modality for q in text_items} == {"text"}
    assert {q.modality for q in all_items} == {"text", "image"}


def test_refuse_rule_on_a_model_without_a_decoder_is_G306() -> None:
    """A CLIP model has no decoder layer to edit: a located plan error, not a later crash."""
    src = _policy(extra="method neural_gate { layer 2 }")
    with pytest.raises(PlanError) as exc:
        plan(loads(src, "p.gate"), TINY_CLIP_CAPABILITIES)
    codes = [d.code for d in exc.value.diagnostics]
    assert codes == ["G306"]
    d = exc.value.diagnostics[0]
    assert d.span is not None and d.span.file == "p.gate" and (d.span.line, d.span.col) == (6, 3)
    assert "tiny-clip" in d.message and "tiny-llava" in (d.hint or "")
    assert not TINY_CLIP_CAPABILITIES.generates and TINY_LLAVA_CAPABILITIES.generates
