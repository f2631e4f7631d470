"""The chapters can fail: each faulty adapter of tests/faulty.py is caught, by its chapter, in every
precision where it shows, and on the numbers.

The chapters run once, in one pytest subprocess (`faulty.run_catalog`), over the numpy adapter,
the control (the faulty adapters' pipeline without a bug) and every faulty adapter, in float64,
float32, float16 and bfloat16, with the `ci` profile's examples; `--attnconf-json` says which tests
failed for which adapter. To keep the run short, a faulty adapter runs every chapter in float32
only, and in the other precisions only the chapters that must catch it (`faulty.plan`).

"Caught on the numbers" means the failing test failed in the chapter's own comparison (an
AssertionError or a failed tolerance check raised by `attnconf.conformance`), not on an exception
that the faulty adapter raised itself: a fault that crashes proves nothing about the comparison.
"""

from __future__ import annotations

import re
from typing import Any

import faulty
import pytest

INVARIANT_CHAPTERS = tuple(c for c in faulty.CHAPTERS if c != "agreement")

#: The last line of a failure with a traceback: "path:line: ExceptionType".
_RAISED_AT = re.compile(r"^(?P<path>\S.*):(?P<line>\d+): (?P<type>[\w.]+)$")


def failed_on_the_numbers(message: str) -> bool:
    """True when the failure was raised by the conformance suite's comparison, not by the adapter."""
    lines = message.rstrip().splitlines()
    last = _RAISED_AT.match(lines[-1]) if lines else None
    if last is not None:  # a traceback: where it was raised, and what
        path = last["path"].replace("\\", "/")
        return last["type"] in ("AssertionError", "Failed") and "/attnconf/conformance/" in path
    # `pytest.fail(..., pytrace=False)` from the checker: its message only, with the reproduce line
    return "reproduce: pytest --pyargs attnconf.conformance" in message and "Error" not in message.split("\n")[0]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return faulty.run_catalog(tmp_path_factory.mktemp("power"))


def _outcomes(catalog: dict[str, Any], name: str) -> dict[str, Any]:
    outcomes = catalog["adapters"].get(name)
    assert outcomes is not None, f"{name} did not run:\n{catalog['log']}"
    return outcomes


def _failed_in(outcomes: dict[str, Any], chapter: str, dtype: str) -> list[str]:
    return [t for t in outcomes["failed"].get(chapter, []) if outcomes["dtypes"][t] == dtype]


CASES = [
    pytest.param(
        cls,
        dtype,
        id=f"{cls.__name__}-{dtype}",
        marks=[pytest.mark.xfail(reason=cls.pending[dtype], strict=True)] if dtype in cls.pending else [],
    )
    for cls in faulty.FAULTY
    for dtype in faulty.DTYPES
    if dtype in cls.caught_in
]


@pytest.mark.parametrize(("cls", "dtype"), CASES)
def test_faulty_adapter_is_caught_by_its_chapter(catalog, cls, dtype):
    outcomes = _outcomes(catalog, cls.name)
    missed = [c for c in cls.caught_by if not _failed_in(outcomes, c, dtype)]
    assert cls.caught_by and not missed, (
        f"{cls.name} ({cls.__doc__}) must be caught in {dtype} by {list(cls.caught_by)}; in {dtype} it failed "
        f"{ {c: len(_failed_in(outcomes, c, dtype)) for c in outcomes['failed']} }, so {missed} missed it"
    )
    if cls.raises:
        return
    not_numbers = {
        c: [outcomes["messages"][t][-600:] for t in _failed_in(outcomes, c, dtype)]
        for c in cls.caught_by
        if not any(failed_on_the_numbers(outcomes["messages"][t]) for t in _failed_in(outcomes, c, dtype))
    }
    assert not not_numbers, (
        f"{cls.name} in {dtype}: no failing test of {sorted(not_numbers)} failed on the numbers (the chapter's "
        f"comparison); they failed on an exception of the adapter itself:\n{not_numbers}"
    )


@pytest.mark.parametrize("cls", faulty.FAULTY, ids=lambda c: c.__name__)
def test_fault_is_documented(cls):
    assert cls.__doc__ and cls.caught_by and cls.caught_in, f"{cls.__name__} lacks a docstring, caught_by or caught_in"
    assert set(cls.caught_by) <= set(faulty.CHAPTERS), f"{cls.__name__}: unknown chapters in {cls.caught_by}"
    assert set(cls.pending) <= set(cls.caught_in), f"{cls.__name__}: pending dtypes outside caught_in"
    if cls in faulty.PRECISION_AND_SHAPES or cls.source:
        assert cls.source.startswith("https://") and cls.source.rstrip("/").split("/")[-1] in cls.__doc__, (
            f"{cls.__name__}: its source {cls.source!r} must be cited in its docstring"
        )


