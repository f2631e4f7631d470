"""The reference backward pass against central finite differences and a plain-Python oracle.

Finite differences of the forward (float64, step 1e-6) check the math end to end; the loop
oracle (tests/oracle_backward.py) checks the array code, GQA group sums and masking on tiny
cases to rounding level.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from oracle_backward import sdpa_vjp_loops

from attnconf.adapters.base import AttentionInputs, AttentionWeights
from attnconf.reference import (
    multi_head_attention,
    multi_head_attention_vjp,
    round_to,
    scaled_dot_product_attention,
    scaled_dot_product_attention_vjp,
)

STEP = 1e-6


def numeric_gradient(f: Callable[[], float], x: np.ndarray) -> np.ndarray:
    """Central differences of the scalar `f()` with respect to `x`, perturbed in place."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + STEP
        plus = f()
        x[i] = old - STEP
        minus = f()
        x[i] = old
        grad[i] = (plus - minus) / (2 * STEP)
    return grad


def assert_gradient(name: str, got: np.ndarray, expected: np.ndarray, atol: float = 1e-7) -> None:
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, expected {expected.shape}"
    err = np.abs(got - expected)
    i = np.unravel_index(int(np.argmax(err)), err.shape)
    assert err[i] <= atol * max(1.0, np.abs(expected).max()), (
        f"gradient wrt {name}: max abs error {err[i]:.3g} at {i}: expected {expected[i]!r}, got {got[i]!r}"
    )


# -- scaled dot-product attention ------------------------------------------------------------

SDPA_CASES = {
    "plain": dict(),
    "mask": dict(mask=True),
    "causal_top_left": dict(causal=True, alignment="top_left"),
    "causal_bottom_right": dict(causal=True, alignment="bottom_right"),
    "causal_mask_scale": dict(causal=True, mask=True, scale=0.3),
    "bias": dict(bias=True),
    "gqa": dict(H_kv=2, mask=True),
    "mqa_causal": dict(H_kv=1, causal=True, alignment="bottom_right"),
}


def sdpa_case(name: str, B=2, H=4, T=3, S=5, D_k=3, D_v=2):
    opts = dict(SDPA_CASES[name])
    rng = np.random.default_rng(sum(map(ord, name)))
    H_kv = opts.pop("H_kv", H)
    q = rng.standard_normal((B, H, T, D_k))
    k = rng.standard_normal((B, H_kv, S, D_k))
    v = rng.standard_normal((B, H_kv, S, D_v))
    cot = rng.standard_normal((B, H, T, D_v))
    kw = {"causal": opts.get("causal", False), "alignment": opts.get("alignment", "top_left"),
          "scale": opts.get("scale")}
    if opts.get("mask"):
        mask = rng.random((B, H, T, S)) < 0.6
        mask[..., 0] = True  # a visible key in every row, also under causal
        kw["mask"] = mask
    if opts.get("bias"):
        bias = rng.standard_normal((B, H, T, S))
        bias[rng.random(bias.shape) < 0.3] = -np.inf  # additive masking
        bias[..., 0] = 0.5
        kw["bias"] = bias
    return q, k, v, cot, kw


@pytest.mark.parametrize("case", list(SDPA_CASES))
def test_sdpa_matches_loop_oracle(case):
    q, k, v, cot, kw = sdpa_case(case)
    got = scaled_dot_product_attention_vjp(q, k, v, cot, **kw)
    want = sdpa_vjp_loops(q, k, v, cot, **kw)
    for n in "qkv":
        assert_gradient(n, got[n], want[n], atol=1e-13)


@pytest.mark.parametrize("case", list(SDPA_CASES))
def test_sdpa_matches_finite_differences(case):
    q, k, v, cot, kw = sdpa_case(case, B=1, H=2 if case != "gqa" else 4, T=3, S=4)
    got = scaled_dot_product_attention_vjp(q, k, v, cot, **kw)

    def loss() -> float:
        return float(np.sum(scaled_dot_product_attention(q, k, v, **kw) * cot))

    for n, x in zip("qkv", (q, k, v), strict=True):
        assert_gradient(n, got[n], numeric_gradient(loss, x))


