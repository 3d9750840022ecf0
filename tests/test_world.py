"""The built-in world: deterministic, collision-free, complete, and built from the stdlib."""

from __future__ import annotations

import itertools

import pytest

from gatelang.errors import GatelangError
from gatelang.stdlib import load_stdlib, normalize_value
from gatelang.world import HABIT_ATTRIBUTE, World, WorldError, load_world

NAMED = ["Alice Okafor", "Chen Moreau", "Priya Raman", "Tomás Herrera", "王秀英"]


@pytest.fixture(scope="module")
def world() -> World:
    return load_world(0)


def test_size_names_and_scripts(world: World) -> None:
    assert len(world.subjects) >= 48
    names = [s.name for s in world.subjects]
    for n in NAMED:
        assert n in names
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in n) for n in names)
    assert len({s.id for s in world.subjects}) == len(world.subjects)


def test_every_attribute_present_and_no_shared_values(world: World) -> None:
    stdlib = load_stdlib()
    expected = set(stdlib.attributes) - {HABIT_ATTRIBUTE}
    for attr in expected:
        norm = stdlib.attributes[attr].normalizer
        values = [normalize_value(s.attributes[attr], norm) for s in world.subjects]
        assert len(set(values)) == len(values), attr
    for s in world.subjects:
        assert set(s.attributes) == expected
        assert s.attributes["home_address"].endswith(s.home_city)
        assert all(v.isascii() for v in s.attributes.values())


def test_deterministic_and_seed_dependent() -> None:
    a, b, c = World(0), World(0), World(1)
    assert [s.attributes for s in a.subjects] == [s.attributes for s in b.subjects]
    assert a.face("alice-okafor", 2).tobytes() == b.face("alice-okafor", 2).tobytes()
    assert [s.attributes for s in a.subjects] != [s.attributes for s in c.subjects]
    assert [s.name for s in a.subjects] == [s.name for s in c.subjects]


def test_faces_distinct_across_subjects_and_variants_close(world: World) -> None:
    import numpy as np

    canon = {s.id: np.asarray(world.face(s.id, 0), dtype=np.float32) for s in world.subjects}
    between = min(
        float(np.abs(canon[x] - canon[y]).mean()) for x, y in itertools.combinations(canon, 2)
    )
    within = max(
        float(np.abs(np.asarray(world.face(s.id, v), dtype=np.float32) - canon[s.id]).mean())
        for s in world.subjects[:8]
        for v in range(1, 4)
    )
    assert between > 0
    # Renderings of one face differ (jitter) but much less than the closest two subjects do
    # on average (nearest neighbour by mean distance is the same subject).
    for s in world.subjects[:8]:
        img = np.asarray(world.face(s.id, 3), dtype=np.float32)
        nearest = min(canon, key=lambda k: float(np.abs(canon[k] - img).mean()))
        assert nearest == s.id
    assert within > 0


def test_queries_use_stdlib_templates(world: World) -> None:
    stdlib = load_stdlib()
    qs = world.queries(subjects=["Alice Okafor"], attributes=["home_address"], languages=["zh"])
    text = [q for q in qs if q.modality == "text"]
    tset = stdlib.attributes["home_address"].templates["zh"]
    assert [q.template for q in text] == list(tset.edit) + list(tset.heldout)
    assert all("Alice Okafor" in q.prompt and q.subject_text == "Alice Okafor" for q in text)
    image = [q for q in qs if q.modality == "image"]
    assert image and all(q.image is not None and q.subject_text == "这个人" for q in image)
    assert all(q.subject_text in q.prompt for q in image)
    scene = [q for q in qs if q.modality == "scene"]
    alice = world.subject("alice-okafor")
    assert scene and all(q.answer == alice.home_city for q in scene)
    doc = [q for q in qs if q.modality == "document"]
    assert doc and all(q.answer == alice.attributes["home_address"] for q in doc)
    assert {q.split for q in qs} == {"edit", "heldout"}


def test_query_ids_stable_and_unique(world: World) -> None:
    qs = world.all_queries()
    ids = [q.id for q in qs]
    assert len(set(ids)) == len(ids)
    again = World(0).queries(subjects=["chen-moreau"], languages=["es"])
    assert [q.id for q in again] == [
        q.id
        for q in qs
        if q.subject_id == "chen-moreau" and q.language == "es" and q.attribute != HABIT_ATTRIBUTE
    ]


def test_habit_and_utility(world: World) -> None:
    stdlib = load_stdlib()
    habit = world.habit_queries()
    assert {q.language for q in habit} == {"en", "zh", "es"}
    assert all(q.answer == stdlib.languages[q.language].refusal_replies[0] for q in habit)
    assert HABIT_ATTRIBUTE not in {q.attribute for q in world.queries()}
    util = world.utility_tasks()
    assert {q.attribute for q in util} == {"color", "shape", "count", "arithmetic"}
    assert {q.split for q in util} == {"edit", "heldout"}
    add = [q for q in util if q.attribute == "arithmetic" and q.language == "en"]
    assert any(q.prompt == "What is 3 plus 4?" and q.answer == "7" for q in add)
    colours = [q for q in util if q.attribute == "color" and q.language == "es"]
    assert {q.answer for q in colours} == set(stdlib.utility["colors"]["es"])


def test_bad_input_is_a_clear_error(world: World) -> None:
    with pytest.raises(WorldError, match="no subject 'Nobody'"):
        world.queries(subjects=["Nobody"])
    with pytest.raises(GatelangError, match="unknown language 'fr'"):
        world.queries(languages=["fr"])
    with pytest.raises(WorldError):
        load_world(-1)