@pytest.mark.parametrize("cls", faulty.FAULTY, ids=lambda c: c.__name__)
def test_failure_reads_well(catalog, cls):
    outcomes = _outcomes(catalog, cls.name)
    tests = [t for c in cls.caught_by for t in outcomes["failed"].get(c, [])]
    if not tests:
        pytest.skip(f"{cls.name} is not caught in this run (see its pending entries)")
    messages = [outcomes["messages"][t] for t in tests]
    asserted = [m for m in messages if failed_on_the_numbers(m)]
    if not asserted:  # the adapter raised in every such test (as a framework would): its error is the report
        assert cls.raises, f"{cls.name} failed only on exceptions:\n{messages[0][-2000:]}"
        assert all("Error" in m and "Draw 1 (shape)" in m for m in messages), messages[0]
        return
    # the results keep a message's last 4000 characters: prefer one whose claim was not cut off
    intact = [m for m in asserted if f"adapter {cls.name!r}" in m]
    if not intact:
        pytest.xfail(
            f"every failure of {cls.name} kept in the results lost its claim: the results keep the last "
            "4000 characters, and a Hypothesis example with long masks fills them"
        )
    message = intact[0]
    dtype = outcomes["dtypes"][tests[messages.index(message)]]
    expected = [
        f"adapter {cls.name!r} in {dtype}",
        "index",
        "expected",
        "reproduce: pytest --pyargs attnconf.conformance",
    ]
    if "Draw 1" in message:  # a Hypothesis test: the falsifying example and how to replay it
        expected += ["--hypothesis-profile ci-noshrink", "Draw 1 (shape): Shape("]
    if "expected exactly 0" not in message:  # a hidden key's weight: "weight w at index i: expected exactly 0"
        expected.append("got")
    if "not finite" not in message and "bit for bit" not in message:  # NaN and determinism need no tolerance
        expected.append("tolerance: atol")
    missing = [part for part in expected if part not in message]
    assert not missing, f"the failure of {tests[messages.index(message)]} lacks {missing}:\n{message}"


@pytest.mark.parametrize("name", ["numpy", *(c.name for c in faulty.CONTROLS)])
@pytest.mark.parametrize("dtype", faulty.DTYPES)
def test_correct_adapter_passes_every_chapter(catalog, name, dtype):
    outcomes = _outcomes(catalog, name)
    failed = {t: m[-2000:] for t, m in outcomes["messages"].items() if outcomes["dtypes"][t] == dtype}
    assert not failed, f"{name} is correct but failed in {dtype}: {failed}"
    chapter = faulty.chapter_tests()
    ran = {chapter[t.split("[")[0]] for t, d in outcomes["dtypes"].items() if d == dtype}
    planned = set(faulty.plan()[name][dtype])
    assert ran == planned, f"{name} in {dtype} ran chapters {sorted(ran)}, the plan has {sorted(planned)}"


@pytest.mark.parametrize("chapter", INVARIANT_CHAPTERS)
def test_every_chapter_catches_a_faulty_adapter(catalog, chapter):
    catchers = [c.name for c in faulty.FAULTY if chapter in _outcomes(catalog, c.name)["failed"]]
    assert catchers, f"chapter {chapter!r} catches no faulty adapter"
    assert any(chapter in c.caught_by for c in faulty.FAULTY), f"no faulty adapter names {chapter!r} as its catcher"


def test_numbers_test_tells_an_adapter_exception_from_a_failed_comparison():
    raised = "    raise ValueError('x')\nE   ValueError: x\n\n/work/tests/faulty.py:321: ValueError"
    compared = "E   AssertionError: masking: ...\n\n/x/src/attnconf/conformance/test_masking.py:39: AssertionError"
    checked = (
        "output of adapter 'a' in float16 disagrees with the exact reference\n  tolerance: atol 1\n"
        "  reproduce: pytest --pyargs attnconf.conformance --adapter a"
    )
    assert not failed_on_the_numbers(raised)
    assert failed_on_the_numbers(compared)
    assert failed_on_the_numbers(checked)
    assert not failed_on_the_numbers("/x/src/attnconf/reference/softmax.py:50: FloatingPointError")