def test_sdpa_2d_mask_broadcasts_like_the_forward():
    q, k, v, cot, _ = sdpa_case("plain")
    mask = np.tril(np.ones((3, 5), dtype=bool))
    got = scaled_dot_product_attention_vjp(q, k, v, cot, mask=mask)
    want = sdpa_vjp_loops(q, k, v, cot, mask=np.broadcast_to(mask, (2, 4, 3, 5)))
    for n in "qkv":
        assert_gradient(n, got[n], want[n], atol=1e-13)


# -- fully masked rows -----------------------------------------------------------------------


def fully_masked_case():
    q, k, v, cot, _ = sdpa_case("plain")
    mask = np.ones((2, 4, 3, 5), dtype=bool)
    mask[1, 2, 1] = False  # batch 1, head 2, query 1 sees nothing
    return q, k, v, cot, mask


def test_fully_masked_row_gives_zero_gradients_under_zeros_policy():
    q, k, v, _, mask = fully_masked_case()
    cot = np.zeros((2, 4, 3, 2))
    cot[1, 2, 1] = [1.5, -2.0]  # only the fully masked row carries a cotangent
    got = scaled_dot_product_attention_vjp(q, k, v, cot, mask=mask, fully_masked="zeros")
    for n in "qkv":
        assert np.all(got[n] == 0), f"gradient wrt {n} through a fully masked row is not zero"


def test_fully_masked_row_does_not_disturb_other_rows():
    q, k, v, cot, mask = fully_masked_case()
    got = scaled_dot_product_attention_vjp(q, k, v, cot, mask=mask)
    want = sdpa_vjp_loops(q, k, v, cot, mask=mask)
    for n in "qkv":
        assert_gradient(n, got[n], want[n], atol=1e-13)
    assert np.all(got["q"][1, 2, 1] == 0)


def test_fully_masked_row_under_nan_policy_gives_nan():
    q, k, v, cot, mask = fully_masked_case()
    got = scaled_dot_product_attention_vjp(q, k, v, cot, mask=mask, fully_masked="nan")
    assert np.isnan(got["q"][1, 2, 1]).all()
    assert np.isfinite(got["q"][0]).all()
    assert np.isnan(got["v"][1, 2]).all()  # the NaN weights reach every value of that head


def test_fully_masked_row_under_uniform_policy_matches_finite_differences():
    q, k, v, cot, mask = fully_masked_case()
    q, k, v, cot, mask = q[1:], k[1:], v[1:], cot[1:], mask[1:]
    got = scaled_dot_product_attention_vjp(q, k, v, cot, mask=mask, fully_masked="uniform")

    def loss() -> float:
        return float(np.sum(scaled_dot_product_attention(q, k, v, mask=mask, fully_masked="uniform") * cot))

    for n, x in zip("qkv", (q, k, v), strict=True):
        assert_gradient(n, got[n], numeric_gradient(loss, x))


# -- multi-head attention --------------------------------------------------------------------

MHA_CASES = {
    "self": dict(self_attention=True),
    "cross_kdim_vdim": dict(T=3, S=4, E_k=4, E_v=3),
    "no_bias": dict(bias=False),
    "mask": dict(mask=True, T=3, S=4),
    "causal_top_left": dict(causal=True, T=3, S=4),
    "causal_bottom_right": dict(causal=True, alignment="bottom_right", T=3, S=4),
    "self_causal_mask": dict(self_attention=True, causal=True, mask=True),
    "scale_value_dim_output_dim": dict(scale=0.4, D_v=2, E_out=3),
    "gqa_no_bias": dict(H=4, H_kv=2, bias=False),
    "mqa": dict(H=2, H_kv=1, mask=True, T=2, S=3),
}


