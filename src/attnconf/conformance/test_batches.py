"""Chapter `batches`: each batch element is independent of the others.

Changing one element's query, key, value and mask leaves every other element's output (and
returned weights) unchanged, with and without a mask and a causal flag.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import invariants, profiles, strategies
from attnconf.conformance.invariants import assert_change, run


@profiles.conformance
@given(data=st.data())
def test_batch_elements_are_independent(adapter, dtype, check, data):
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    causal = caps.causal and strategies.fits_causal(shape, caps.causal_alignment) and data.draw(
        st.booleans(), label="causal")
    alignment = caps.causal_alignment if causal else None
    mask_strategy = strategies.optional_masks(caps, shape, alignment)
    mask = data.draw(mask_strategy, label="mask")
    k = data.draw(st.integers(0, shape.B - 1), label="changed element")
    inputs, weights = invariants.case(shape, seed, mask=mask, causal=causal)
    rng = np.random.default_rng(seed + 1)
    new_mask = None
    if mask is not None:
        new_mask = mask.copy()
        new_mask[k] = data.draw(strategies.masks(1, shape.T, shape.S, alignment), label="changed mask")[0]
    changed = dataclasses.replace(
        inputs, query=invariants.perturb(inputs.query, k, rng), key=invariants.perturb(inputs.key, k, rng),
        value=invariants.perturb(inputs.value, k, rng), mask=new_mask)
    a = run(check, inputs, weights, "batch")
    b = run(check, changed, weights, f"element {k} changed")
    others = np.arange(shape.B) != k
    claim = f"batches: changing batch element {k} (query, key, value and mask) leaves the other elements unchanged"
    assert_change(check, a, b, claim, where=others[:, None, None])
    if a.got.weights is not None:
        assert_change(check, a, b, claim, what="weights", where=others[:, None, None, None])
