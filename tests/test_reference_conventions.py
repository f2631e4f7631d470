"""The spec's modern conventions (rotary, ALiBi, windows, soft caps, KV-cache decode, ragged batches)
against the plain-Python oracles of tests/oracle_conventions.py, and the invariants they must keep."""

from __future__ import annotations

import math

import numpy as np
import oracle_conventions as oc
import pytest

from attnconf.adapters.base import AttentionInputs, AttentionWeights
from attnconf.reference import (
    Rotary,
    alibi_bias,
    alibi_slopes,
    causal_mask,
    convert_rotary_layout,
    decode_step,
    lengths_to_mask,
    multi_head_attention,
    rotary_embedding,
    rotary_layout_permutation,
    round_to,
    scaled_dot_product_attention,
    softcap,
    window_mask,
)

TIGHT = dict(rtol=1e-12, atol=1e-12)


def _rng(*key):
    return np.random.default_rng(abs(hash(key)) % 2**32)


def _qkv(rng, B=2, H=4, G=2, T=5, S=5, D=6, E=3):
    return (rng.standard_normal((B, H, T, D)), rng.standard_normal((B, G, S, D)), rng.standard_normal((B, G, S, E)))


# ---------------------------------------------------------------- rotary


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("rotary_dim,theta,batched", [(None, 10000.0, False), (4, 500000.0, True), (2, 10.0, False)])
def test_rotary_matches_oracle(layout, rotary_dim, theta, batched):
    rng = _rng("rope", layout, rotary_dim)
    x = rng.standard_normal((2, 3, 4, 8))
    positions = rng.integers(0, 5000, size=(2, 4)) if batched else np.arange(7, 11)  # offset: decode at p = 7
    got = rotary_embedding(x, positions, layout=layout, rotary_dim=rotary_dim, theta=theta)
    want = oc.rope(x.tolist(), positions.tolist(), layout, rotary_dim, theta)
    np.testing.assert_allclose(got, np.array(want), **TIGHT)
    r = 8 if rotary_dim is None else rotary_dim
    np.testing.assert_array_equal(got[..., r:], x[..., r:])  # the features after rotary_dim pass through


def test_rotary_layouts_differ_and_position_zero_is_identity():
    x = _rng("rope-layouts").standard_normal((1, 2, 3, 8))
    half = rotary_embedding(x, np.arange(1, 4), layout="half")
    inter = rotary_embedding(x, np.arange(1, 4), layout="interleaved")
    assert np.abs(half - inter).max() > 0.1  # the layouts are different rotations of the same features
    np.testing.assert_array_equal(rotary_embedding(x, np.zeros(3, dtype=int), layout="interleaved"), x)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rotary_logits_depend_only_on_relative_position(layout):
    rng = _rng("rope-relative", layout)
    q, k = rng.standard_normal((1, 2, 5, 8)), rng.standard_normal((1, 2, 7, 8))
    pq, pk = rng.integers(0, 50, size=5), rng.integers(0, 50, size=7)

    def logits(shift):
        qr = rotary_embedding(q, pq + shift, layout=layout, rotary_dim=6)
        kr = rotary_embedding(k, pk + shift, layout=layout, rotary_dim=6)
        return np.einsum("bhtd,bhsd->bhts", qr, kr)

    base = logits(0)
    for shift in (1, 17, 1000):
        np.testing.assert_allclose(logits(shift), base, rtol=1e-9, atol=1e-9)
    # ...and do depend on it: moving the queries alone changes them
    moved = np.einsum(
        "bhtd,bhsd->bhts",
        rotary_embedding(q, pq + 1, layout=layout, rotary_dim=6),
        rotary_embedding(k, pk, layout=layout, rotary_dim=6),
    )
    assert np.abs(moved - base).max() > 1e-3


