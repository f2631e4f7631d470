"""Chapter `softmax`: the attention weights of a row are a probability distribution.

Returned weights are non-negative and each row sums to 1. Adding a constant to every logit of a
row changes nothing; through the layer, a change of the key bias `b_k -> b_k + delta` adds
`scale * q_t . delta` to every logit of query row `t`, so it must leave the output unchanged
(which is also why a dropped key bias cannot be observed). Very large logits (1e4 and beyond)
produce no inf or NaN, and the output stays inside the range that convex weights allow.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import invariants, profiles, strategies
from attnconf.conformance.invariants import assert_change, fail, run
from attnconf.conformance.tolerances import derive, ratios
from attnconf.reference import project_heads


def _draw_case(data, adapter, dtype, *, extreme: bool):
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    causal = data.draw(strategies.causal_flags(caps, shape), label="causal")
    alignment = caps.causal_alignment if causal else None
    mask = data.draw(strategies.optional_masks(caps, shape, alignment), label="mask")
    inputs, weights = invariants.case(shape, seed, mask=mask, causal=causal)
    magnitudes = strategies.large_logits(dtype) if extreme else strategies.logit_magnitudes(dtype, extreme=False)
    magnitude = data.draw(magnitudes, label="largest |logit|")
    return inputs, invariants.with_logit_magnitude(inputs, weights, magnitude)


@profiles.conformance
@given(data=st.data())
def test_weights_are_distributions(adapter, dtype, check, data):
    invariants.require(adapter, returns_weights=True)
    inputs, weights = _draw_case(data, adapter, dtype, extreme=True)
    r = run(check, inputs, weights)
    w = np.asarray(r.got.weights, dtype=np.float64)
    claim = "softmax: attention weights are non-negative and every row sums to 1"
    if (w < 0).any():
        i = tuple(int(j) for j in np.argwhere(w < 0)[0])
        fail(check, claim, [f"weight {w[i]:.8g} < 0 at index {i} (B, H, T, S)"])
    sums = w.sum(axis=-1)
    same = np.asarray(r.same.weights, dtype=np.float64).sum(axis=-1)
    tol = derive(np.ones_like(sums), same, check.precision)
    i = tuple(int(j) for j in np.unravel_index(int(np.argmax(np.abs(sums - 1))), sums.shape))
    invariants.record(check, "weight row sums", claim, tol.atol, tol.reference_error, float(abs(sums[i] - 1)), i)
    if not abs(sums[i] - 1) <= tol.atol:
        fail(check, claim, [f"row {i} (B, H, T): got a sum of {sums[i]:.8g}, expected 1",
                            f"tolerance: {tol.explain()} (reference: the same-precision reference's row sums)"])


@profiles.conformance
@given(data=st.data())
def test_shift_invariance(adapter, dtype, check, data):
    inputs, weights = _draw_case(data, adapter, dtype, extreme=False)
    shift = data.draw(strategies.shifts(dtype), label="largest row shift")
    rng = np.random.default_rng(data.draw(strategies.seeds(), label="shift seed"))
    direction = rng.standard_normal(weights.key_bias.shape)  # (H_kv, D_k)
    per_row = invariants.logits(dataclasses.replace(inputs, key=np.zeros_like(inputs.key)),
                                dataclasses.replace(weights, key_kernel=np.zeros_like(weights.key_kernel),
                                                    key_bias=direction))[..., 0]  # (B, H, T): scale q_t . delta
    delta = direction * (shift / float(np.max(np.abs(per_row))))
    shifted = dataclasses.replace(weights, key_bias=weights.key_bias + delta)
    a = run(check, inputs, weights, "key bias b")
    b = run(check, inputs, shifted, "key bias b + delta")
    claim = "softmax: adding a constant to every logit of a row (through the key bias) changes nothing"
    assert_change(check, a, b, claim)
    if a.got.weights is not None:
        assert_change(check, a, b, claim, what="weights")


@profiles.conformance
@given(data=st.data())
def test_large_logits_stay_finite(adapter, dtype, check, data):
    inputs, weights = _draw_case(data, adapter, dtype, extreme=True)
    r = run(check, inputs, weights)  # fails on inf or NaN where the reference is finite
    # Each head's output is a convex combination of its values, so feature e of the output lies
    # in sum_h [min_s, max_s] (v_hs . Wo_h[:, e]) + bo_e over the visible keys s.
    x, w = inputs.astype(dtype), weights.astype(dtype)
    v = project_heads(x.value, w.value_kernel, w.value_bias, "float64")
    v = np.repeat(v, w.num_heads // w.num_kv_heads, axis=1)  # (B, H, S, D_v)
    contrib = np.einsum("bhsd,hde->bhse", v, np.asarray(w.output_kernel, np.float64))  # (B, H, S, E)
    visible = strategies.visible_rows(
        np.ones((x.shape["B"], x.shape["T"], x.shape["S"]), bool) if x.mask is None else x.mask,
        check.alignment if x.causal else None)[:, None, :, :, None]  # (B, 1, T, S, 1)
    lo = np.where(visible, contrib[:, :, None], np.inf).min(axis=3).sum(axis=1)  # (B, T, E)
    hi = np.where(visible, contrib[:, :, None], -np.inf).max(axis=3).sum(axis=1)
    if w.output_bias is not None:
        lo, hi = lo + w.output_bias, hi + w.output_bias
    tol = derive(r.exact.output, r.same.output, check.precision, None if r.bound is None else r.bound.output)
    got = np.asarray(r.got.output, np.float64)
    excess = np.maximum(lo - got, got - hi)
    ratio = ratios(np.maximum(excess, 0.0), tol.bound)
    i = tuple(int(j) for j in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
    invariants.record(check, "output", "softmax: large logits", tol.at(i), float(tol.reference_errors[i]),
                      float(excess[i]), i, float(ratio[i]))
    if not ratio[i] <= 1:
        fail(check, "softmax: with very large logits the output stays finite and inside the convex range of "
             "the values", [f"output at index {i}: got {got[i]:.8g}, expected a value inside [{lo[i]:.8g}, {hi[i]:.8g}] "
                            f"(outside by {excess[i]:.3g})",
                            f"tolerance: {tol.explain(i)}"])
