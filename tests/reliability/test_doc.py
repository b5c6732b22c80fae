"""docs/reliability.md names only tests that exist, and every reliability test is in it."""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "reliability.md"


def defined_tests() -> set[str]:
    return {
        match
        for path in HERE.glob("test_*.py")
        if path.name != Path(__file__).name
        for match in re.findall(r"^def (test_\w+)", path.read_text(), re.M)
    }


def test_every_test_named_in_the_reliability_doc_exists() -> None:
    named = set(re.findall(r"`(test_\w+)`", DOC.read_text()))
    assert named - defined_tests() == set()


def test_every_reliability_test_is_named_in_the_doc() -> None:
    named = set(re.findall(r"`(test_\w+)`", DOC.read_text()))
    assert defined_tests() - named == set()
