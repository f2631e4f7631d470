"""A decode step against a key/value cache.

`T_new` new tokens attend to the `L` cached keys and values of their sequence and to the new keys
and values up to and including their own: new token `t` is at position ``L + t`` and sees the keys
at positions ``0 .. L + t``. With a full cache (``L = S_past``) this is causal attention over the
concatenated keys with bottom-right alignment, and its rows are the last `T_new` rows of causal
attention over the whole sequence.

Positions are the caller's business: rotate the new queries and keys (`rotary_embedding`) at
positions ``L + t`` before the step; the cache holds rotated keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.reference._checks import as_float_array, expect_dim, invalid, precision_of
from attnconf.reference.attention import scaled_dot_product_attention

Array = np.ndarray[Any, Any]


def _cache_lengths(cache_lengths: object, B: int, S_past: int) -> Array:
    if cache_lengths is None:
        return np.full((B,), S_past, dtype=np.int64)
    lens = np.asarray(cache_lengths)
    if lens.shape != (B,) or not np.issubdtype(lens.dtype, np.integer) or lens.dtype == np.bool_:
        raise invalid(
            "cache_lengths",
            f"integers of shape ({B},) (one per batch element)",
            f"{lens.dtype} array of shape {lens.shape}",
        )
    if (lens < 0).any() or (lens > S_past).any():
        raise invalid("cache_lengths", f"integers between 0 and S_past={S_past}", lens.tolist())
    return lens.astype(np.int64)


def decode_step_mask(
    cache_lengths: Array | None, B: int, S_past: int, T_new: int, *, window_left: int | None = None
) -> Array:
    """Visibility `(B, T_new, S_past + T_new)` of a decode step over ``concat(cache, new)`` keys.

    New token `t` of element `b` (position ``L_b + t``, ``L_b = cache_lengths[b]``) sees cached
    key `j` when ``j < L_b`` and new key `u` when ``u <= t``; with `window_left`, only keys at
    positions ``>= L_b + t - window_left`` (the inclusive left bound of `window_mask`).
    """
    if isinstance(T_new, bool) or not isinstance(T_new, (int, np.integer)) or T_new < 1:
        raise invalid("T_new", "a positive integer", repr(T_new))
    lens = _cache_lengths(cache_lengths, B, S_past)
    t = np.arange(T_new)[None, :, None]
    pos_q = lens[:, None, None] + t  # (B, T_new, 1)
    j = np.arange(S_past)[None, None, :]
    u = np.arange(T_new)[None, None, :]
    cached = np.broadcast_to(j < lens[:, None, None], (B, T_new, S_past))
    new = np.broadcast_to(u <= t, (B, T_new, T_new))
    visible = np.concatenate([cached, new], axis=2)
    if window_left is not None:
        if isinstance(window_left, bool) or not isinstance(window_left, (int, np.integer)) or window_left < 0:
            raise invalid("window_left", "a non-negative integer or None", repr(window_left))
        pos_k = np.concatenate([np.broadcast_to(j, (B, 1, S_past)), lens[:, None, None] + u], axis=2)
        visible = visible & (pos_k >= pos_q - int(window_left))
    return np.asarray(visible)


def decode_step(
    q_new: Array,
    k_cache: Array | None,
    v_cache: Array | None,
    k_new: Array,
    v_new: Array,
    *,
    scale: float | None = None,
    cache_lengths: Array | None = None,
    window_left: int | None = None,
    logit_softcap: float | None = None,
    dtype: str | None = None,
) -> Array:
    """Attention of `T_new` new queries against the cached plus the new keys and values.

    Args:
        q_new: new queries `(B, H, T_new, D_k)`.
        k_cache: cached keys `(B, H_kv, S_past, D_k)`, or None for an empty cache.
        v_cache: cached values `(B, H_kv, S_past, D_v)`, or None (with `k_cache`).
        k_new: new keys `(B, H_kv, T_new, D_k)`.
        v_new: new values `(B, H_kv, T_new, D_v)`.
        scale: logit scale; `1/sqrt(D_k)` when None.
        cache_lengths: `(B,)` integers in ``[0, S_past]``: element `b`'s cache holds
            ``cache_lengths[b]`` valid entries followed by padding, which is never attended.
            None means every cache is full.
        window_left: a sliding window's left bound (keys at most `window_left` positions before
            the query, inclusive); None is unbounded.
        logit_softcap: soft cap of the scaled logits (`scaled_dot_product_attention`).
        dtype: precision to evaluate in; None keeps the dtype of `q_new`.

    Returns:
        `(B, H, T_new, D_v)`: the rows of causal attention over the whole sequence that belong to
        the new tokens (no row is fully masked: each new token sees itself).
    """
    precision = dtype if dtype is not None else precision_of(q_new)
    q = as_float_array("q_new", q_new, 4)
    kn = as_float_array("k_new", k_new, 4)
    vn = as_float_array("v_new", v_new, 4)
    B, _, T_new, _ = q.shape
    expect_dim("k_new", kn, 0, B, "batch, as in q_new")
    expect_dim("k_new", kn, 2, T_new, "new tokens T_new, as in q_new")
    if (k_cache is None) != (v_cache is None):
        raise invalid("v_cache", "None exactly when k_cache is None", "None" if v_cache is None else "an array")
    if k_cache is None or v_cache is None:
        k_all, v_all, S_past = kn, vn, 0
    else:
        kc = as_float_array("k_cache", k_cache, 4)
        vc = as_float_array("v_cache", v_cache, 4)
        expect_dim("k_cache", kc, 0, B, "batch, as in q_new")
        expect_dim("k_cache", kc, 1, kn.shape[1], "kv heads H_kv, as in k_new")
        expect_dim("k_cache", kc, 3, kn.shape[3], "key width D_k, as in k_new")
        expect_dim("v_cache", vc, 0, B, "batch, as in q_new")
        expect_dim("v_cache", vc, 1, kn.shape[1], "kv heads H_kv, as in k_new")
        expect_dim("v_cache", vc, 2, kc.shape[2], "cached keys S_past, as in k_cache")
        if vn.ndim == 4:
            expect_dim("v_cache", vc, 3, vn.shape[3], "value width D_v, as in v_new")
        S_past = kc.shape[2]
        k_all = np.concatenate([kc, kn], axis=2)
        v_all = np.concatenate([vc, vn], axis=2)
    mask = decode_step_mask(cache_lengths, B, S_past, T_new, window_left=window_left)[:, None]
    out: Array = scaled_dot_product_attention(
        q, k_all, v_all, mask=mask, scale=scale, dtype=precision, logit_softcap=logit_softcap
    )
    return out
