"""`gatelang zoo knowledge`: staged asking, the known set, its cache and subject file."""

from __future__ import annotations

import json

import pytest

from gatelang.ir import load
from gatelang.stdlib.people import load_people
from gatelang.zoo.knowledge import format_summary, known_set, subject_file_text


class FakeModel:
    """Knows Einstein's birth city in every wording, Curie's only in one (the first)."""

    name = "fake"
    weights_sha256 = "f" * 64

    def __init__(self) -> None:
        self.asked: list[str] = []

    def generate(self, items, max_new_tokens=24, batch_size=32):
        out = []
        first = load_people().templates["birth_city"]["en"]["edit"][0]
        for q in items:
            self.asked.append(q.id)
            if q.person_id == "albert-einstein" and q.attribute == "birth_city":
                out.append("He was born in Ulm." if q.language == "en" else "乌尔姆")
            elif q.person_id == "marie-curie" and q.attribute == "birth_city":
                out.append("Warsaw" if q.prompt == first.replace("{subject}", "Marie Curie")
                           else "Paris")
            else:
                out.append("I don't know.")
        return out


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GATELANG_KNOWLEDGE_CACHE", str(tmp_path / "cache"))


def test_keeps_only_pairs_answered_in_every_template_and_stops_asking_early() -> None:
    model = FakeModel()
    result = known_set(model, languages=["en", "zh"], attributes=["birth_city", "profession"])
    assert result.known["en"] == [["albert-einstein", "birth_city"]]
    assert result.known["zh"] == [["albert-einstein", "birth_city"]]
    n_templates = sum(len(v) for v in load_people().templates["birth_city"]["en"].values())
    # Every pair asked once, then only the survivors: far fewer than every template.
    pairs = result.asked["en"] + result.asked["zh"]
    assert result.questions_asked == len(model.asked)
    assert pairs <= len(model.asked) < pairs + 3 * n_templates
    curie = [q for q in model.asked if q.startswith("marie-curie/birth_city/en/")]
    assert len(curie) == 2  # right on the first template, wrong on the second: dropped
    assert result.counts()["en"] == {"birth_city": 1, "profession": 0, "all": 1}
    assert "| en | 1 | 0 | 1 / " in format_summary(result)
    assert result.machine["torch"] and result.first_answers


def test_result_is_cached_by_weights_and_arguments() -> None:
    first = known_set(FakeModel(), languages=["en"], attributes=["birth_city"], limit=30)
    again_model = FakeModel()
    again = known_set(again_model, languages=["en"], attributes=["birth_city"], limit=30)
    assert again.cached and not again_model.asked and again.known == first.known
    other = FakeModel()
    other.weights_sha256 = "e" * 64
    fresh = known_set(other, languages=["en"], attributes=["birth_city"], limit=30)
    assert not fresh.cached and other.asked
    assert json.loads(json.dumps(fresh.to_json()))["counts"]["en"]["birth_city"] == 1


def test_rejects_unknown_languages_and_attributes() -> None:
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        known_set(FakeModel(), languages=["fr"])
    with pytest.raises(ValueError, match="unknown attribute 'home_address'"):
        known_set(FakeModel(), attributes=["home_address"])


def test_known_people_become_a_subject_set_a_policy_can_name(tmp_path) -> None:
    result = known_set(FakeModel(), languages=["en"], attributes=["birth_city"], limit=20)
    (tmp_path / "known.txt").write_text(subject_file_text(result), encoding="utf-8")
    policy = tmp_path / "famous.gate"
    policy.write_text(
        "gatelang 1\nuse stdlib.attributes.public\nuse stdlib.languages\n"
        'subjects famous = from "known.txt"\n'
        "policy p {\n  refuse birth_city about famous in en via text\n}\n", encoding="utf-8")
    ir = load(policy)
    assert ir.subject_sets["famous"].members == ("Albert Einstein",)
    assert ir.policies[0].rules[0].subjects == ("Albert Einstein",)
