"""Chapter `heads`: multi-head attention is independent single-head attentions, concatenated.

Head `h` of the layer, exposed by an output projection that is zero for every other head, must
equal a single-head layer built from head `h`'s slices of the canonical weights (query head `h`,
kv head `h // (H // H_kv)`, `Wo[h]`), returned weights included. Every other head's weights are
present in the multi-head run, so a head that reads another head's queries, keys or values, or
lands in another head's slot of the output projection, shows. Grouped-query attention equals
multi-head attention with each kv head repeated for its group of query heads.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import invariants, profiles, strategies
from attnconf.conformance.invariants import assert_change, pad, run
from attnconf.contract import AttentionWeights

Array = np.ndarray


def only_head(weights: AttentionWeights, h: int) -> AttentionWeights:
    """The weights with every head's output kernel but head `h`'s set to zero."""
    wo = np.zeros_like(weights.output_kernel)
    wo[h] = weights.output_kernel[h]
    return dataclasses.replace(weights, output_kernel=wo)


def single_head(weights: AttentionWeights, h: int, tied: bool) -> AttentionWeights:
    """A one-head layer from head `h`'s slices: `(E, H, D) -> (E, 1, D)`, `(H, D, E) -> (1, D, E)`.

    Where the adapter ties the head width to the input width (`tied`: D = E / H, as torch),
    the head is widened to D = E: its query, key and value features get zero columns, the
    output kernel zero rows, and the query is multiplied by sqrt(E / D), which the scale
    1/sqrt(E) undoes; the logits and the output stay those of head `h`.
    """
    g = h // (weights.num_heads // weights.num_kv_heads)

    def cut(a: Array | None, i: int, axis: int) -> Array | None:
        return None if a is None else np.take(a, [i], axis=axis)

    w = AttentionWeights(
        query_kernel=cut(weights.query_kernel, h, 1), key_kernel=cut(weights.key_kernel, g, 1),
        value_kernel=cut(weights.value_kernel, g, 1), output_kernel=cut(weights.output_kernel, h, 0),
        query_bias=cut(weights.query_bias, h, 0), key_bias=cut(weights.key_bias, g, 0),
        value_bias=cut(weights.value_bias, g, 0), output_bias=weights.output_bias)
    if not tied:
        return w
    E, D, D_v = weights.query_dim, weights.key_head_dim, weights.value_head_dim
    f = np.sqrt(E / D)
    return AttentionWeights(
        query_kernel=pad(w.query_kernel * f, 2, E - D), key_kernel=pad(w.key_kernel, 2, E - D),
        value_kernel=pad(w.value_kernel, 2, E - D_v), output_kernel=pad(w.output_kernel, 1, E - D_v),
        query_bias=None if w.query_bias is None else pad(w.query_bias * f, 1, E - D), key_bias=pad(w.key_bias, 1, E - D),
        value_bias=pad(w.value_bias, 1, E - D_v), output_bias=w.output_bias)


def repeated_kv_heads(weights: AttentionWeights) -> AttentionWeights:
    """Grouped-query weights as multi-head weights: kv head `g` repeated for its query heads."""
    group = weights.num_heads // weights.num_kv_heads

    def rep(a: Array | None, axis: int) -> Array | None:
        return None if a is None else np.repeat(a, group, axis=axis)

    return dataclasses.replace(
        weights, key_kernel=rep(weights.key_kernel, 1), value_kernel=rep(weights.value_kernel, 1),
        key_bias=rep(weights.key_bias, 0), value_bias=rep(weights.value_bias, 0))


@profiles.conformance
@given(data=st.data())
def test_heads_are_independent_single_head_attentions(adapter, dtype, check, data):
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    mask = data.draw(strategies.optional_masks(caps, shape), label="mask")
    h = data.draw(st.integers(0, shape.H - 1), label="head")
    inputs, weights = invariants.case(shape, seed, mask=mask)
    a = run(check, inputs, only_head(weights, h), f"{shape.H} heads, output projection of head {h} only")
    b = run(check, inputs, single_head(weights, h, not caps.head_dim), f"single head sliced from head {h}")
    claim = (f"heads: head {h} of {shape.H} (kv heads {shape.H_kv}) equals the single-head attention built from "
             f"its slices of the weights, through its output projection")
    assert_change(check, a, b, claim)
    if a.got.weights is not None:
        assert_change(check, a, b, claim, what="weights", map_a=lambda w: w[:, h:h + 1])


@profiles.conformance
@given(data=st.data())
def test_gqa_is_mha_with_repeated_kv_heads(adapter, dtype, check, data):
    invariants.require(adapter, gqa=True)
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps, gqa=True), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    mask = data.draw(strategies.optional_masks(caps, shape), label="mask")
    inputs, weights = invariants.case(shape, seed, mask=mask)
    a = run(check, inputs, weights, f"{shape.H} query heads, {shape.H_kv} kv heads")
    b = run(check, inputs, repeated_kv_heads(weights), f"{shape.H} heads, kv heads repeated")
    claim = (f"heads: grouped-query attention ({shape.H} query heads, {shape.H_kv} kv heads) equals multi-head "
             f"attention with each kv head repeated for its {shape.H // shape.H_kv} query heads")
    assert_change(check, a, b, claim)
    if a.got.weights is not None:
        assert_change(check, a, b, claim, what="weights")
