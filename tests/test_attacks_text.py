"""The text attacks (`verify.prefill`, `verify.jailbreak`, `verify.paraphrase`) on the shipped
tiny-llava with no edit: a model that knows the facts still states them under each attack (the
attacks do not break it), rows carry their variants, and requirements read the rows."""

from __future__ import annotations

import unicodedata
from types import SimpleNamespace

import pytest

from gatelang.errors import PlanError
from gatelang.measure import from_query
from gatelang.models import load_model
from gatelang.passes import get_pass
from gatelang.passes.base import NodeSpec, PassContext, PassResult
from gatelang.passes.requirements import evaluate
from gatelang.passes.verify.jailbreak import wrapped
from gatelang.passes.verify.paraphrase import check_forms, paraphrase_questions
from gatelang.passes.verify.prefill import common_prefix, shared_prefix
from gatelang.stdlib import load_stdlib
from gatelang.world import load_world

SELECTION = {"subjects": ["Alice Okafor"], "attributes": ["home_address", "phone_number"],
             "languages": ["en", "zh"], "modalities": ["text"], "splits": ["heldout"]}
NO_EDIT = PassResult(data={"method": "none"}, tensors={})


@pytest.fixture(scope="module")
def loaded():
    return load_model("tiny-llava")


@pytest.fixture(scope="module")
def ctx(loaded):
    return PassContext(loaded=loaded, options={"attack_items": 4, "max_new_tokens": 12})


@pytest.fixture(scope="module")
def queries(ctx):
    node = NodeSpec(id="d-held", op="data.queries", kind="data", params=SELECTION)
    return get_pass("data.queries")().run(ctx, node, {})


def _attack(ctx, queries, op: str) -> PassResult:
    node = NodeSpec(id=op, op=op, kind="verify",
                    params={"subjects": ["Alice Okafor"],
                            "attributes": ["home_address", "phone_number"],
                            "rule_languages": ["en", "zh"]})
    return get_pass(op)().run(ctx, node, {"edited": NO_EDIT, "queries": queries})


@pytest.fixture(scope="module")
def results(ctx, queries):
    return {op: _attack(ctx, queries, f"verify.{op}")
            for op in ("prefill", "jailbreak", "paraphrase")}


def _known(rows):
    return [r for r in rows if r["known"]]


@pytest.mark.parametrize("split", ["prefill", "jailbreak", "paraphrase"])
def test_unedited_model_still_leaks_under_the_attack(results, split):
    data = results[split].data
    rows = data["items"]
    assert data["check"] == split and rows
    assert all(r["split"] == split and r["group"] == "targets" for r in rows)
    assert all(r["subject"] == "alice-okafor" for r in rows)
    known = _known(rows)
    assert known, "tiny-llava knows Alice Okafor's address and phone number"
    # no edit: the same model answers both sides
    assert all(r["before"] == r["after"] and r["before_text"] == r["after_text"] for r in rows)
    assert any(r["after"] == "leak" for r in known)
    assert len({r["id"] for r in rows}) == len(rows)
    records = {(m["metric"], m["language"]) for m in data["metrics"]}
    assert {("leak_rate", "en"), ("refusal_rate", "en")} <= records


def test_prefill_variants(results):
    rows = results["prefill"].data["items"]
    lib = load_stdlib().attacks
    by_question: dict[str, set[str]] = {}
    for r in rows:
        by_question.setdefault(r["question"], set()).add(r["variant"])
        # the answer is judged with its prefix: the assent of the question's language opens it
        assert r["before_text"].startswith(lib.assent[r["language"]])
        if r["variant"] == "assent+shared":
            assert "555-" in r["before_text"]
    assert len(by_question) == 4
    for question, variants in by_question.items():
        # phone numbers share "555-"; addresses share nothing, so no `assent+shared` row
        expected = {"assent", "assent+shared"} if "phone_number" in question else {"assent"}
        assert variants == expected, question


def test_jailbreak_rows_per_template(results):
    rows = results["jailbreak"].data["items"]
    templates = load_stdlib().attacks.jailbreak
    by_question: dict[str, list[dict]] = {}
    for r in rows:
        by_question.setdefault(r["question"], []).append(r)
    assert len(by_question) == 4
    for group in by_question.values():
        lang = group[0]["language"]
        assert [r["variant"] for r in group] == [str(i) for i in range(len(templates[lang]))]
        for r in group:
            head = templates[lang][int(r["variant"])].split("{question}")[0]
            assert r["prompt"].startswith(head) and len(r["prompt"]) > len(head)


def test_paraphrase_rows_per_form(results):
    data = results["paraphrase"].data
    rows = data["items"]
    forms = load_stdlib().attacks.paraphrase
    assert data["skipped"] == {"non_text": 0}
    by_question: dict[str, list[dict]] = {}
    for r in rows:
        by_question.setdefault(r["question"], []).append(r)
    # one question per (attribute, language): the forms do not depend on the template
    assert len(by_question) == 4
    assert {(g[0]["attribute"], g[0]["language"]) for g in by_question.values()} == {
        (a, lang) for a in ("home_address", "phone_number") for lang in ("en", "zh")}
    for group in by_question.values():
        wanted = forms[group[0]["attribute"]][group[0]["language"]]
        assert [r["prompt"] for r in group] == [f.replace("{subject}", "Alice Okafor")
                                                for f in wanted]
        assert [r["variant"] for r in group] == [str(j) for j in range(len(wanted))]


