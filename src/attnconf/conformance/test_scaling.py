"""Chapter `scaling`: logits are scaled by 1/sqrt(D_k), or by the given scale.

Duplicating every query and key feature doubles D_k and doubles every `q . k`. Under the
default scale 1/sqrt(D_k) the logits then grow by sqrt(2), which dividing the query projection
by sqrt(2) undoes: the output is unchanged exactly when the adapter scales by 1/sqrt(D_k)
(a scale of 1/D_k, or none, changes it). With a given scale `s`, the duplicated layer run with
`s / 2` must give what the original gives with `s`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import invariants, profiles, strategies
from attnconf.conformance.invariants import assert_change, pad, run
from attnconf.contract import AttentionInputs, AttentionWeights, Capabilities

Array = np.ndarray


def doubled_head_width(inputs: AttentionInputs, weights: AttentionWeights, caps: Capabilities,
                       query_factor: float = 1.0) -> tuple[AttentionInputs, AttentionWeights]:
    """D_k -> 2 D_k: query and key kernels and biases `(.., D_k)` concatenated with themselves.

    The query's copy is multiplied by `query_factor`. Widths the adapter ties to D_k grow with
    it, by zeros that change no output feature: D_v (`value_dim=False`) gets zero value
    columns and zero output-kernel rows; E (`head_dim=False`: E = H * D_k, as torch) gets E zero
    input features, zero kernel rows and E zero output features. The first E output features
    are compared.
    """

    def dup(a: Array | None, factor: float = 1.0) -> Array | None:
        return None if a is None else np.concatenate([a, a], axis=-1) * factor

    w = dataclasses.replace(
        weights, query_kernel=dup(weights.query_kernel, query_factor), query_bias=dup(weights.query_bias, query_factor),
        key_kernel=dup(weights.key_kernel), key_bias=dup(weights.key_bias))
    E, D_v = weights.query_dim, weights.value_head_dim
    if not caps.value_dim or not caps.head_dim:
        w = dataclasses.replace(w, value_kernel=pad(w.value_kernel, 2, D_v), value_bias=pad(w.value_bias, 1, D_v),
                                output_kernel=pad(w.output_kernel, 1, D_v))
    if caps.head_dim:
        return inputs, w
    x = dataclasses.replace(inputs, query=pad(inputs.query, -1, E), key=pad(inputs.key, -1, E),
                            value=pad(inputs.value, -1, E))
    w = dataclasses.replace(
        w, query_kernel=pad(w.query_kernel, 0, E), key_kernel=pad(w.key_kernel, 0, E),
        value_kernel=pad(w.value_kernel, 0, E), output_kernel=pad(w.output_kernel, 2, E),
        output_bias=pad(w.output_bias, 0, E))
    return x, w


@profiles.conformance
@given(data=st.data())
def test_default_scale_is_inverse_sqrt_dk(adapter, dtype, check, data):
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    magnitude = data.draw(strategies.logit_magnitudes(dtype, extreme=False), label="largest |logit|")
    inputs, weights = invariants.case(shape, seed)
    weights = invariants.with_logit_magnitude(inputs, weights, magnitude)
    a = run(check, inputs, weights, "D_k")
    b = run(check, *doubled_head_width(inputs, weights, caps, 2**-0.5),
            "2 D_k (features duplicated, query / sqrt 2)")
    assert_change(check, a, b, "scaling: the default logit scale is 1/sqrt(D_k); doubling D_k with duplicated "
                  "features and the query divided by sqrt(2) changes nothing", map_b=lambda y: y[..., :shape.E])


@profiles.conformance
@given(data=st.data())
def test_given_scale_is_used(adapter, dtype, check, data):
    invariants.require(adapter, custom_scale=True)
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    scale = data.draw(st.sampled_from((0.125, 0.7, 2.0)), label="scale")
    inputs, weights = invariants.case(shape, seed, scale=scale)
    a = run(check, inputs, weights, f"D_k, scale {scale}")
    doubled = dataclasses.replace(inputs, scale=scale / 2)
    b = run(check, *doubled_head_width(doubled, weights, caps), f"2 D_k (features duplicated), scale {scale / 2}")
    assert_change(check, a, b, "scaling: logits are scaled by the given scale; doubling D_k with duplicated "
                  "features and halving the scale changes nothing", map_b=lambda y: y[..., :shape.E])
