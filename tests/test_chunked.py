"""The chunked reference equals the plain one: masks, both causal alignments, GQA, scale, bias,
the fully-masked policies, T != S, block sizes that do not divide the lengths, one thread or many.

float64 and float32 agree to round-off of their precision; float16 and bfloat16 (emulated
mixed precision) agree up to one unit in the last place of the result.
"""

from __future__ import annotations

import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnconf.adapters.base import AttentionInputs, AttentionWeights
from attnconf.reference import (
    causal_mask,
    chunked_attention,
    chunked_multi_head_attention,
    multi_head_attention,
    round_to,
    scaled_dot_product_attention,
)
from attnconf.reference.precision import UNIT_ROUNDOFF

DTYPES = ("float64", "float32", "float16", "bfloat16")


def _qkv(rng, B=2, H=4, H_kv=2, T=37, S=53, D=8, D_v=6, dtype="float64"):
    arrays = (rng.standard_normal((B, H, T, D)), rng.standard_normal((B, H_kv, S, D)),
              rng.standard_normal((B, H_kv, S, D_v)))
    return tuple(round_to(a, dtype) for a in arrays)


def _bound(expected: np.ndarray, dtype: str, keys: int) -> float:
    """Round-off of the precision, growing with the number of keys summed; 1 ulp for 16-bit types."""
    magnitude = max(1.0, float(np.nanmax(np.abs(expected), initial=0.0)))
    if dtype in ("float16", "bfloat16"):
        return 2 * UNIT_ROUNDOFF[dtype] * magnitude  # at most one ulp of the rounded result
    return 16 * UNIT_ROUNDOFF[dtype] * np.sqrt(keys) * magnitude


def assert_same(got: np.ndarray, expected: np.ndarray, dtype: str, keys: int) -> None:
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg="NaN rows differ")
    err = float(np.nanmax(np.abs(got.astype(np.float64) - expected.astype(np.float64)), initial=0.0))
    assert err <= _bound(expected, dtype, keys), f"max abs error {err:.3g} in {dtype}"


CASES = {
    "plain": {},
    "scale": {"scale": 0.37},
    "mask_TS": {"mask": (37, 53)},
    "mask_B1TS": {"mask": (2, 1, 37, 53)},
    "mask_1H1S": {"mask": (1, 4, 1, 53)},
    "mask_full": {"mask": (2, 4, 37, 53)},
    "bias": {"bias": (37, 53)},
    "bias_and_mask": {"bias": (2, 1, 37, 53), "mask": (1, 4, 37, 53), "causal": True},
    "causal_top_left": {"causal": True},
    "causal_bottom_right": {"causal": True, "alignment": "bottom_right"},
    "causal_mask_bottom_right": {"causal": True, "alignment": "bottom_right", "mask": (2, 1, 37, 53)},
}


def _kwargs(rng: np.random.Generator, spec: dict) -> dict:
    kw = dict(spec)
    if "mask" in kw:
        kw["mask"] = rng.random(kw["mask"]) < 0.7
    if "bias" in kw:
        bias = rng.standard_normal(kw["bias"])
        bias[rng.random(bias.shape) < 0.2] = -np.inf
        kw["bias"] = bias
    return kw


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("blocks", [(8, 16), (7, 5), (None, None)], ids=["8x16", "7x5", "default"])
def test_small_cases_equal_reference(case, dtype, blocks):
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    q, k, v = _qkv(rng, dtype=dtype)
    kw = _kwargs(rng, CASES[case])
    expected = scaled_dot_product_attention(q, k, v, dtype=dtype, **kw)
    got = chunked_attention(q, k, v, dtype=dtype, block_q=blocks[0], block_k=blocks[1], **kw)
    assert_same(got, expected, dtype, keys=53)


