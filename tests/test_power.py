"""The invariant chapters can fail: each faulty adapter of tests/faulty.py is caught, by its chapter.

The chapters run once, in one pytest subprocess (`faulty.run_catalog`), over the numpy adapter,
the control (the faulty adapters' pipeline without a bug) and every faulty adapter, in float32,
with the `ci` profile's examples; `--attnconf-json` says which tests failed for which adapter.
"""

from __future__ import annotations

from typing import Any

import faulty
import pytest

INVARIANT_CHAPTERS = tuple(c for c in faulty.CHAPTERS if c != "agreement")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return faulty.run_catalog(tmp_path_factory.mktemp("power"))


def _outcomes(catalog: dict[str, Any], name: str) -> dict[str, Any]:
    outcomes = catalog["adapters"].get(name)
    assert outcomes is not None, f"{name} did not run:\n{catalog['log']}"
    return outcomes


@pytest.mark.parametrize("cls", faulty.FAULTY, ids=lambda c: c.__name__)
def test_faulty_adapter_is_caught_by_its_chapter(catalog, cls):
    failed = _outcomes(catalog, cls.name)["failed"]
    missed = sorted(set(cls.caught_by) - set(failed))
    assert cls.caught_by and not missed, (
        f"{cls.name} ({cls.__doc__}) must be caught by {list(cls.caught_by)}; it failed in "
        f"{ {c: len(t) for c, t in failed.items()} or 'no chapter'}, so {missed} missed it")


@pytest.mark.parametrize("cls", faulty.FAULTY, ids=lambda c: c.__name__)
def test_failure_reads_well(catalog, cls):
    outcomes = _outcomes(catalog, cls.name)
    tests = [t for c in cls.caught_by for t in outcomes["failed"].get(c, [])]
    messages = [outcomes["messages"][t] for t in tests]
    asserted = [m for m in messages if "AssertionError: " in m]
    if not asserted:  # the adapter raised in every such test (as a framework would): its error is the report
        assert all("Error" in m and "Draw 1 (shape)" in m for m in messages), messages[0]
        return
    message = asserted[0]
    expected = [f"adapter {cls.name!r} in float32", "index", "expected", "got",
                "reproduce: pytest --pyargs attnconf.conformance", "--hypothesis-profile ci-noshrink",
                "Draw 1 (shape): Shape("]
    if "not finite" not in message and "bit for bit" not in message:  # NaN and determinism need no tolerance
        expected.append("tolerance: atol")
    missing = [part for part in expected if part not in message]
    assert not missing, f"the failure of {tests[messages.index(message)]} lacks {missing}:\n{message}"


@pytest.mark.parametrize("name", ["numpy", *(c.name for c in faulty.CONTROLS)])
def test_correct_adapter_passes_every_chapter(catalog, name):
    outcomes = _outcomes(catalog, name)
    assert not outcomes["failed"], f"{name} is correct but failed: { {t: m[:2000] for t, m in outcomes['messages'].items()} }"
    assert outcomes["passed"] >= 30, f"{name} passed only {outcomes['passed']} tests"


@pytest.mark.parametrize("chapter", INVARIANT_CHAPTERS)
def test_every_chapter_catches_a_faulty_adapter(catalog, chapter):
    catchers = [c.name for c in faulty.FAULTY if chapter in _outcomes(catalog, c.name)["failed"]]
    assert catchers, f"chapter {chapter!r} catches no faulty adapter"
    assert any(chapter in c.caught_by for c in faulty.FAULTY), f"no faulty adapter names {chapter!r} as its catcher"
