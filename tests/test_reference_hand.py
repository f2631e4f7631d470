"""Hand-computed cases, pinned to exact values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attnconf.reference import (
    additive_to_bool,
    bool_to_additive,
    causal_mask,
    padding_mask,
    round_to,
    scaled_dot_product_attention,
    sinusoidal_positions,
    softmax,
)


def test_seed_example_exact():
    # query [1,0,1,0]; keys [1,0,1,0] and [0,1,0,1]; values all 10 and all 20; d_k = 4.
    q = np.array([[[[1.0, 0, 1, 0]]]])
    k = np.array([[[[1.0, 0, 1, 0], [0, 1, 0, 1]]]])
    v = np.array([[[[10.0] * 4, [20.0] * 4]]])
    out, w = scaled_dot_product_attention(q, k, v, return_weights=True)
    # logits 2/sqrt(4) = 1 and 0, so the weights are e/(1+e) and 1/(1+e)
    w1 = math.e / (1 + math.e)
    assert w[0, 0, 0].tolist() == pytest.approx([w1, 1 - w1], abs=1e-15)
    assert round(w1, 4) == 0.7311 and round(1 - w1, 4) == 0.2689
    expected = 10 * w1 + 20 * (1 - w1)
    np.testing.assert_allclose(out[0, 0, 0], [expected] * 4, rtol=0, atol=1e-13)
    assert expected == pytest.approx(12.689414213699951, abs=1e-12)
    # The seed's comment said "close to [10, 10, 10, 10]"; the exact answer is 12.689, not 10.
    assert abs(out[0, 0, 0, 0] - 10) > 2.5


def test_causal_masks_both_alignments():
    assert causal_mask(2, 4, "top_left").tolist() == [[True, False, False, False], [True, True, False, False]]
    assert causal_mask(2, 4, "bottom_right").tolist() == [[True, True, True, False], [True, True, True, True]]
    assert (causal_mask(3, 3, "top_left") == causal_mask(3, 3, "bottom_right")).all()


def test_padding_mask_and_conversions():
    m = padding_mask(np.array([1, 3]), 3)
    assert m.tolist() == [[True, False, False], [True, True, True]]
    add = bool_to_additive(m)
    assert add[0].tolist() == [0.0, -np.inf, -np.inf]
    assert (additive_to_bool(add) == m).all()


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_softmax_stable_for_huge_logits(dtype):
    x = np.array([[1e4, 1e4 - 1, -1e4]], dtype=dtype) if dtype == "float16" else np.array([[1e30, 1e30, -1e30]], dtype=dtype)
    w = softmax(x)
    assert np.isfinite(w).all() and w.dtype == np.dtype(dtype)
    np.testing.assert_allclose(w.sum(-1), 1, rtol=1e-3)


def test_softmax_masks_by_selection_not_fill():
    # A fill value of -1e9 would still leave 1e9-sized logits competing; selection ignores them.
    x = np.array([[1e10, 0.0, 1.0]])
    w = softmax(x, where=np.array([[False, True, True]]))
    np.testing.assert_allclose(w, [[0.0, 1 / (1 + math.e), math.e / (1 + math.e)]], rtol=1e-15)


@pytest.mark.parametrize("policy,row", [("zeros", [0.0, 0.0]), ("uniform", [0.5, 0.5])])
def test_fully_masked_policies(policy, row):
    w = softmax(np.array([[1.0, 2.0]]), where=np.array([[False, False]]), fully_masked=policy)
    assert w.tolist() == [row]
    assert np.isnan(softmax(np.array([[1.0, 2.0]]), where=np.zeros((1, 2), bool), fully_masked="nan")).all()


def test_default_fully_masked_policy_is_zeros():
    q = np.ones((1, 1, 2, 2))
    out = scaled_dot_product_attention(q, q, q + 5, mask=np.array([[True, True], [False, False]]))
    assert out[0, 0, 1].tolist() == [0.0, 0.0] and np.isfinite(out).all()


def test_bfloat16_rounding():
    x = np.array([1.0, 1 + 2**-8, 1 + 2**-7, 3.14159265], dtype=np.float32)
    r = round_to(x, "bfloat16")
    assert r.dtype == np.float32
    assert r.tolist()[:3] == [1.0, 1.0, 1 + 2**-7]  # ties to even
    assert r[3] == np.float32(3.140625)


def test_sinusoidal_positions():
    pe = sinusoidal_positions(4, 6)
    assert pe.shape == (4, 6)
    assert pe[0].tolist() == [0.0, 1.0] * 3
    assert pe[1, 0] == pytest.approx(math.sin(1.0)) and pe[1, 1] == pytest.approx(math.cos(1.0))
    assert pe[2, 2] == pytest.approx(math.sin(2 / 10000 ** (2 / 6)))


def test_low_precision_reference_is_close_to_float64():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 5, 8)) for _ in range(3))
    for dtype, bound in [("float32", 1e-6), ("float16", 5e-3), ("bfloat16", 4e-2)]:
        low = scaled_dot_product_attention(*(round_to(a, dtype) for a in (q, k, v)), dtype=dtype)
        ref = scaled_dot_product_attention(*(round_to(a, dtype).astype(np.float64) for a in (q, k, v)))
        err = np.abs(low.astype(np.float64) - ref).max()
        assert 0 < err < bound, (dtype, err)
