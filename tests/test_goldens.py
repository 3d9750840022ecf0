"""The golden helper itself: it never lets a missing or different golden file pass silently."""

from __future__ import annotations

from pathlib import Path

import pytest
from goldens import check_golden

pytest_plugins = ["pytester"]


def test_missing_golden_fails_without_the_flag_and_writes_nothing(tmp_path: Path) -> None:
    golden = tmp_path / "golden" / "case.txt"
    with pytest.raises(pytest.fail.Exception) as exc:
        check_golden(golden, "output\n", update=False)
    message = str(exc.value)
    assert str(golden) in message and "missing" in message
    assert "python -m pytest --update-goldens" in message
    assert not golden.exists()


def test_mismatch_fails_with_a_unified_diff(tmp_path: Path) -> None:
    golden = tmp_path / "case.txt"
    golden.write_text("same\nold\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception) as exc:
        check_golden(golden, "same\nnew\n", update=False)
    message = str(exc.value)
    assert "(golden)" in message and "(actual)" in message
    assert "-old\n" in message and "+new\n" in message and "--update-goldens" in message
    assert golden.read_text(encoding="utf-8") == "same\nold\n"


def test_the_flag_writes_and_a_match_passes(tmp_path: Path) -> None:
    golden = tmp_path / "new" / "case.txt"
    check_golden(golden, "output\n", update=True)
    assert golden.read_text(encoding="utf-8") == "output\n"
    check_golden(golden, "output\n", update=False)


def test_fixture_honours_the_command_line_flag(pytester: pytest.Pytester) -> None:
    tests = Path(__file__).parent
    pytester.makeconftest((tests / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(goldens=(tests / "goldens.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_snap="""
        from pathlib import Path

        def test_snap(assert_golden):
            assert_golden(Path(__file__).parent / "golden" / "snap.txt", "hello\\n")
    """)
    quick = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")  # each run starts afresh
    missing = pytester.runpytest(*quick)
    missing.assert_outcomes(failed=1)
    missing.stdout.fnmatch_lines(["*golden*snap.txt is missing*--update-goldens*"])
    assert not (pytester.path / "golden" / "snap.txt").exists()
    pytester.runpytest(*quick, "--update-goldens").assert_outcomes(passed=1)
    assert (pytester.path / "golden" / "snap.txt").read_text(encoding="utf-8") == "hello\n"
    pytester.runpytest(*quick).assert_outcomes(passed=1)
