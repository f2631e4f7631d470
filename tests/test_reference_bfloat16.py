"""The reference takes ml_dtypes bfloat16 arrays as their exact values (e.g. ONNX's bfloat16 test data)."""

from __future__ import annotations

import numpy as np
import pytest

from attnconf.adapters.base import AttentionInputs, AttentionWeights
from attnconf.reference import multi_head_attention, round_to, scaled_dot_product_attention, softmax

ml_dtypes = pytest.importorskip("ml_dtypes")
bf16 = ml_dtypes.bfloat16


def _draw(rng, shape):
    return round_to(rng.standard_normal(shape), "bfloat16")  # float32 holding bfloat16 values


def test_hand_values():
    # One query, two keys, D = 1: logits (1.5 * 1, 1.5 * -1) scaled by 1; weights softmax([1.5, -1.5]).
    q = np.array([1.5], dtype=bf16).reshape(1, 1, 1, 1)
    k = np.array([1.0, -1.0], dtype=bf16).reshape(1, 1, 2, 1)
    v = np.array([2.0, -4.0], dtype=bf16).reshape(1, 1, 2, 1)
    out, w = scaled_dot_product_attention(q, k, v, scale=1.0, return_weights=True, dtype="float64")
    p = 1 / (1 + np.exp(-3.0))
    np.testing.assert_allclose(w[0, 0, 0], [p, 1 - p], rtol=1e-14)
    np.testing.assert_allclose(out[0, 0, 0, 0], 2 * p - 4 * (1 - p), rtol=1e-14)


@pytest.mark.parametrize("dtype", [None, "bfloat16", "float64"])
def test_kernel_bfloat16_arrays_equal_their_float32_form(dtype):
    rng = np.random.default_rng(0)
    q, k, v = _draw(rng, (2, 2, 3, 4)), _draw(rng, (2, 2, 5, 4)), _draw(rng, (2, 2, 5, 4))
    mask = rng.random((2, 1, 3, 5)) < 0.7
    mask[..., 0] = True
    want = scaled_dot_product_attention(q, k, v, mask=mask, dtype=dtype or "bfloat16")
    got = scaled_dot_product_attention(q.astype(bf16), k.astype(bf16), v.astype(bf16), mask=mask, dtype=dtype)
    np.testing.assert_array_equal(got, want)  # dtype=None means the precision of q: bfloat16


def test_layer_and_softmax_take_bfloat16():
    rng = np.random.default_rng(1)
    x = _draw(rng, (1, 3, 8))
    kernels = [_draw(rng, (8, 2, 4)) for _ in range(3)]
    wo = _draw(rng, (2, 4, 8))
    weights = AttentionWeights(*kernels, wo)
    want = multi_head_attention(AttentionInputs(x, x, x), weights, dtype="bfloat16")
    xb = x.astype(bf16)
    got = multi_head_attention(
        AttentionInputs(xb, xb, xb), AttentionWeights(*(a.astype(bf16) for a in kernels), wo.astype(bf16))
    )
    np.testing.assert_array_equal(got.output, want.output)
    np.testing.assert_array_equal(got.weights, want.weights)
    logits = _draw(rng, (2, 5))
    np.testing.assert_array_equal(softmax(logits.astype(bf16).astype(np.float32)), softmax(logits))
