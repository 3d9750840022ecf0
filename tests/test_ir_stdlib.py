"""The stdlib data the language resolves names against: shape, coverage, normaliser."""

from __future__ import annotations

import pytest

from gatelang.stdlib import load_stdlib, normalize_value

CORE = ("home_address", "phone_number", "email", "date_of_birth")


def test_attributes_languages_and_presets_are_complete() -> None:
    std = load_stdlib()
    private = set(std.private_attributes())
    assert {"home_address", "phone_number", "email", "date_of_birth", "national_id",
            "medical_condition"} <= private
    assert {"employer", "hobby", "birth_city"} <= set(std.public_attributes())
    assert {"en", "zh", "es"} <= set(std.languages)
    from gatelang.methods import methods

    assert {"neural_gate", "privacy_neurons", "deactivate", "finetune"} <= set(methods())
    for name in CORE:
        for lang in ("en", "zh", "es"):
            ts = std.attributes[name].templates[lang]
            assert len(ts.edit) >= 6 and len(ts.heldout) >= 6
            assert not set(ts.edit) & set(ts.heldout), "held-out templates are unseen by edits"
    for lang in std.languages.values():
        assert lang.refusal_markers and lang.refusal_replies
        assert {"image", "document"} <= set(lang.subject_phrase)


def test_modules_name_only_known_things() -> None:
    std = load_stdlib()
    for names in std.modules.values():
        for n in names:
            assert n in std.attributes or n in std.languages


def test_version_and_hash_are_stable() -> None:
    a, b = load_stdlib(), load_stdlib()
    assert a.version and len(a.sha256) == 64 and a.sha256 == b.sha256


@pytest.mark.parametrize(("value", "kind", "expected"), [
    ("+1 (555) 010-2233", "digits", "15550102233"),
    ("１２３", "digits", "123"),
    ("12 Elm St.", "text", "12 elm st"),
    ("Alice.Okafor@Example.com", "text", "alice.okafor@example.com"),
])
def test_normalize_value(value: str, kind: str, expected: str) -> None:
    assert normalize_value(value, kind) == expected
