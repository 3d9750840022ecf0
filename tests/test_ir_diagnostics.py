"""Snapshot tests: the exact text of each diagnostic code, caret and hint included.

Run with `--update-goldens` to rewrite tests/golden/diagnostics/*.txt after an intended change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gatelang.ir import check

GOLDEN = Path(__file__).parent / "golden" / "diagnostics"

HEAD = "gatelang 1\nuse stdlib.attributes.contact\nuse stdlib.languages\n"
OK_POLICY = """subjects protected = ["Alice Okafor"]
policy p {
  refuse home_address about protected in en via text
}
"""

# code -> files (the first is checked); each case triggers its code at least once.
CASES: dict[str, dict[str, str]] = {
    "G001": {"policy.gate": "gatelang 1\npolicy p {\n  refuse home_address about\n}\n"},
    "G002": {"policy.yaml": "gatelang: 1\npolicies: [\n"},
    "G003": {"policy.yaml": "gatelang: 1\npolicies:\n  p:\n    rules:\n      - forbid: x\n"},
    "G004": {"policy.gate": "gatelang 1\n\x00\n"},
    "G100": {"policy.gate": "gatelang 2\n"},
    "G101": {"policy.gate": HEAD + 'policy p {\n  refuse home_adress about "Alice Okafor" in en via text\n}\n'},
    "G102": {"policy.gate": HEAD + 'policy p {\n  refuse home_address about "Alice Okafor" in en, fr via text\n}\n'},
    "G103": {"policy.gate": HEAD + 'policy p {\n  refuse home_address about "Alice Okafor" in en via voice\n}\n'},
    "G104": {"policy.gate": HEAD + OK_POLICY.replace("via text\n", "via text\n  method lobotomy\n")},
    "G105": {"policy.gate": HEAD + OK_POLICY.replace("via text\n", "via text\n  require { happiness >= 95% }\n")},
    "G106": {"policy.gate": HEAD + OK_POLICY.replace("via text\n", "via text\n  require { refusal(train) >= 95% }\n")},
    "G107": {"policy.gate": HEAD + OK_POLICY.replace("via text\n", "via text\n  method neural_gate { stepz 40 }\n")},
    "G108": {"policy.gate": "gatelang 1\nuse stdlib.attributes.contacts\n"},
    "G109": {"policy.gate": "gatelang 1\nuse stdlib.languages\n" + OK_POLICY},
    "G110": {"policy.gate": HEAD + 'policy p {\n  refuse home_address about protectd in en via text\n}\n'},
    "G111": {"policy.gate": HEAD + "subjects nobody = []\n"},
    "G112": {"policy.gate": HEAD + 'subjects staff = from "missing.csv" column "name"\n'},
    "G113": {"policy.gate": HEAD + 'subjects staff = from "people.csv" column "name"\n',
             "people.csv": 'name,team\n"Alice Okafor",a\n"Chen Moreau,b\n'},
    "G114": {"policy.gate": HEAD + OK_POLICY + OK_POLICY.replace('subjects protected = ["Alice Okafor"]\n', "")},
    "G115": {"policy.gate": HEAD + OK_POLICY.replace("via text\n", "via text\n  require { refusal >= 120% }\n")},
    "G116": {"policy.gate": HEAD + OK_POLICY.replace("via text\n", "via text\n  require { refusal >= 0.95 }\n")},
    "G117": {"policy.gate": HEAD + OK_POLICY.replace("via text\n", "via text\n  keep home_address about protected\n")},
    "G118": {"policy.gate": HEAD + OK_POLICY.replace("via text\n", "via text\n  require {\n    leakage >= 10%\n    leakage <= 5%\n  }\n")},
    "G119": {"policy.gate": 'gatelang 1\nuse "a.gate"\n', "a.gate": 'gatelang 1\nuse "policy.gate"\n'},
    "G120": {"policy.gate": 'gatelang 1\nuse "../outside.gate"\n'},
    "G121": {"policy.gate": HEAD + OK_POLICY.replace("via text\n", "via text\n  keep other_people\n")},
    "G122": {"policy.gate": HEAD + OK_POLICY.replace("via text\n", "via text\n  method remap\n")},
    "G123": {"policy.gate": HEAD + "policy p {\n  description \"nothing yet\"\n}\n"},
    "G124": {"policy.gate": 'gatelang 1\nuse "other.gate"\n', "other.gate": HEAD + OK_POLICY},
    "G125": {"policy.gate": HEAD + 'policy p {\n  anonymize "Alice Okafor" in audio encoder\n}\n'},
    "G126": {"policy.gate": HEAD + 'policy p {\n  refuse email about "Alice Okafor" in en via scene\n}\n'},
    "G128": {"policy.gate": HEAD + OK_POLICY.replace("via text\n", "via text\n  require { locality >= 95% }\n")},
    "G201": {"policy.gate": HEAD + 'subjects s = ["Alice Okafor", "Alice Okafor"]\n'},
    "G203": {"policy.gate": HEAD + 'policy p {\n  anonymize "Alice Okafor" in image encoder\n  keep utility\n}\n'},
    "G202": {"policy.gate": HEAD + OK_POLICY.replace("via text\n", "via text\n  require { refusal <= 95% }\n")},
}


def run_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> str:
    work = tmp_path / "work"
    work.mkdir()
    for name, text in files.items():
        (work / name).write_bytes(text.encode())
    monkeypatch.chdir(work)
    first = next(iter(files))
    result = check(first)
    return result.render() + "\n"


@pytest.mark.parametrize("code", sorted(CASES))
def test_diagnostic_snapshot(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             assert_golden) -> None:
    text = run_case(tmp_path, monkeypatch, CASES[code])
    assert f"[{code}]" in text, text
    assert_golden(GOLDEN / f"{code}.txt", text)


def test_every_error_reported_not_only_the_first(tmp_path, monkeypatch) -> None:
    src = HEAD + (
        "policy p {\n"
        '  refuse home_adress about nobody in fr via voice\n'
        "  method neural_gate { stepz 3 }\n"
        "  require { refusal >= 0.9 }\n"
        "}\n"
    )
    text = run_case(tmp_path, monkeypatch, {"policy.gate": src})
    for code in ("G101", "G110", "G102", "G103", "G107", "G116"):
        assert f"[{code}]" in text


def test_location_format_is_file_line_col(tmp_path, monkeypatch) -> None:
    text = run_case(tmp_path, monkeypatch, CASES["G101"])
    first = text.splitlines()[0]
    assert first.startswith("policy.gate:5:10: error[G101]: unknown attribute 'home_adress'")
    assert "did you mean 'home_address'?" in text
    caret_line = text.splitlines()[2]
    assert caret_line.endswith("^" * len("home_adress"))


def test_subject_file_error_points_into_the_subject_file(tmp_path, monkeypatch) -> None:
    text = run_case(tmp_path, monkeypatch, CASES["G113"])
    assert text.startswith("people.csv:3:")


def test_every_code_in_the_source_is_documented() -> None:
    import re

    root = Path(__file__).resolve().parent.parent
    used: set[str] = set()
    for pkg in ("syntax", "ir", "planner"):
        for f in (root / "gatelang" / pkg).glob("*.py"):
            used |= set(re.findall(r'"(G\d{3})"', f.read_text(encoding="utf-8")))
    documented = set(re.findall(r"\| (G\d{3}) \|",
                                (root / "specs" / "diagnostics.md").read_text(encoding="utf-8")))
    assert used and used <= documented, sorted(used - documented)


def test_caret_lines_up_under_wide_characters() -> None:
    from gatelang.ir import check_text

    text = check_text('gatelang 1\nsubjects s = ["王秀英" "x"]\n', "u.gate").render()
    source, caret = text.splitlines()[1:3]
    # 王秀英 takes six terminal columns: the caret sits under "x", not three columns early.
    assert caret.index("^") == source.index('"x"') + 3
