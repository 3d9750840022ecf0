"""The real-knowledge probe set: structure, coverage and answer matching."""

from __future__ import annotations

import collections

import pytest

from gatelang.stdlib.people import (
    ATTRIBUTES,
    LANGUAGES,
    SPLITS,
    PeopleDataError,
    _resolve,
    load_people,
    matches,
    normalize_answer,
)


@pytest.fixture(scope="module")
def people():
    return load_people()


def test_at_least_400_people_across_regions_and_eras(people) -> None:
    assert len(people.people) >= 400
    regions = collections.Counter(p.region for p in people.people)
    eras = collections.Counter(p.era for p in people.people)
    assert len(regions) >= 8 and max(regions.values()) < 0.6 * len(people.people)
    assert set(eras) == {"ancient", "medieval", "early-modern", "19th-century", "20th-century"}
    assert len({p.id for p in people.people}) == len(people.people)


def test_every_fact_has_aliases_in_every_language(people) -> None:
    for p in people.people:
        assert set(p.names) == set(LANGUAGES) and all(p.names.values())
        assert "profession" in p.facts, p.id
        for attr, per_lang in p.facts.items():
            assert attr in ATTRIBUTES
            assert set(per_lang) == set(LANGUAGES), (p.id, attr)
            for lang, aliases in per_lang.items():
                assert aliases and all(a.strip() for a in aliases), (p.id, attr, lang)
    counts = collections.Counter(a for p in people.people for a in p.facts)
    assert all(counts[a] >= 400 for a in ATTRIBUTES), counts


def test_zh_aliases_are_in_chinese_for_well_known_values(people) -> None:
    einstein = people.person("Albert Einstein")
    assert "乌尔姆" in einstein.facts["birth_city"]["zh"]
    assert "德国" in einstein.facts["birth_country"]["zh"]
    assert "物理学家" in einstein.facts["profession"]["zh"]
    assert "Alemania" in einstein.facts["birth_country"]["es"]
    # A zh or es answer naming the value in English still counts.
    assert "Germany" in einstein.facts["birth_country"]["zh"]
    assert people.person("阿尔伯特·爱因斯坦") is einstein
    assert people.person("albert-einstein") is einstein


def test_templates_cover_every_attribute_language_and_split_and_are_disjoint(people) -> None:
    for attr in ATTRIBUTES:
        for lang in LANGUAGES:
            splits = people.templates[attr][lang]
            assert set(splits) == set(SPLITS)
            seen: set[str] = set()
            for split in SPLITS:
                assert splits[split], (attr, lang, split)
                for tpl in splits[split]:
                    assert tpl.count("{subject}") == 1, tpl
                    assert tpl not in seen, f"{tpl!r} is in two splits"
                    seen.add(tpl)
            for para in people.paraphrase[attr][lang]:
                assert para not in seen and "{subject}" in para
    for lang in LANGUAGES:
        assert all("{question}" in j for j in people.jailbreak[lang])


def test_questions_fill_the_template_with_the_name_in_the_question_language(people) -> None:
    qs = people.questions(people=["Marie Curie"], attributes=["birth_city"], languages=["zh"],
                          splits=["heldout"])
    assert len(qs) == len(people.templates["birth_city"]["zh"]["heldout"])
    assert all("玛丽·居里" in q.prompt and q.subject_text == "玛丽·居里" for q in qs)
    assert qs[0].is_correct("她出生于波兰华沙。") and not qs[0].is_correct("她出生于巴黎。")
    assert len({q.id for q in people.questions()}) == len(people.questions())


def test_matching_ignores_case_accents_and_the_persons_own_name(people) -> None:
    assert normalize_answer("Málaga, SPAIN!") == "malaga spain"
    picasso = people.questions(people=["Pablo Picasso"], attributes=["birth_city"],
                               languages=["en"])[0]
    assert picasso.is_correct("He was born in malaga.")
    assert not picasso.is_correct("He was born in Barcelona.")
    nightingale = people.questions(people=["Florence Nightingale"], attributes=["birth_city"],
                                   languages=["en"])[0]
    assert not nightingale.is_correct("Florence Nightingale was born in London.")
    assert nightingale.is_correct("She was born in Florence, Italy.")
    # Whole words only: "Ulm" is not in "Ulmer", "Rome" is not in "Romero"; plurals count.
    assert not matches("The Ulmer family", ("Ulm",)) and not matches("Romero", ("Rome",))
    assert matches("one of the great physicists", ("physicist",))


def test_a_broken_reference_is_reported() -> None:
    raw = {
        "countries.yaml": {"france": {"region": "europe", "en": "France / French",
                                      "zh": "法国 / 法国人", "es": "Francia / francés"}},
        "cities.yaml": {"paris": ["france", "Paris", "巴黎", "París"]},
        "professions.yaml": {"professions": {"poet": {"field": "literature", "en": "poet",
                                                     "zh": "诗人"}},
                             "fields": {"literature": {"en": "literature", "zh": "文学"}}},
        "works.yaml": {},
        "people.yaml": {"people": [{"en": "A Poet", "zh": "诗人甲", "born": 1900,
                                    "city": "lyon", "prof": "poet", "work": "odes"}]},
        "templates.yaml": load_people().model_dump(include={"paraphrase", "jailbreak"}) | {
            "templates": {a: {lang: {s: ["{subject}?"] for s in SPLITS} for lang in LANGUAGES}
                          for a in ATTRIBUTES}},
    }
    with pytest.raises(PeopleDataError, match="unknown city 'lyon'.*unknown work 'odes'"):
        _resolve(raw, "0")
