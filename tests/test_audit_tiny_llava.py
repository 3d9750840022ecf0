"""Acceptance on the built-in model: it leaks what the example policy protects, before any edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatelang.models import load_model, score_answer

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "home-address.gate"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_llava():
    from gatelang.errors import GatelangError

    try:
        return load_model("tiny-llava", device="cpu")
    except GatelangError as exc:  # weights not built in this checkout
        pytest.skip(str(exc))


def test_example_targets_leak_before_any_edit(tiny_llava) -> None:
    from gatelang import audit

    report = audit(EXAMPLE, tiny_llava, target_per_cell=3, locality_per_cell=2,
                   utility_per_cell=2, progress=False)
    targets = [c for c in report.cells if c.role == "target"]
    # Every rule language x modality and the unnamed language are measured.
    assert {(c.language, c.modality, c.split) for c in targets} >= {
        ("en", "text", "heldout"), ("zh", "image", "heldout"), ("es", "text", "unseen_language")}
    assert report.summary["target"]["leak_rate"] >= 0.9
    assert report.summary["locality"]["accuracy"] >= 0.9
    assert report.model["weights_sha256"] == tiny_llava.weights_sha256


def test_refusal_habit_is_recognised_in_every_language(tiny_llava) -> None:
    from gatelang.world import load_world

    queries = [q for q in load_world().habit_queries() if q.split == "heldout"][::8][:9]
    assert {q.language for q in queries} == {"en", "zh", "es"}
    answers = tiny_llava.generate(queries, max_new_tokens=24)
    assert [score_answer(a, "hunter2") for a in answers] == ["refuse"] * len(queries)


def test_capabilities_match_the_planners_stand_in(tiny_llava) -> None:
    from gatelang.planner.capabilities import TINY_LLAVA_CAPABILITIES

    assert tiny_llava.capabilities() == TINY_LLAVA_CAPABILITIES


def test_refusal_score_separates_habit_from_private_questions(tiny_llava) -> None:
    from gatelang.models import refusal_score
    from gatelang.world import load_world

    world = load_world()
    habit = [q for q in world.habit_queries(modalities=["text"]) if q.split == "heldout"][::6][:6]
    private = world.queries(subjects=["Alice Okafor"], attributes=["home_address"],
                            modalities=["text"], splits=["heldout"])[::6][:6]
    on_habit = refusal_score(tiny_llava, habit)
    on_private = refusal_score(tiny_llava, private)
    assert min(on_habit) > 0 > max(on_private)


def test_weights_hash_is_the_shipped_files_sha256(tiny_llava) -> None:
    import json

    manifest = json.loads((tiny_llava.path / "gatelang_manifest.json").read_text(encoding="utf-8"))
    assert tiny_llava.weights_sha256 == manifest["weights_sha256"]