def mha_case(name: str):
    o = MHA_CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    B, T, S, E_q = 2, o.get("T", 3), o.get("S", 3), 5
    E_k, E_v, H, D_k = o.get("E_k", E_q), o.get("E_v", E_q), o.get("H", 2), 3
    H_kv, D_v, E_out = o.get("H_kv", H), o.get("D_v", D_k), o.get("E_out", E_q)
    query = rng.standard_normal((B, T, E_q))
    if o.get("self_attention"):
        key = value = query
    else:
        key, value = rng.standard_normal((B, S, E_k)), rng.standard_normal((B, S, E_v))
    mask = None
    if o.get("mask"):
        mask = rng.random((B, T, S)) < 0.6
        mask[..., 0] = True
    inputs = AttentionInputs(query, key, value, mask=mask, causal=o.get("causal", False), scale=o.get("scale"))
    bias = o.get("bias", True)

    def b(*shape):
        return rng.standard_normal(shape) if bias else None

    weights = AttentionWeights(
        query_kernel=rng.standard_normal((E_q, H, D_k)) / 2, key_kernel=rng.standard_normal((E_k, H_kv, D_k)) / 2,
        value_kernel=rng.standard_normal((E_v, H_kv, D_v)), output_kernel=rng.standard_normal((H, D_v, E_out)),
        query_bias=b(H, D_k), key_bias=b(H_kv, D_k), value_bias=b(H_kv, D_v), output_bias=b(E_out),
    )
    cot = rng.standard_normal((B, T, E_out))
    return inputs, weights, cot, o.get("alignment", "top_left")


def expected_names(weights: AttentionWeights) -> list[str]:
    return ["query", "key", "value", *weights.arrays()]


@pytest.mark.parametrize("case", list(MHA_CASES))
def test_mha_matches_finite_differences(case):
    inputs, weights, cot, alignment = mha_case(case)
    got = multi_head_attention_vjp(inputs, weights, cot, alignment=alignment)
    assert sorted(got) == sorted(expected_names(weights))
    # Each argument gets its own copy, so a perturbation of the query leaves key and value be
    # (in self-attention: the partial derivatives that the contract reports).
    args = {"query": inputs.query.copy(), "key": inputs.key.copy(), "value": inputs.value.copy()}
    params = {n: a.copy() for n, a in weights.arrays().items()}

    def loss() -> float:
        x = dataclasses.replace(inputs, **args)
        out = multi_head_attention(x, AttentionWeights(**params), alignment=alignment).output
        return float(np.sum(out * cot))

    for name, array in {**args, **params}.items():
        assert got[name].shape == array.shape, f"{name}: shape {got[name].shape}, expected {array.shape}"
        assert_gradient(name, got[name], numeric_gradient(loss, array))


def test_self_attention_partials_sum_to_the_total_derivative():
    inputs, weights, cot, _ = mha_case("self_causal_mask")
    got = multi_head_attention_vjp(inputs, weights, cot)
    shared = inputs.query.copy()

    def loss() -> float:
        x = dataclasses.replace(inputs, query=shared, key=shared, value=shared)
        return float(np.sum(multi_head_attention(x, weights).output * cot))

    assert_gradient("query+key+value", got["query"] + got["key"] + got["value"], numeric_gradient(loss, shared))
    assert not np.allclose(got["query"], got["key"])  # reported separately, not summed


def test_mha_gqa_equals_mha_with_repeated_kv_heads_summed():
    inputs, weights, cot, _ = mha_case("gqa_no_bias")
    G = weights.num_heads // weights.num_kv_heads
    repeated = dataclasses.replace(weights, key_kernel=np.repeat(weights.key_kernel, G, axis=1),
                                   value_kernel=np.repeat(weights.value_kernel, G, axis=1))
    got = multi_head_attention_vjp(inputs, weights, cot)
    full = multi_head_attention_vjp(inputs, repeated, cot)
    for n in ("query", "key", "value", "query_kernel", "output_kernel"):
        np.testing.assert_allclose(got[n], full[n], rtol=1e-12, atol=1e-13)
    E_k, H_kv, D_k = weights.key_kernel.shape
    summed = full["key_kernel"].reshape(E_k, H_kv, G, D_k).sum(axis=2)
    np.testing.assert_allclose(got["key_kernel"], summed, rtol=1e-12, atol=1e-13)