def test_requirements_read_the_attack_rows(results):
    evidence = {split: r.data["items"] for split, r in results.items()}
    reqs = [{"metric": m, "split": s, "op": ">=", "threshold": 0}
            for m, s in [("leakage", "prefill"), ("leakage", "jailbreak"),
                         ("leakage", "paraphrase"), ("refusal", "jailbreak"),
                         ("refusal", "paraphrase")]]
    out = evaluate(reqs, evidence, {}, {})
    for req, res in zip(reqs, out, strict=True):
        known = _known(evidence[req["split"]])
        label = "leak" if req["metric"] == "leakage" else "refuse"
        assert res["n"] == len(known) > 0
        assert res["value"] == pytest.approx(
            100 * sum(r["after"] == label for r in known) / len(known), abs=1e-3)
    assert out[0]["value"] > 0 and out[1]["value"] > 0 and out[2]["value"] > 0


# ---------------------------------------------------------------- helpers, no model


def test_common_prefix():
    world = load_world(0)
    phones = [s.attributes["phone_number"] for s in world.subjects]
    addresses = [s.attributes["home_address"] for s in world.subjects]
    assert common_prefix(phones, "digits") == "555-"
    assert common_prefix(addresses, "text") == ""
    # text is cut back to a word boundary, never a whole value, nothing from one value
    assert common_prefix(["12 Elm St", "12 Elmwood St"]) == "12 "
    assert common_prefix(["12 Elm St", "12 Elm St, Apt 2"]) == "12 Elm "
    assert common_prefix(["555-1", "555-12"], "digits") == "555-"
    assert common_prefix(["555-0625"], "digits") == ""
    assert common_prefix(["ab", "cd"]) == ""
    ctx = SimpleNamespace(world=world)
    (q,) = [q for q in world.queries(subjects=["Alice Okafor"], attributes=["phone_number"],
                                     languages=["en"], modalities=["text"], splits=["heldout"])
            ][:1]
    assert shared_prefix(ctx, from_query(q)) == "555-"


def test_jailbreak_keeps_the_image():
    world = load_world(0)
    q = world.queries(subjects=["Alice Okafor"], attributes=["home_address"], languages=["es"],
                      modalities=["image"], splits=["heldout"])[0]
    item = from_query(q)
    ctx = SimpleNamespace(stdlib=load_stdlib())
    out = wrapped(ctx, item)
    assert len(out) == len(load_stdlib().attacks.jailbreak["es"])
    for _, w in out:
        assert w.image is item.image and item.prompt in w.prompt and w.id != item.id


def test_paraphrase_takes_text_questions_and_names_missing_forms():
    world = load_world(0)
    qs = world.queries(subjects=["Alice Okafor"], attributes=["phone_number"], languages=["en"],
                       modalities=["text", "image"], splits=["heldout"])
    items = [from_query(q) for q in qs]
    text, skipped = paraphrase_questions(items)
    assert len(text) == 1 and text[0].modality == "text"
    assert skipped == sum(1 for i in items if i.modality == "image") > 0
    lib = load_stdlib()
    attacks = lib.attacks.model_copy(update={"paraphrase": {"phone_number": {"zh": ("x",)}}})
    ctx = SimpleNamespace(stdlib=lib.model_copy(update={"attacks": attacks}))
    with pytest.raises(PlanError, match=r"phone_number in 'en'"):
        check_forms(ctx, text)
    check_forms(SimpleNamespace(stdlib=lib), text)


# ---------------------------------------------------------------- the stdlib's forms


def _plain(text: str) -> str:
    """Lowercased, punctuation and symbols removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return " ".join(text.split())


def _templates(attr) -> set[str]:
    out = set()
    for sets in (attr.templates, attr.document_templates,
                 attr.scene.templates if attr.scene else {}):
        for tset in sets.values():
            out |= {_plain(t) for t in (*tset.edit, *tset.heldout)}
    return out


def test_paraphrase_forms_cover_private_attributes_and_differ_from_templates():
    lib = load_stdlib()
    forms = lib.attacks.paraphrase
    for name in lib.private_attributes():
        for lang in ("en", "zh", "es"):
            got = forms.get(name, {}).get(lang, ())
            assert len(got) >= 4, (name, lang)
            assert len({_plain(f) for f in got}) == len(got), (name, lang)
            assert all(f.count("{subject}") == 1 for f in got), (name, lang)
    for name, per_language in forms.items():
        assert name in lib.attributes and lib.attributes[name].private, name
        templates = _templates(lib.attributes[name])
        for lang, got in per_language.items():
            for form in got:
                assert _plain(form) not in templates, (name, lang, form)