@pytest.mark.parametrize("source,target", [("interleaved", "half"), ("half", "interleaved")])
@pytest.mark.parametrize("rotary_dim", [None, 4])
def test_rotary_layouts_are_one_permutation_apart(source, target, rotary_dim):
    x = _rng("perm", source, rotary_dim).standard_normal((2, 2, 4, 8))
    pos = np.arange(3, 7)
    perm = rotary_layout_permutation(8, source=source, target=target, rotary_dim=rotary_dim)
    assert sorted(perm.tolist()) == list(range(8))
    lhs = rotary_embedding(x[..., perm], pos, layout=target, rotary_dim=rotary_dim)
    rhs = rotary_embedding(x, pos, layout=source, rotary_dim=rotary_dim)[..., perm]
    np.testing.assert_array_equal(lhs, rhs)
    back = rotary_layout_permutation(8, source=target, target=source, rotary_dim=rotary_dim)
    np.testing.assert_array_equal(x[..., perm][..., back], x)


def test_interleaved_to_half_permutation_values():
    assert rotary_layout_permutation(8, source="interleaved", target="half").tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert rotary_layout_permutation(6, source="half", target="interleaved", rotary_dim=4).tolist() == [
        0,
        2,
        1,
        3,
        4,
        5,
    ]


def test_converting_projection_weights_converts_the_model():
    """An interleaved-layout model equals a half-layout model whose query/key weights are permuted."""
    rng = _rng("mha-rope")
    B, T, E, H, G, D = 2, 5, 6, 4, 2, 8
    w = AttentionWeights(
        query_kernel=rng.standard_normal((E, H, D)),
        key_kernel=rng.standard_normal((E, G, D)),
        value_kernel=rng.standard_normal((E, G, 3)),
        output_kernel=rng.standard_normal((H, 3, E)),
        query_bias=rng.standard_normal((H, D)),
        key_bias=rng.standard_normal((G, D)),
    )
    x = rng.standard_normal((B, T, E))
    inputs = AttentionInputs(x, x, x, causal=True)
    conv = dict(source="interleaved", target="half", rotary_dim=6)
    w_half = AttentionWeights(
        query_kernel=convert_rotary_layout(w.query_kernel, **conv),
        key_kernel=convert_rotary_layout(w.key_kernel, **conv),
        value_kernel=w.value_kernel,
        output_kernel=w.output_kernel,
        query_bias=convert_rotary_layout(w.query_bias, **conv),
        key_bias=convert_rotary_layout(w.key_bias, **conv),
    )
    interleaved = multi_head_attention(inputs, w, rotary=Rotary("interleaved", rotary_dim=6))
    half = multi_head_attention(inputs, w_half, rotary=Rotary("half", rotary_dim=6))
    np.testing.assert_allclose(half.output, interleaved.output, **TIGHT)
    wrong = multi_head_attention(inputs, w, rotary=Rotary("half", rotary_dim=6))
    assert np.abs(wrong.output - interleaved.output).max() > 1e-3


@pytest.mark.parametrize("alignment", ["top_left", "bottom_right"])
@pytest.mark.parametrize("T,S", [(3, 6), (6, 3)])
def test_sdpa_rotary_uses_the_aligned_positions(alignment, T, S):
    rng = _rng("sdpa-rope", alignment, T)
    q, k, v = _qkv(rng, T=T, S=S)
    rot = Rotary("interleaved", rotary_dim=4, theta=100.0)
    got = scaled_dot_product_attention(q, k, v, causal=True, alignment=alignment, rotary=rot)
    pq = [oc.query_position(t, T, S, alignment) for t in range(T)]  # negative for T > S, bottom_right
    qr = oc.rope(q.tolist(), pq, "interleaved", 4, 100.0)
    kr = oc.rope(k.tolist(), list(range(S)), "interleaved", 4, 100.0)
    want = oc.attention(qr, kr, v.tolist(), causal=True, alignment=alignment)
    np.testing.assert_allclose(got, np.array(want), **TIGHT)


# ---------------------------------------------------------------- ALiBi


def test_alibi_slopes_power_of_two():
    assert alibi_slopes(8).tolist() == [2.0**-k for k in range(1, 9)]
    assert alibi_slopes(4).tolist() == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]
    assert alibi_slopes(1).tolist() == [2.0**-8]


