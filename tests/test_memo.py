"""The session's store of references (`attnconf.conformance.memo`): exact keys, read-only results."""

from __future__ import annotations

import numpy as np
import pytest

from attnconf.adapters.base import AttentionInputs
from attnconf.adapters.numpy_ref import NumpyAdapter
from attnconf.conformance import memo
from attnconf.conformance.cases import CONFIGS, make_inputs, make_weights
from attnconf.conformance.check import Checker


@pytest.fixture(autouse=True)
def empty_store():
    memo.clear()
    yield
    memo.clear()


def counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value()

    return compute, calls


def test_an_equal_key_is_computed_once():
    compute, calls = counting(lambda: np.arange(4.0))
    a = np.linspace(0, 1, 6).reshape(2, 3)
    first = memo.cached(("f", a.copy(), "float32"), compute)
    again = memo.cached(("f", a.copy(), "float32"), compute)
    assert len(calls) == 1
    assert again is first


@pytest.mark.parametrize("change", ["one bit", "dtype", "shape", "scalar", "string", "None"])
def test_any_difference_is_a_different_key(change):
    a = np.linspace(0, 1, 6).reshape(2, 3)
    base = ("f", a, "float32", 0.5, None)
    b = a.copy()
    if change == "one bit":
        b.view(np.uint64)[1, 2] ^= 1  # the last bit of one element's mantissa
        other = ("f", b, "float32", 0.5, None)
    elif change == "dtype":
        other = ("f", a.astype(np.float32), "float32", 0.5, None)
    elif change == "shape":
        other = ("f", a.reshape(3, 2), "float32", 0.5, None)
    elif change == "scalar":
        other = ("f", a, "float32", 0.5000000000000001, None)
    elif change == "string":
        other = ("f", a, "float64", 0.5, None)
    else:
        other = ("f", a, "float32", 0.5, np.zeros(1))
    assert memo.digest(base) != memo.digest(other)
    compute, calls = counting(lambda: np.zeros(1))
    memo.cached(base, compute)
    memo.cached(other, compute)
    assert len(calls) == 2


def test_dataclasses_are_keyed_by_their_fields():
    q = np.ones((1, 2, 4))
    one = AttentionInputs(q, q, q, None, False, None)
    assert memo.digest(one) == memo.digest(AttentionInputs(q.copy(), q.copy(), q.copy(), None, False, None))
    assert memo.digest(one) != memo.digest(AttentionInputs(q, q, q, None, True, None))
    assert memo.digest(one) != memo.digest(AttentionInputs(q, q, q, None, False, 0.5))


def test_results_are_read_only_from_the_first_call():
    compute, _ = counting(lambda: (np.zeros(3), [np.ones(2)]))
    for _ in range(2):
        first, (second,) = memo.cached("key", compute)
        with pytest.raises(ValueError, match="read-only"):
            first[0] = 1.0
        with pytest.raises(ValueError, match="read-only"):
            second[0] = 1.0


def test_unknown_key_types_are_refused():
    with pytest.raises(TypeError, match="got object"):
        memo.cached(("f", object()), lambda: 0)


def test_oldest_results_are_dropped_over_the_byte_limit(monkeypatch):
    monkeypatch.setattr(memo, "LIMIT_BYTES", 2 * 8 * 100)
    compute, calls = counting(lambda: np.zeros(100))
    for key in ("a", "b", "c"):
        memo.cached(key, compute)
    memo.cached("c", compute)
    memo.cached("b", compute)
    assert len(calls) == 3
    memo.cached("a", compute)  # dropped when "c" came in
    assert len(calls) == 4


def test_checker_references_are_shared_between_adapters_and_equal_to_a_fresh_computation():
    config = CONFIGS["random_mask"]
    inputs, weights = make_inputs(config, np.random.default_rng(3)), make_weights(config, np.random.default_rng(4))
    a = Checker(NumpyAdapter(), "float32", "a", "")
    b = Checker(NumpyAdapter(), "float32", "b", "")
    exact, same = a.references(inputs, weights)
    assert b.references(inputs, weights)[0] is exact
    assert memo.stats["hits"] >= 1
    memo.clear()
    fresh_exact, fresh_same = b.references(inputs, weights)
    assert fresh_exact is not exact
    np.testing.assert_array_equal(fresh_exact.output, exact.output)
    np.testing.assert_array_equal(fresh_same.weights, same.weights)
    assert a.references(inputs, weights)[0] is not Checker(NumpyAdapter(), "float64", "c", "").references(inputs, weights)[0]
