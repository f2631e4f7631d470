"""Chapter `causality`: nothing leaks from the future, and the causal flag is the declared mask.

The alignment is the adapter's `capabilities.causal_alignment`: top-left (key `j` visible to
query `i` when `j <= i`) or bottom-right (`j <= i + S - T`). Shapes include T = 1 (decode) and
T > S; under bottom-right alignment T > S leaves rows with no visible key, so those shapes are left
out there (`strategies.fits_causal`). T != S cases tell the two alignments apart.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import invariants, profiles, strategies
from attnconf.conformance.invariants import assert_change, run
from attnconf.reference import causal_mask


@profiles.conformance
@given(data=st.data())
def test_causal_no_leak(adapter, dtype, check, data):
    invariants.require(adapter, causal=True)
    caps = adapter.capabilities
    # Some key after the first one the last unchanged row sees: S - 2 >= offset.
    shape = data.draw(strategies.shapes(caps, causal=check.alignment).filter(
        lambda s: (s.S - s.T if check.alignment == "bottom_right" else 0) <= s.S - 2), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    self_attention = shape.T == shape.S and data.draw(st.booleans(), label="self-attention")
    offset = shape.S - shape.T if check.alignment == "bottom_right" else 0
    # Keys after `cut` change; queries whose last visible key is at most `cut` must not notice.
    cut = data.draw(st.integers(offset, shape.S - 2), label="last unchanged key")
    magnitude = data.draw(st.sampled_from((1.0, 10.0)), label="perturbation magnitude")
    inputs, weights = invariants.case(shape, seed, causal=True, self_attention=self_attention)
    rng = np.random.default_rng(seed + 1)
    rows = np.arange(shape.T) + offset <= cut  # queries that may only see keys 0..cut
    later_keys = (slice(None), slice(cut + 1, None))
    if self_attention:
        x = invariants.perturb(inputs.query, later_keys, rng, magnitude)
        changed = dataclasses.replace(inputs, query=x, key=x, value=x)
    else:
        changed = dataclasses.replace(
            inputs, query=invariants.perturb(inputs.query, (slice(None), ~rows), rng, magnitude),
            key=invariants.perturb(inputs.key, later_keys, rng, magnitude),
            value=invariants.perturb(inputs.value, later_keys, rng, magnitude))
    a = run(check, inputs, weights, "original")
    b = run(check, changed, weights, f"positions after {cut} changed")
    claim = (f"causality ({check.alignment} alignment, T={shape.T}, S={shape.S}): changing keys and values "
             f"after position {cut} leaves the output of every query that may only see keys 0..{cut} unchanged")
    assert_change(check, a, b, claim, where=rows[None, :, None])
    if a.got.weights is not None:
        assert_change(check, a, b, claim, what="weights", where=rows[None, None, :, None])


@profiles.conformance
@given(data=st.data())
def test_causal_flag_is_the_declared_mask(adapter, dtype, check, data):
    """The flag alone, and (where the adapter takes both and the shape lets a mask hide a key) the flag with a
    mask, in every example: a kernel that drops the mask when the causal flag is set is caught on any draw."""
    invariants.require(adapter, causal=True, boolean_mask=True)
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps, causal=check.alignment), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    masks = [None]
    if caps.causal_with_mask and strategies.maskable(shape, check.alignment):
        masks.append(data.draw(strategies.masks(shape.B, shape.T, shape.S, check.alignment), label="mask"))
    tri = causal_mask(shape.T, shape.S, check.alignment)[None]
    for mask in masks:
        inputs, weights = invariants.case(shape, seed, mask=mask)
        explicit = dataclasses.replace(inputs, mask=np.broadcast_to(tri, (shape.B, shape.T, shape.S)) & (
            True if mask is None else mask))
        flagged = dataclasses.replace(inputs, causal=True)
        with_mask = "" if mask is None else " and the mask"
        a = run(check, explicit, weights, f"explicit {check.alignment} causal mask{with_mask}")
        b = run(check, flagged, weights, f"causal flag{with_mask}")
        claim = (f"causality: the causal flag means the declared {check.alignment} mask (T={shape.T}, S={shape.S})"
                 + (", combined with the given mask" if mask is not None else ""))
        assert_change(check, a, b, claim)
        if a.got.weights is not None and b.got.weights is not None:
            assert_change(check, a, b, claim, what="weights")
