"""The reference against the independent plain-Python oracle (tests/oracle.py)."""

from __future__ import annotations

import numpy as np
import pytest
from oracle import attention, multi_head

from attnconf.adapters.base import AttentionInputs, AttentionWeights
from attnconf.reference import multi_head_attention, scaled_dot_product_attention

CASES = {
    "plain": dict(B=2, H=2, G=2, T=3, S=4, D=3, E=2),
    "gqa": dict(B=1, H=4, G=2, T=3, S=3, D=2, E=3),
    "mqa": dict(B=1, H=3, G=1, T=2, S=5, D=2, E=2),
}


def _qkv(rng, B, H, G, T, S, D, E):
    return (rng.standard_normal((B, H, T, D)), rng.standard_normal((B, G, S, D)),
            rng.standard_normal((B, G, S, E)))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("masking", ["none", "mask", "causal_top_left", "causal_bottom_right", "mask_causal", "bias"])
def test_sdpa_matches_oracle(case, masking):
    rng = np.random.default_rng(hash((case, masking)) % 2**32)
    c = CASES[case]
    q, k, v = _qkv(rng, **c)
    B, H, T, S = c["B"], c["H"], c["T"], c["S"]
    mask = bias = None
    causal, alignment = False, "top_left"
    if "mask" in masking:
        mask = rng.random((B, H, T, S)) < 0.7
        mask[..., 0] = True  # keep a visible key in every row
    if "causal" in masking:
        causal = True
        alignment = "bottom_right" if "bottom_right" in masking else "top_left"
    if masking == "bias":
        bias = rng.standard_normal((B, H, T, S))
    scale = 0.37 if case == "gqa" else None
    got, got_w = scaled_dot_product_attention(q, k, v, mask=mask, bias=bias, causal=causal, alignment=alignment,
                                              scale=scale, return_weights=True)
    want, want_w = attention(q.tolist(), k.tolist(), v.tolist(), None if mask is None else mask.tolist(),
                             causal, alignment, scale, None if bias is None else bias.tolist())
    np.testing.assert_allclose(got, np.array(want), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_w, np.array(want_w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", ["square", "cross_gqa"])
def test_multi_head_matches_oracle(bias, shape):
    rng = np.random.default_rng(7 if bias else 8)
    if shape == "square":
        B, T, S, Eq, Ek, Ev, H, G, Dk, Dv, Eo = 2, 3, 3, 4, 4, 4, 2, 2, 2, 2, 4
    else:
        B, T, S, Eq, Ek, Ev, H, G, Dk, Dv, Eo = 1, 2, 4, 3, 5, 2, 4, 2, 3, 2, 5
    w = AttentionWeights(
        query_kernel=rng.standard_normal((Eq, H, Dk)), key_kernel=rng.standard_normal((Ek, G, Dk)),
        value_kernel=rng.standard_normal((Ev, G, Dv)), output_kernel=rng.standard_normal((H, Dv, Eo)),
        query_bias=rng.standard_normal((H, Dk)) if bias else None,
        key_bias=rng.standard_normal((G, Dk)) if bias else None,
        value_bias=rng.standard_normal((G, Dv)) if bias else None,
        output_bias=rng.standard_normal((Eo,)) if bias else None,
    )
    mask = rng.random((B, T, S)) < 0.6
    mask[..., -1] = True
    x = AttentionInputs(rng.standard_normal((B, T, Eq)), rng.standard_normal((B, S, Ek)),
                        rng.standard_normal((B, S, Ev)), mask=mask, causal=True, scale=None)
    got = multi_head_attention(x, w, alignment="bottom_right")
    lists = {n: (None if a is None else a.tolist()) for n, a in
             [("bq", w.query_bias), ("bk", w.key_bias), ("bv", w.value_bias), ("bo", w.output_bias)]}
    want, want_w = multi_head(x.query.tolist(), x.key.tolist(), x.value.tolist(), w.query_kernel.tolist(),
                              w.key_kernel.tolist(), w.value_kernel.tolist(), w.output_kernel.tolist(),
                              mask=mask.tolist(), causal=True, alignment="bottom_right", **lists)
    np.testing.assert_allclose(got.output, np.array(want), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(got.weights, np.array(want_w), rtol=1e-12, atol=1e-12)
