"""Every bad input tried at the public entries, and the fragment its message must contain.

Used by tests/test_bad_inputs.py (each must raise a clear ValueError-family error naming the
argument) and by scripts/bad_inputs_table.py (docs/bad-inputs.md, the table of messages).
"""

from __future__ import annotations

import numpy as np

from attnconf.adapters.base import AttentionInputs, AttentionWeights, Capabilities
from attnconf.reference import causal_mask, padding_mask, scaled_dot_product_attention, softmax

R = np.random.default_rng(0)
Q = R.standard_normal((1, 2, 3, 4))
K = R.standard_normal((1, 2, 5, 4))
V = R.standard_normal((1, 2, 5, 4))
X = R.standard_normal((2, 3, 8))
W = dict(query_kernel=np.ones((8, 2, 4)), key_kernel=np.ones((8, 2, 4)), value_kernel=np.ones((8, 2, 4)),
         output_kernel=np.ones((2, 4, 8)))


def sdpa(**kw):
    args = dict(q=Q, k=K, v=V)
    args.update(kw)
    return lambda: scaled_dot_product_attention(**args)


def inputs(**kw):
    args = dict(query=X, key=X, value=X)
    args.update(kw)
    return lambda: AttentionInputs(**args)


def weights(**kw):
    args = dict(W)
    args.update(kw)
    return lambda: AttentionWeights(**args)


# (entry, what is wrong, callable, fragment the message must contain)
CASES = [
    ("scaled_dot_product_attention", "q of rank 3", sdpa(q=Q[0]), "`q`, expected an array of rank 4"),
    ("scaled_dot_product_attention", "integer q", sdpa(q=Q.astype(int)), "`q`, expected a floating-point array"),
    ("scaled_dot_product_attention", "complex k", sdpa(k=K.astype(complex)), "`k`, expected a floating-point array"),
    ("scaled_dot_product_attention", "object v", sdpa(v=V.astype(object)), "`v`, expected a floating-point array"),
    ("scaled_dot_product_attention", "empty sequence (S = 0)", sdpa(k=K[:, :, :0], v=V[:, :, :0]), "`k`, expected a non-empty array"),
    ("scaled_dot_product_attention", "empty queries (T = 0)", sdpa(q=Q[:, :, :0]), "`q`, expected a non-empty array"),
    ("scaled_dot_product_attention", "batch mismatch", sdpa(k=np.concatenate([K, K])), "`k`, expected size 1 on axis 0"),
    ("scaled_dot_product_attention", "key width differs from query", sdpa(k=K[..., :3]), "`k`, expected size 4 on axis 3"),
    ("scaled_dot_product_attention", "H % H_kv != 0", sdpa(k=np.concatenate([K, K, K], 1)[:, :3], v=np.concatenate([V, V, V], 1)[:, :3]), "divides the 2 query heads"),
    ("scaled_dot_product_attention", "value keys differ from key keys", sdpa(v=V[:, :, :4]), "`v`, expected size 5 on axis 2"),
    ("scaled_dot_product_attention", "float mask", sdpa(mask=np.ones((3, 5))), "`mask`, expected a boolean array"),
    ("scaled_dot_product_attention", "(B, T, S) mask where (B, H, T, S) is needed", sdpa(mask=np.ones((1, 3, 5), bool)), "`mask`, expected an array of rank 2 or 4"),
    ("scaled_dot_product_attention", "mask that does not broadcast", sdpa(mask=np.ones((1, 1, 3, 4), bool)), "broadcastable to (B, H, T, S)=(1, 2, 3, 5)"),
    ("scaled_dot_product_attention", "unknown causal alignment", sdpa(causal=True, alignment="diagonal"), "`alignment`, expected one of 'top_left', 'bottom_right'"),
    ("scaled_dot_product_attention", "NaN scale", sdpa(scale=float("nan")), "`scale`, expected a finite float"),
    ("scaled_dot_product_attention", "unknown dtype", sdpa(dtype="float8"), "`dtype`, expected one of float64"),
    ("scaled_dot_product_attention", "unknown fully-masked policy", sdpa(fully_masked="ignore"), "`fully_masked`, expected one of"),
    ("softmax", "integer logits", lambda: softmax(np.arange(3)), "`logits`, expected a floating-point array"),
    ("causal_mask", "T = 0", lambda: causal_mask(0, 3), "`T`, expected a positive integer"),
    ("padding_mask", "length beyond S", lambda: padding_mask(np.array([4]), 3), "`lengths`, expected integers between 0 and S=3"),
    ("AttentionInputs", "query of rank 2", inputs(query=X[0]), "`query`, expected an array of rank 3"),
    ("AttentionInputs", "batch mismatch between query and key", inputs(key=X[:1]), "`key`, expected size 2 on axis 0"),
    ("AttentionInputs", "value length differs from key", inputs(value=X[:, :2]), "`value`, expected size 3 on axis 1"),
    ("AttentionInputs", "mask of the wrong shape", inputs(mask=np.ones((2, 3, 4), bool)), "`mask`, expected shape (B, T, S)=(2, 3, 3)"),
    ("AttentionInputs", "integer mask", inputs(mask=np.ones((2, 3, 3), int)), "`mask`, expected a boolean array"),
    ("AttentionInputs", "causal given as a string", inputs(causal="yes"), "`causal`, expected a bool"),
    ("AttentionInputs", "negative scale", inputs(scale=-1.0), "`scale`, expected a positive finite float"),
    ("AttentionInputs", "empty key sequence (S = 0)", inputs(key=X[:, :0], value=X[:, :0]), "`key`, expected a non-empty array"),
    ("AttentionWeights", "kernel of rank 2", weights(query_kernel=np.ones((8, 8))), "`query_kernel`, expected an array of rank 3"),
    ("AttentionWeights", "key width differs", weights(key_kernel=np.ones((8, 2, 3))), "`key_kernel`, expected size 4 on axis 2"),
    ("AttentionWeights", "kv heads that do not divide heads", weights(query_kernel=np.ones((8, 3, 4)), output_kernel=np.ones((3, 4, 8))), "a number of kv heads H_kv that divides H=3"),
    ("AttentionWeights", "bias of the wrong shape", weights(query_bias=np.ones((4, 2))), "`query_bias`, expected shape (H, D_k)=(2, 4)"),
    ("AttentionWeights", "integer kernel", weights(value_kernel=np.ones((8, 2, 4), int)), "`value_kernel`, expected a floating-point array"),
    ("Capabilities", "unknown dtype", lambda: Capabilities(dtypes=frozenset({"float8"})), "`dtypes`, expected a subset of"),
    ("Capabilities", "causal without an alignment", lambda: Capabilities(causal=True, causal_alignment=None), "`causal_alignment`"),
]


def weights_with_nan():
    from attnconf.reference import multi_head_attention

    w = dict(W)
    w["query_kernel"] = w["query_kernel"].copy()
    w["query_kernel"][0, 0, 0] = np.nan
    return multi_head_attention(AttentionInputs(X, X, X), AttentionWeights(**w), check_weights=True)


CASES.append(("multi_head_attention", "NaN in a weight, check_weights=True", weights_with_nan, "`query_kernel`, expected finite values"))
