"""Chapter `masking`: a masked key gets zero weight, and its content changes nothing.

Masks are drawn with a visible key in every row (strategies.masks). The content test replaces
the key and value of every key that no query of a batch element may attend with fresh values
of a large magnitude: logits towards masked keys then exceed any finite fill value that is too
small for the precision, and a masked value that leaks in is large enough to see.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import invariants, profiles, strategies
from attnconf.conformance.invariants import assert_change, assert_close, run

#: Magnitude of the replaced content of masked keys and values, per precision: logits towards
#: masked keys reach about 1e5 in float32/float64 and stay far from float16's range.
MASKED_CONTENT = {"float64": (1.0, 1e5), "float32": (1.0, 1e5), "bfloat16": (1.0, 1e2), "float16": (1.0, 1e2)}


@profiles.conformance
@given(data=st.data())
def test_masked_keys_get_zero_weight(adapter, dtype, check, data):
    invariants.require(adapter, boolean_mask=True, returns_weights=True)
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps, masked=True), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    causal = caps.causal and caps.causal_with_mask and strategies.maskable(shape, caps.causal_alignment) and data.draw(
        st.booleans(), label="causal")
    alignment = caps.causal_alignment if causal else None
    mask = data.draw(strategies.masks(shape.B, shape.T, shape.S, alignment), label="mask")
    magnitude = data.draw(strategies.logit_magnitudes(dtype), label="largest |logit|")
    inputs, weights = invariants.case(shape, seed, mask=mask, causal=causal)
    r = run(check, inputs, invariants.with_logit_magnitude(inputs, weights, magnitude))
    hidden = ~strategies.visible_rows(mask, alignment)[:, None]  # (B, 1, T, S)
    assert_close(check, r.got.weights, r.exact.weights, r.same.weights,
                 "masking: a masked key gets zero weight", "attention weights (B, H, T, S)", where=hidden,
                 model=r.bound.weights)


@profiles.conformance
@given(data=st.data())
def test_masked_key_content_is_irrelevant(adapter, dtype, check, data):
    invariants.require(adapter, boolean_mask=True)
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps, masked=True), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    mask = data.draw(strategies.masks(shape.B, shape.T, shape.S), label="mask")
    # One more key per element that no query may attend (key 0 keeps every row non-empty).
    hide = data.draw(st.lists(st.integers(1, shape.S - 1), min_size=shape.B, max_size=shape.B), label="hidden key")
    mask = mask.copy()
    mask[np.arange(shape.B), :, hide] = False
    mask[~mask.any(axis=-1), 0] = True
    magnitude = data.draw(st.sampled_from(MASKED_CONTENT[dtype]), label="replaced content magnitude")
    inputs, weights = invariants.case(shape, seed, mask=mask)
    rng = np.random.default_rng(seed + 1)
    unseen = ~mask.any(axis=1)  # (B, S): keys no query of the element may attend
    changed = dataclasses.replace(inputs, key=invariants.perturb(inputs.key, unseen, rng, magnitude),
                                  value=invariants.perturb(inputs.value, unseen, rng, magnitude))
    a = run(check, inputs, weights, "original masked keys")
    b = run(check, changed, weights, "masked keys and values replaced")
    claim = "masking: changing the content of a masked key or value changes nothing"
    assert_change(check, a, b, claim)
    if a.got.weights is not None:
        assert_change(check, a, b, claim, what="weights")
