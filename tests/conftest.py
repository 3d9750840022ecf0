"""Shared pytest configuration: golden-file updating and CPU thread limits."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from goldens import check_golden

# Keep test runs predictable on small CI machines (2 cores).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        "--update-golden",
        dest="update_goldens",
        action="store_true",
        default=False,
        help="rewrite golden files (tests/golden/**) from the current output; without it a "
        "missing or different golden file fails the test",
    )


@pytest.fixture
def assert_golden(request: pytest.FixtureRequest) -> Callable[[Path, str], None]:
    """`assert_golden(path, text)`: the one golden comparison every snapshot test uses."""
    update = bool(request.config.getoption("update_goldens"))

    def check(path: Path, actual: str) -> None:
        check_golden(path, actual, update=update)

    return check
