"""Chapter `convexity`: each head's output lies inside the per-feature range of its values.

The attention weights of a row are convex, so feature `d` of head `h`'s output at query `t` lies
between the smallest and the largest `v[s, d]` over the keys `s` that `t` may attend. The output
projection is chosen to expose one head (`Wo[h] = I`, every other head 0, output bias 0), so the
layer's output carries head `h`'s output in its first D_v features. Large value biases make a
dropped value bias visible.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import invariants, profiles, strategies
from attnconf.conformance.invariants import fail, run
from attnconf.conformance.tolerances import derive, ratios
from attnconf.reference import project_heads


def exposing_head(weights, h: int):
    """The weights with an output projection that copies head `h`'s output to features 0..D_v-1."""
    H, D_v, E_out = weights.output_kernel.shape
    wo = np.zeros((H, D_v, E_out))
    wo[h, np.arange(D_v), np.arange(D_v)] = 1.0
    return dataclasses.replace(weights, output_kernel=wo, output_bias=np.zeros(E_out))


@profiles.conformance
@given(data=st.data())
def test_head_output_within_value_range(adapter, dtype, check, data):
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    causal = data.draw(strategies.causal_flags(caps, shape), label="causal")
    alignment = caps.causal_alignment if causal else None
    mask = data.draw(strategies.optional_masks(caps, shape, alignment), label="mask")
    magnitude = data.draw(strategies.logit_magnitudes(dtype), label="largest |logit|")
    value_bias = data.draw(st.sampled_from((1.0, 10.0)), label="value bias scale")
    h = data.draw(st.integers(0, shape.H - 1), label="head")
    inputs, weights = invariants.case(shape, seed, mask=mask, causal=causal)
    weights = invariants.with_logit_magnitude(inputs, weights, magnitude)
    weights = exposing_head(dataclasses.replace(weights, value_bias=weights.value_bias * value_bias), h)
    r = run(check, inputs, weights, f"head {h} exposed")

    x, w = inputs.astype(dtype), weights.astype(dtype)
    g = h // (shape.H // shape.H_kv)
    v = project_heads(x.value, w.value_kernel, w.value_bias, "float64")[:, g]  # (B, S, D_v)
    full = np.ones((shape.B, shape.T, shape.S), bool) if mask is None else mask
    visible = strategies.visible_rows(full, alignment)[..., None]  # (B, T, S, 1)
    lo = np.where(visible, v[:, None], np.inf).min(axis=2)  # (B, T, D_v)
    hi = np.where(visible, v[:, None], -np.inf).max(axis=2)
    D_v = v.shape[-1]
    got = np.asarray(r.got.output, np.float64)[..., :D_v]
    model = None if r.bound is None else r.bound.output[..., :D_v]
    tol = derive(r.exact.output[..., :D_v], r.same.output[..., :D_v], check.precision, model)
    excess = np.maximum(lo - got, got - hi)
    excess = np.where(np.isnan(excess), np.inf, excess)
    ratio = ratios(np.maximum(excess, 0.0), tol.bound)
    i = tuple(int(j) for j in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
    claim = "convexity: each head's output lies inside the per-feature range of that head's visible values"
    invariants.record(check, "head output", claim, tol.at(i), float(tol.reference_errors[i]), float(excess[i]), i,
                      float(ratio[i]))
    if not ratio[i] <= 1:
        fail(check, claim, [
            f"head {h}, index (b, t, d) = {i}: got output {got[i]:.8g}, expected a value inside the range of the "
            f"visible keys' values [{lo[i]:.8g}, {hi[i]:.8g}] (outside by {excess[i]:.3g})",
            f"tolerance: {tol.explain(i)}"])