def test_mha_fully_masked_row_only_reaches_the_output_bias():
    inputs, weights, _, _ = mha_case("mask")
    mask = inputs.mask.copy()
    mask[0, 1] = False
    inputs = dataclasses.replace(inputs, mask=mask)
    cot = np.zeros((2, 3, 5))
    cot[0, 1] = 1.0
    got = multi_head_attention_vjp(inputs, weights, cot, fully_masked="zeros")
    for name, g in got.items():
        if name == "output_bias":
            np.testing.assert_array_equal(g, np.ones(5))
        else:
            assert np.all(g == 0), f"gradient wrt {name} through a fully masked row is not zero"


# -- precision -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,bound", [("float32", 1e-5), ("float16", 2e-2), ("bfloat16", 1e-1)])
def test_low_precision_backward_is_close_and_in_its_dtype(dtype, bound):
    inputs, weights, cot, _ = mha_case("mask")
    x, w, c = inputs.astype(dtype), weights.astype(dtype), round_to(cot, dtype)
    exact = multi_head_attention_vjp(x, w, c, dtype="float64")  # the same rounded inputs, exactly
    got = multi_head_attention_vjp(x, w, c, dtype=dtype)
    storage = np.float32 if dtype == "bfloat16" else np.dtype(dtype)
    for name, g in got.items():
        assert g.dtype == storage, f"{name}: dtype {g.dtype}, expected {storage}"
        np.testing.assert_array_equal(g, round_to(g, dtype))  # representable in the precision
        assert exact[name].dtype == np.float64
        err = np.abs(g.astype(np.float64) - exact[name]).max()
        assert err <= bound * max(1.0, np.abs(exact[name]).max()), f"{name}: error {err:.3g} in {dtype}"
        assert err > 0, f"{name}: no rounding at all in {dtype}: not evaluated in that precision?"


# -- argument checks -------------------------------------------------------------------------


def test_cotangent_of_the_wrong_shape_is_rejected():
    q, k, v, cot, _ = sdpa_case("plain")
    with pytest.raises(ValueError, match=r"`cotangent`, expected shape of the output \(B, H, T, D_v\)"):
        scaled_dot_product_attention_vjp(q, k, v, cot[..., :1])
    inputs, weights, cot, _ = mha_case("self")
    with pytest.raises(ValueError, match=r"`cotangent`.*Received: cotangent=\(2, 3, 4\)"):
        multi_head_attention_vjp(inputs, weights, cot[..., :4])


@pytest.mark.parametrize("kwargs,argument", [
    (dict(dtype="float8"), "dtype"), (dict(fully_masked="ignore"), "fully_masked"),
    (dict(alignment="centre", causal=True), "alignment"), (dict(scale=float("nan")), "scale"),
])
def test_bad_arguments_are_rejected_with_their_name(kwargs, argument):
    q, k, v, cot, _ = sdpa_case("plain")
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        scaled_dot_product_attention_vjp(q, k, v, cot, **kwargs)


def test_input_width_mismatch_is_rejected():
    inputs, weights, cot, _ = mha_case("cross_kdim_vdim")
    bad = dataclasses.replace(inputs, value=inputs.value[..., :2])
    with pytest.raises(ValueError, match="argument `value`, expected last axis of size 3 as in value_kernel"):
        multi_head_attention_vjp(bad, weights, cot)


def test_extended_precision_backward_is_the_float64_one_refined():
    """The suite's "exact" gradients are the reference backward in NumPy's longdouble."""
    inputs, weights, cot, _ = mha_case("mask")
    ext = {n: np.asarray(a, np.longdouble) for n, a in weights.arrays().items()}
    x = dataclasses.replace(inputs, query=inputs.query.astype(np.longdouble), key=inputs.key.astype(np.longdouble),
                            value=inputs.value.astype(np.longdouble))
    exact = multi_head_attention_vjp(x, AttentionWeights(**ext), cot.astype(np.longdouble), dtype="longdouble")
    f64 = multi_head_attention_vjp(inputs, weights, cot)
    for name, g in exact.items():
        assert g.dtype == np.longdouble, name
        np.testing.assert_allclose(np.asarray(g, np.float64), f64[name], rtol=1e-12, atol=1e-13, err_msg=name)