def test_alibi_slopes_not_a_power_of_two_follow_the_paper_rule():
    # 6 heads: the 4-head slopes, then the 1st and 3rd of the 8-head slopes
    assert alibi_slopes(6).tolist() == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]
    # 12 heads: the 8-head slopes, then the 1st, 3rd, 5th and 7th of the 16-head slopes
    want12 = [2.0**-k for k in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]
    np.testing.assert_allclose(alibi_slopes(12), want12, rtol=1e-15, atol=0)
    # the geometric sequence of 12 (what a port that ignores the rule computes) is a different one
    naive = [2.0 ** (-8.0 * k / 12) for k in range(1, 13)]
    assert np.abs(alibi_slopes(12) - naive).max() > 0.1
    for n in range(1, 40):
        np.testing.assert_allclose(alibi_slopes(n), oc.alibi_slopes(n), rtol=1e-15, atol=0)


@pytest.mark.parametrize("alignment", ["top_left", "bottom_right"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("T,S", [(3, 5), (5, 3), (4, 4)])
def test_alibi_bias_matches_oracle(alignment, symmetric, T, S):
    got = alibi_bias(6, T, S, alignment=alignment, symmetric=symmetric)
    want = oc.alibi_bias(oc.alibi_slopes(6), T, S, alignment, symmetric)
    assert got.shape == (6, T, S)
    np.testing.assert_allclose(got, np.array(want), rtol=1e-15, atol=0)
    visible = causal_mask(T, S, alignment)
    signed = alibi_bias(6, T, S, alignment=alignment)
    absolute = alibi_bias(6, T, S, alignment=alignment, symmetric=True)
    np.testing.assert_array_equal(signed[:, visible], absolute[:, visible])  # agree where causal attention looks


@pytest.mark.parametrize("alignment", ["top_left", "bottom_right"])
def test_sdpa_alibi_matches_oracle(alignment):
    rng = _rng("sdpa-alibi", alignment)
    q, k, v = _qkv(rng, H=6, G=3, T=4, S=6)
    slopes = alibi_slopes(6)
    extra = rng.standard_normal((2, 6, 4, 6))
    got = scaled_dot_product_attention(q, k, v, bias=extra, causal=True, alignment=alignment, alibi_slopes=slopes)
    ab = oc.alibi_bias(slopes.tolist(), 4, 6, alignment)
    bias = [
        [[[extra[b, h, t, s] + ab[h][t][s] for s in range(6)] for t in range(4)] for h in range(6)] for b in range(2)
    ]
    want = oc.attention(q.tolist(), k.tolist(), v.tolist(), causal=True, alignment=alignment, bias=bias)
    np.testing.assert_allclose(got, np.array(want), **TIGHT)


# ---------------------------------------------------------------- sliding windows


@pytest.mark.parametrize("alignment", ["top_left", "bottom_right"])
@pytest.mark.parametrize("T,S", [(1, 1), (3, 7), (7, 3), (5, 5)])
def test_window_mask_matches_oracle(alignment, T, S):
    for left in (None, 0, 1, 2, 6):
        for right in (None, 0, 1, 3):
            got = window_mask(T, S, left=left, right=right, alignment=alignment)
            want = [[oc.window_visible(t, s, T, S, left, right, alignment) for s in range(S)] for t in range(T)]
            assert got.tolist() == want, (left, right)


def test_window_bounds_are_inclusive():
    assert window_mask(4, 4, left=1, right=0).astype(int).tolist() == [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 1, 1, 0],
        [0, 0, 1, 1],
    ]
    assert window_mask(3, 3, left=0, right=0).tolist() == np.eye(3, dtype=bool).tolist()  # the diagonal counts
    assert window_mask(2, 4, left=1, right=1, alignment="bottom_right").astype(int).tolist() == [
        [0, 1, 1, 1],
        [0, 0, 1, 1],
    ]


@pytest.mark.parametrize("alignment", ["top_left", "bottom_right"])
@pytest.mark.parametrize("T,S", [(1, 4), (3, 5), (5, 3), (4, 4)])
def test_unbounded_left_window_is_the_causal_mask(alignment, T, S):
    np.testing.assert_array_equal(
        window_mask(T, S, left=None, right=0, alignment=alignment), causal_mask(T, S, alignment)
    )
    # a window at least as wide as the sequence is the causal mask too
    np.testing.assert_array_equal(
        window_mask(T, S, left=T + S, right=0, alignment=alignment), causal_mask(T, S, alignment)
    )
    assert window_mask(T, S, left=None, right=None, alignment=alignment).all()


@pytest.mark.parametrize("alignment", ["top_left", "bottom_right"])
def test_sdpa_window(alignment):
    rng = _rng("sdpa-window", alignment)
    q, k, v = _qkv(rng, T=4, S=7)
    wide = scaled_dot_product_attention(q, k, v, window=(7, 0), alignment=alignment)
    np.testing.assert_array_equal(wide, scaled_dot_product_attention(q, k, v, causal=True, alignment=alignment))
    full = scaled_dot_product_attention(q, k, v, window=(None, None), alignment=alignment)
    np.testing.assert_array_equal(full, scaled_dot_product_attention(q, k, v))
    got = scaled_dot_product_attention(q, k, v, window=(2, 1), causal=False, alignment=alignment)
    want = oc.attention(q.tolist(), k.tolist(), v.tolist(), alignment=alignment, window=(2, 1))
    np.testing.assert_allclose(got, np.array(want), **TIGHT)
    narrow = scaled_dot_product_attention(q, k, v, window=(1, 0), alignment=alignment)
    assert np.abs(narrow - wide).max() > 1e-3


# ---------------------------------------------------------------- soft caps


def test_softcap_matches_tanh():
    x = np.array([-1e6, -50.0, -1.0, -1e-8, 0.0, 3.0, 29.0, 1e300])
    np.testing.assert_allclose(softcap(x, 30.0), [oc.softcap(a, 30.0) for a in x], rtol=1e-15, atol=0)
    assert softcap(np.array([-np.inf, np.inf]), 30.0).tolist() == [-30.0, 30.0]  # a mask before the cap is lost
    assert softcap(np.float64(2.0), 50.0).shape == ()


@pytest.mark.parametrize("alignment", ["top_left", "bottom_right"])
def test_sdpa_softcap_after_scale_matches_oracle(alignment):
    rng = _rng("sdpa-cap", alignment)
    q, k, v = _qkv(rng, T=3, S=5)
    q = 4 * q  # logits of several units, so that a cap of 2 bends them
    got = scaled_dot_product_attention(q, k, v, causal=True, alignment=alignment, scale=0.7, logit_softcap=2.0)
    want = oc.attention(q.tolist(), k.tolist(), v.tolist(), causal=True, alignment=alignment, scale=0.7, cap=2.0)
    np.testing.assert_allclose(got, np.array(want), **TIGHT)
    # the other order (cap the raw dot products, then scale) is a different function
    dots = np.einsum("bhtd,bhsd->bhts", q, np.repeat(k, 2, axis=1))
    before = 0.7 * softcap(dots, 2.0) + np.where(causal_mask(3, 5, alignment), 0.0, -np.inf)
    p = np.exp(before - before.max(-1, keepdims=True))
    other = (p / p.sum(-1, keepdims=True)) @ np.repeat(v, 2, axis=1)
    assert np.abs(other - got).max() > 1e-2


def test_a_large_cap_changes_nothing():
    q, k, v = _qkv(_rng("cap-large"))
    plain = scaled_dot_product_attention(q, k, v, causal=True)
    capped = scaled_dot_product_attention(q, k, v, causal=True, logit_softcap=1e6)
    np.testing.assert_allclose(capped, plain, rtol=1e-10, atol=1e-10)
    assert np.abs(scaled_dot_product_attention(q, k, v, causal=True, logit_softcap=0.5) - plain).max() > 1e-3


# ---------------------------------------------------------------- KV-cache decode


def test_decode_step_by_step_equals_full_causal_attention():
    rng = _rng("decode")
    q, k, v = _qkv(rng, T=7, S=7)
    full = scaled_dot_product_attention(q, k, v, causal=True)
    for n in range(7):
        cache = (None, None) if n == 0 else (k[:, :, :n], v[:, :, :n])
        got = decode_step(q[:, :, n : n + 1], *cache, k[:, :, n : n + 1], v[:, :, n : n + 1])
        np.testing.assert_allclose(got, full[:, :, n : n + 1], **TIGHT)
    # several new tokens at once: bottom-right alignment against the cache
    got = decode_step(q[:, :, 4:], k[:, :, :4], v[:, :, :4], k[:, :, 4:], v[:, :, 4:])
    np.testing.assert_allclose(got, full[:, :, 4:], **TIGHT)
    want = oc.decode(
        q[:, :, 4:].tolist(), k[:, :, :4].tolist(), v[:, :, :4].tolist(), k[:, :, 4:].tolist(), v[:, :, 4:].tolist()
    )
    np.testing.assert_allclose(got, np.array(want), **TIGHT)
    # a decode step aligned top-left (the new tokens see only the first keys) is a different function
    top_left = scaled_dot_product_attention(q[:, :, 4:], k, v, causal=True, alignment="top_left")
    assert np.abs(top_left - got).max() > 1e-3


def test_decode_step_with_padded_cache():
    rng = _rng("decode-padded")
    q, k, v = _qkv(rng, B=3, T=2, S=6)
    lengths = np.array([4, 1, 0])
    garbage_k, garbage_v = rng.standard_normal((3, 2, 4, 6)) * 100, rng.standard_normal((3, 2, 4, 3)) * 100
    k_cache, v_cache = garbage_k.copy(), garbage_v.copy()
    for b, n in enumerate(lengths):
        k_cache[b, :, :n], v_cache[b, :, :n] = k[b, :, :n], v[b, :, :n]
    k_new, v_new = k[:, :, 4:], v[:, :, 4:]
    got = decode_step(q, k_cache, v_cache, k_new, v_new, cache_lengths=lengths, scale=0.4)
    want = oc.decode(
        q.tolist(), k_cache.tolist(), v_cache.tolist(), k_new.tolist(), v_new.tolist(), lengths.tolist(), scale=0.4
    )
    np.testing.assert_allclose(got, np.array(want), **TIGHT)
    for b, n in enumerate(lengths):  # each element equals its own unpadded sequence
        ks = np.concatenate([k[b : b + 1, :, :n], k_new[b : b + 1]], axis=2)
        vs = np.concatenate([v[b : b + 1, :, :n], v_new[b : b + 1]], axis=2)
        alone = scaled_dot_product_attention(q[b : b + 1], ks, vs, causal=True, alignment="bottom_right", scale=0.4)
        np.testing.assert_allclose(got[b : b + 1], alone, **TIGHT)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rotary_decode_at_an_offset_equals_full_rotary_attention(layout):
    """Prefill 4 tokens, then decode one at a time at positions 4, 5, ...: the rows of full attention."""
    q, k, v = _qkv(_rng("decode-rope", layout), T=7, S=7)
    rot = Rotary(layout, rotary_dim=4, theta=1000.0)
    full = scaled_dot_product_attention(q, k, v, causal=True, rotary=rot)
    settings = dict(layout=layout, rotary_dim=4, theta=1000.0)
    k_cache = rotary_embedding(k[:, :, :4], np.arange(4), **settings)  # the cache holds rotated keys
    v_cache = v[:, :, :4]
    for p in range(4, 7):
        q_p = rotary_embedding(q[:, :, p : p + 1], np.array([p]), **settings)
        k_p = rotary_embedding(k[:, :, p : p + 1], np.array([[p], [p]]), **settings)  # (B, N) positions
        got = decode_step(q_p, k_cache, v_cache, k_p, v[:, :, p : p + 1])
        np.testing.assert_allclose(got, full[:, :, p : p + 1], **TIGHT)
        k_cache = np.concatenate([k_cache, k_p], axis=2)
        v_cache = np.concatenate([v_cache, v[:, :, p : p + 1]], axis=2)
    # rotating the new token at position 0 (the offset forgotten) gives another answer
    q_0 = rotary_embedding(q[:, :, 6:7], np.array([0]), **settings)
    k_0 = rotary_embedding(k[:, :, 6:7], np.array([0]), **settings)
    wrong = decode_step(q_0, k_cache[:, :, :6], v_cache[:, :, :6], k_0, v[:, :, 6:7])
    assert np.abs(wrong - full[:, :, 6:7]).max() > 1e-3


def test_decode_step_with_window_and_cap_equals_full_rows():
    q, k, v = _qkv(_rng("decode-window"), T=8, S=8)
    full = scaled_dot_product_attention(q, k, v, causal=True, window=(2, 0), logit_softcap=1.5)
    got = decode_step(q[:, :, 5:], k[:, :, :5], v[:, :, :5], k[:, :, 5:], v[:, :, 5:], window_left=2, logit_softcap=1.5)
    np.testing.assert_allclose(got, full[:, :, 5:], **TIGHT)


# ---------------------------------------------------------------- ragged batches


def test_lengths_to_mask_matches_loops():
    ql, kl = np.array([3, 0, 1]), np.array([2, 4, 0])
    got = lengths_to_mask(ql, kl, 3, 4)
    want = [[[t < ql[b] and s < kl[b] for s in range(4)] for t in range(3)] for b in range(3)]
    assert got.tolist() == want


@pytest.mark.parametrize("policy", ["zeros", "nan"])
def test_ragged_batch_valid_rows_and_padded_rows(policy):
    rng = _rng("ragged", policy)
    q, k, v = _qkv(rng, B=3, T=4, S=5)
    ql, kl = np.array([4, 2, 1]), np.array([5, 3, 2])
    mask = lengths_to_mask(ql, kl, 4, 5)
    got = scaled_dot_product_attention(q, k, v, mask=mask[:, None], fully_masked=policy)
    want = oc.attention(q.tolist(), k.tolist(), v.tolist(), mask=mask.tolist(), fully_masked=policy)
    np.testing.assert_allclose(got, np.array(want), **TIGHT)
    for b in range(3):
        t, s = ql[b], kl[b]
        alone = scaled_dot_product_attention(q[b : b + 1, :, :t], k[b : b + 1, :, :s], v[b : b + 1, :, :s])
        np.testing.assert_allclose(got[b : b + 1, :, :t], alone, **TIGHT)
        padded = got[b, :, t:]
        assert (padded == 0).all() if policy == "zeros" else np.isnan(padded).all()


# ---------------------------------------------------------------- everything together, precisions, errors


def test_layer_with_every_convention_matches_oracle():
    rng = _rng("mha-all")
    B, T, E, H, G, D = 2, 5, 4, 4, 2, 6
    w = AttentionWeights(
        query_kernel=rng.standard_normal((E, H, D)),
        key_kernel=rng.standard_normal((E, G, D)),
        value_kernel=rng.standard_normal((E, G, 3)),
        output_kernel=rng.standard_normal((H, 3, E)),
    )
    x = rng.standard_normal((B, T, E))
    got = multi_head_attention(
        AttentionInputs(x, x, x, causal=True),
        w,
        rotary=Rotary("half", rotary_dim=4),
        alibi_slopes=alibi_slopes(H),
        window=(3, 0),
        logit_softcap=5.0,
    )
    q = np.einsum("bne,ehd->bhnd", x, w.query_kernel)
    k = np.einsum("bne,ehd->bhnd", x, w.key_kernel)
    v = np.einsum("bne,ehd->bhnd", x, w.value_kernel)
    qr, kr = oc.rope(q.tolist(), list(range(T)), "half", 4), oc.rope(k.tolist(), list(range(T)), "half", 4)
    ab = oc.alibi_bias(oc.alibi_slopes(H), T, T)
    heads = oc.attention(qr, kr, v.tolist(), causal=True, cap=5.0, bias=[ab] * B, window=(3, 0))
    want = np.einsum("bhtd,hde->bte", np.array(heads), w.output_kernel)
    np.testing.assert_allclose(got.output, want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_conventions_in_lower_precision(dtype):
    rng = _rng("low", dtype)
    q, k, v = (round_to(a, dtype) for a in _qkv(rng, T=4, S=4))
    u = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}[dtype]
    rot = rotary_embedding(q, np.arange(4), layout="interleaved", dtype=dtype)
    np.testing.assert_array_equal(rot, round_to(rot, dtype))  # results are values of the precision
    np.testing.assert_allclose(rot, rotary_embedding(q, np.arange(4), layout="interleaved"), rtol=0, atol=20 * u)
    kwargs = dict(causal=True, rotary=Rotary(), alibi_slopes=alibi_slopes(4), window=(2, 0), logit_softcap=3.0)
    low = scaled_dot_product_attention(q, k, v, dtype=dtype, **kwargs)
    high = scaled_dot_product_attention(q, k, v, **kwargs)
    np.testing.assert_allclose(low, high, rtol=0, atol=200 * u)
    np.testing.assert_array_equal(softcap(q, 2.0, dtype=dtype), round_to(softcap(q, 2.0, dtype=dtype), dtype))


@pytest.mark.parametrize(
    "call,argument",
    [
        (lambda: rotary_embedding(np.ones((1, 1, 2, 5)), np.arange(2)), "rotary_dim"),
        (lambda: rotary_embedding(np.ones((1, 1, 2, 4)), np.arange(2), rotary_dim=3), "rotary_dim"),
        (lambda: rotary_embedding(np.ones((1, 1, 2, 4)), np.arange(2.0)), "positions"),
        (lambda: rotary_embedding(np.ones((1, 1, 2, 4)), np.arange(3)), "positions"),
        (lambda: rotary_embedding(np.ones((1, 1, 2, 4)), np.arange(2), layout="neox"), "layout"),
        (lambda: rotary_embedding(np.ones((1, 1, 2, 4)), np.arange(2), theta=0.0), "theta"),
        (lambda: Rotary("half", rotary_dim=3), "rotary_dim"),
        (lambda: Rotary("half", rotary_dim="4"), "rotary_dim"),
        (lambda: scaled_dot_product_attention(*_qkv(_rng("e")), rotary=Rotary(rotary_dim=8)), "rotary_dim"),
        (lambda: scaled_dot_product_attention(*_qkv(_rng("e")), alibi_slopes=np.ones(2)), "alibi_slopes"),
        (lambda: alibi_slopes(0), "num_heads"),
        (lambda: alibi_bias(4, 2, 2, slopes=np.ones(3)), "slopes"),
        (lambda: window_mask(2, 2, left=-1, right=0), "left"),
        (lambda: window_mask(2, 2, left=None, right=1.5), "right"),
        (lambda: softcap(np.ones(2), 0.0), "cap"),
        (lambda: scaled_dot_product_attention(*_qkv(_rng("e")), logit_softcap=math.inf), "logit_softcap"),
        (lambda: scaled_dot_product_attention(*_qkv(_rng("e")), window=3), "window"),
        (lambda: lengths_to_mask(np.array([3]), np.array([1]), 2, 2), "query_lengths"),
        (lambda: lengths_to_mask(np.array([1, 1]), np.array([1]), 2, 2), "key_lengths"),
        (
            lambda: decode_step(
                *_qkv(_rng("e"), T=1, S=3)[:1],
                *_qkv(_rng("e"), T=1, S=3)[1:],
                *_qkv(_rng("e"), T=1, S=1)[1:],
                cache_lengths=np.array([4, 0]),
            ),
            "cache_lengths",
        ),
    ],
)
def test_invalid_arguments_name_themselves(call, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        call()