@pytest.mark.parametrize("policy", ["zeros", "nan", "uniform"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("how", ["mask", "bias", "causal_T_gt_S"])
def test_fully_masked_rows_follow_the_policy(policy, dtype, how):
    rng = np.random.default_rng(7)
    T, S = (53, 37) if how == "causal_T_gt_S" else (37, 53)
    q, k, v = _qkv(rng, T=T, S=S, dtype=dtype)
    kw: dict = {"fully_masked": policy}
    if how == "mask":
        mask = rng.random((2, 4, T, S)) < 0.7
        mask[:, :, 3] = False
        mask[1, 2, 20:30] = False
        kw["mask"] = mask
    elif how == "bias":
        bias = rng.standard_normal((1, 1, T, S))
        bias[..., 5, :] = -np.inf
        kw["bias"] = bias
    else:  # bottom-right with T > S: the first T - S queries see no key
        kw.update(causal=True, alignment="bottom_right")
    expected = scaled_dot_product_attention(q, k, v, dtype=dtype, **kw)
    got = chunked_attention(q, k, v, dtype=dtype, block_q=8, block_k=16, **kw)
    assert_same(got, expected, dtype, keys=S)
    if policy == "nan":
        assert np.isnan(got).any()


@pytest.mark.parametrize(
    "dtype, heads, causal",
    [("float64", (2, 2), False), ("float32", (4, 2), "top_left"), ("float64", (4, 1), "bottom_right"),
     ("float32", (2, 1), "bottom_right")],
)
def test_medium_cases_threaded(dtype, heads, causal):
    """Big enough for the thread pool and several default-size blocks; T != S."""
    rng = np.random.default_rng(3)
    q, k, v = _qkv(rng, B=1, H=heads[0], H_kv=heads[1], T=300, S=1500, D=16, D_v=12, dtype=dtype)
    mask = rng.random((1, 1, 1, 1500)) < 0.9  # a padding-like mask, broadcast over heads and queries
    kw = {"mask": mask, "causal": bool(causal), "alignment": causal or "top_left"}
    expected = scaled_dot_product_attention(q, k, v, dtype=dtype, **kw)
    got = chunked_attention(q, k, v, dtype=dtype, block_q=64, block_k=256, threads=2, **kw)
    assert_same(got, expected, dtype, keys=1500)
    serial = chunked_attention(q, k, v, dtype=dtype, threads=1, **kw)
    assert_same(serial, expected, dtype, keys=1500)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(T=st.integers(1, 40), S=st.integers(1, 40), bq=st.integers(1, 16), bk=st.integers(1, 16),
       causal=st.sampled_from([None, "top_left", "bottom_right"]), masked=st.booleans(),
       seed=st.integers(0, 2**16))
def test_any_shape_and_block_size(T, S, bq, bk, causal, masked, seed):
    rng = np.random.default_rng(seed)
    q, k, v = _qkv(rng, B=1, H=2, H_kv=1, T=T, S=S, D=4, D_v=3)
    kw = {"causal": causal is not None, "alignment": causal or "top_left", "fully_masked": "nan",
          "mask": rng.random((1, 2, T, S)) < 0.6 if masked else None}
    expected = scaled_dot_product_attention(q, k, v, **kw)
    got = chunked_attention(q, k, v, block_q=bq, block_k=bk, threads=1, **kw)
    assert_same(got, expected, "float64", keys=S)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("growth", ["rising", "falling", "spike"])
def test_logits_that_grow_along_the_keys(dtype, growth):
    """Later key blocks far above the first: the lazily raised shift must rescale exactly."""
    rng = np.random.default_rng(11)
    q, k, v = _qkv(rng, B=1, H=2, H_kv=1, T=40, S=300, D=8, D_v=5)
    ramp = {"rising": np.linspace(0.1, 30, 300), "falling": np.linspace(30, 0.1, 300),
            "spike": np.where(np.arange(300) == 250, 60.0, 1.0)}[growth]
    k = round_to(k * ramp[None, None, :, None], dtype)
    q = round_to(q, dtype)
    v = round_to(v, dtype)
    for causal in (False, True):
        expected = scaled_dot_product_attention(q, k, v, causal=causal, dtype=dtype)
        got = chunked_attention(q, k, v, causal=causal, dtype=dtype, block_q=16, block_k=32)
        # the logits reach hundreds: round-off in them is amplified by their size
        assert_same(got, expected, dtype, keys=300 * 100)


def test_nan_inputs_give_nan_where_the_reference_does():
    rng = np.random.default_rng(2)
    q, k, v = _qkv(rng, B=1, H=2, H_kv=2, T=20, S=30)
    q[0, 0, 3, 1] = np.nan
    k[0, 1, 17, 0] = np.nan
    expected = scaled_dot_product_attention(q, k, v)
    got = chunked_attention(q, k, v, block_q=8, block_k=8)
    assert_same(got, expected, "float64", keys=30)
    assert np.isnan(got[0, 0, 3]).all() and np.isnan(got[0, 1]).all() and not np.isnan(got[0, 0, 4]).any()


def test_float64_is_within_an_ulp_of_extended_precision_on_long_rows():
    """The long chapter's exact result: chunked float64 against the plain reference in longdouble
    on sampled rows of an N = 4096 causal case (block boundaries included)."""
    rng = np.random.default_rng(4)
    N = 4096
    q, k, v = _qkv(rng, B=1, H=1, H_kv=1, T=N, S=N, D=32, D_v=32)
    got = chunked_attention(q, k, v, causal=True, block_q=512, block_k=1024)
    rows = np.array([0, 1, 511, 512, 1023, 1024, 2047, 3000, 4095])
    mask = causal_mask(N, N)[rows][None, None]
    exact = scaled_dot_product_attention(*(a.astype(np.longdouble) for a in (q[:, :, rows], k, v)), mask=mask,
                                         dtype="longdouble")
    err = float(np.max(np.abs(got[:, :, rows] - exact)))
    assert err <= 2 * UNIT_ROUNDOFF["float64"] * float(np.max(np.abs(exact))), f"{err:.3g}"


def test_float32_inputs_keep_float32():
    rng = np.random.default_rng(0)
    q, k, v = _qkv(rng, dtype="float32")
    assert chunked_attention(q, k, v).dtype == np.float32
    assert chunked_attention(q, k, v, dtype="float64").dtype == np.float64


def test_multi_head_attention_matches_the_layer_reference():
    rng = np.random.default_rng(5)
    B, T, S, E, H, D = 2, 30, 45, 12, 3, 4
    inputs = AttentionInputs(rng.standard_normal((B, T, E)), rng.standard_normal((B, S, E)),
                             rng.standard_normal((B, S, E)), mask=rng.random((B, T, S)) < 0.8, causal=True)
    weights = AttentionWeights(
        rng.standard_normal((E, H, D)), rng.standard_normal((E, H, D)), rng.standard_normal((E, H, D)),
        rng.standard_normal((H, D, E)), output_bias=rng.standard_normal(E))
    for alignment in ("top_left", "bottom_right"):
        expected = multi_head_attention(inputs, weights, alignment=alignment)
        got = chunked_multi_head_attention(inputs, weights, alignment=alignment)
        assert got.weights is None
        assert_same(got.output, expected.output, "float64", keys=S)


def test_memory_grows_with_n_not_n_squared():
    """At T = S = 4096 the score matrix alone would take 128 MiB; the chunked kernel never holds it."""
    rng = np.random.default_rng(1)
    N = 4096
    q, k, v = _qkv(rng, B=1, H=1, H_kv=1, T=N, S=N, D=16, D_v=16)
    tracemalloc.start()
    try:
        chunked_attention(q, k, v, causal=True, block_q=512, block_k=1024, threads=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    scores = N * N * 8
    assert peak < scores / 4, f"peak traced memory {peak / 2**20:.1f} MiB vs scores {scores / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dtype": "int8"}, "argument `dtype`"),
        ({"block_q": 0}, "argument `block_q`"),
        ({"block_k": 1.5}, "argument `block_k`"),
        ({"threads": True}, "argument `threads`"),
        ({"alignment": "middle"}, "argument `alignment`"),
        ({"fully_masked": "error"}, "argument `fully_masked`"),
        ({"mask": np.ones((2, 4, 37), dtype=bool)}, "argument `mask`"),
        ({"mask": np.ones((37, 53))}, "argument `mask`"),
        ({"bias": np.ones((3, 4, 37, 53))}, "argument `bias`"),
        ({"scale": float("nan")}, "argument `scale`"),
    ],
)
def test_invalid_arguments_say_what_was_expected(kwargs, message):
    rng = np.random.default_rng(0)
    q, k, v = _qkv(rng)
    with pytest.raises(ValueError, match=message):
        chunked_attention(q, k, v, **kwargs)


def test_shape_errors():
    rng = np.random.default_rng(0)
    q, k, v = _qkv(rng)
    with pytest.raises(ValueError, match="argument `k`"):
        chunked_attention(q, k[:, :, :, :5], v)
    with pytest.raises(ValueError, match="argument `k`"):
        chunked_attention(q[:, :3], k, v)  # 3 query heads, 2 kv heads
    with pytest.raises(ValueError, match="argument `v`"):
        chunked_attention(q, k, v[:, :, :10])
