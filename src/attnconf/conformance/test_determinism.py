"""Chapter `determinism`: in inference mode two calls give the same result, and dropout is off.

Two calls on the same inputs must agree bit for bit. Where the adapter can build its layer with
an attention dropout rate (`with_dropout`), calling it the framework's documented way for
inference must give what the layer without dropout gives.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import invariants, profiles, strategies
from attnconf.conformance.invariants import Run, assert_change, fail, run


def _draw(data, adapter):
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    mask = data.draw(strategies.optional_masks(caps, shape), label="mask")
    return invariants.case(shape, seed, mask=mask)


@profiles.conformance
@given(data=st.data())
def test_two_calls_are_identical(adapter, dtype, check, data):
    inputs, weights = _draw(data, adapter)
    first, second = check.layer(inputs, weights), check.layer(inputs, weights)
    claim = "determinism: two calls on the same inputs in inference mode give identical results"
    for what, x, y in (("output", first.output, second.output), ("attention weights", first.weights, second.weights)):
        if x is None or y is None:
            continue
        x, y = np.asarray(x), np.asarray(y)
        differ = ~((x == y) | (np.isnan(x) & np.isnan(y)))
        if differ.any():
            i = tuple(int(j) for j in np.argwhere(differ)[0])
            fail(check, claim, [f"{what}: {int(differ.sum())} of {x.size} entries differ, first at index {i}: "
                                f"expected {x[i]!r} (the first call, bit for bit), got {y[i]!r}"])


@profiles.conformance
@given(data=st.data())
def test_dropout_is_off_in_inference(adapter, dtype, check, data):
    if not hasattr(adapter, "with_dropout"):
        import pytest

        pytest.skip(f"{adapter.name} cannot build its layer with a dropout rate (no `with_dropout` method)")
    # One shape, no mask and one rate: the layer built with dropout is a new compile for JAX and XLA.
    shape = strategies.BASE[0]
    inputs, weights = invariants.case(shape, data.draw(strategies.seeds(), label="seed"))
    rate = 0.5
    a = run(check, inputs, weights, "layer without dropout")
    got = invariants.call(check, "with_dropout", inputs, weights, rate)
    b = Run(got, a.exact, a.same, f"layer with dropout rate {rate}, called for inference")
    claim = f"determinism: a layer built with attention dropout {rate} applies no dropout in inference mode"
    assert_change(check, a, b, claim)
    if a.got.weights is not None and got.weights is not None:
        assert_change(check, a, b, claim, what="weights")
