"""torch FlexAttention (`torch.nn.attention.flex_attention.flex_attention`) behind the contract.

FlexAttention states each convention as a function: a `score_mod(score, b, h, q_idx, kv_idx)`
rewrites a scaled logit, a `mask_mod(b, h, q_idx, kv_idx)` says whether a key takes part
(True = attend), turned into a `BlockMask` by `create_block_mask`. The adapter writes them the way
the FlexAttention docs and its attention-gym examples do:

    causal                 mask_mod ``q_idx >= kv_idx`` (top-left, the docs' `causal`)
    mask (B, H, T, S)      mask_mod ``mask[b, h, q_idx, kv_idx]``
    window (left, right)   mask_mod ``q_idx - left <= kv_idx <= q_idx + right`` (a None side: no bound)
    lengths (B,), (B,)     mask_mod ``q_idx < query_lengths[b] & kv_idx < key_lengths[b]``
    logit_softcap c        score_mod ``c * tanh(score / c)`` (the docs' `tanh_softcap`; `score` is
                           the scaled logit: flex applies `scale` before `score_mod`)
    alibi_slopes (H,)      score_mod ``score - slopes[h] * (q_idx - kv_idx)`` (the docs' `alibi`),
                           after the cap, as the spec orders them

The masks combine with `and_masks`. Layouts are torch's: q `(B, H, T, D_k)`, k `(B, H_kv, S, D_k)`,
v `(B, H_kv, S, D_v)`; grouped heads through ``enable_gqa=True``.

It runs flex_attention as called, without `torch.compile`: torch then evaluates the same
score_mod / mask_mod / BlockMask semantics with its unfused implementation (it warns that the
scores are materialised). `torch.compile(flex_attention)` runs on this CPU too (torch 2.13 with
inductor), but compiles each new shape and each new score_mod: 40 to 77 s per compile measured on
the project's 2-core machine, more than a conformance run can spend on one adapter. The layer is
the reference's projections around the kernel (`KernelAdapterBase`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from attnconf.adapters import _torch
from attnconf.adapters.support import KernelAdapterBase
from attnconf.contract import Capabilities

Array = np.ndarray[Any, Any]
API = "torch.nn.attention.flex_attention.flex_attention"


def _flex() -> Any:
    """The `torch.nn.attention.flex_attention` module."""
    _torch.torch()
    import torch.nn.attention.flex_attention as flex

    return flex


def _mask_mods(
    T: int,
    S: int,
    mask: Any,
    causal: bool,
    window: tuple[int | None, int | None] | None,
    query_lengths: Any,
    key_lengths: Any,
) -> list[Any]:
    """The mask_mods of each requested convention (tensors indexed by `b`, `h`, `q_idx`, `kv_idx`)."""
    mods: list[Any] = []
    if mask is not None:
        mods.append(lambda b, h, q_idx, kv_idx: mask[b, h, q_idx, kv_idx])
    if causal:
        mods.append(lambda b, h, q_idx, kv_idx: q_idx >= kv_idx)
    if window is not None:
        left, right = window
        if left is not None:
            mods.append(lambda b, h, q_idx, kv_idx: kv_idx >= q_idx - left)
        if right is not None:
            mods.append(lambda b, h, q_idx, kv_idx: kv_idx <= q_idx + right)
    if query_lengths is not None:
        mods.append(lambda b, h, q_idx, kv_idx: q_idx < query_lengths[b])
    if key_lengths is not None:
        mods.append(lambda b, h, q_idx, kv_idx: kv_idx < key_lengths[b])
    return mods


def _score_mod(logit_softcap: float | None, slopes: Any) -> Any:
    """The score_mod of a soft cap then ALiBi, or None."""
    if logit_softcap is None and slopes is None:
        return None
    t = _torch.torch()

    def score_mod(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        if logit_softcap is not None:
            score = logit_softcap * t.tanh(score / logit_softcap)
        if slopes is not None:
            score = score - slopes[h] * (q_idx - kv_idx)
        return score

    return score_mod


class TorchFlexAttention(KernelAdapterBase):
    """`flex_attention(q, k, v, score_mod=..., block_mask=create_block_mask(...), scale=..., enable_gqa=...)`."""

    name = API
    framework = "torch"
    api = API
    distributions = ("torch",)
    modules = ("torch",)
    process_group = "torch"
    first_release = ("torch", "2.5", "lacks torch.nn.attention.flex_attention (added in torch 2.5)")

    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="kernel",
            causal_alignment="top_left",
            causal_with_mask=True,
            returns_weights=False,
            gqa=True,
            kdim_vdim=True,
            value_dim=True,
            output_dim=True,
            bias_free=True,
            custom_scale=True,
            gradients=False,
            conventions=frozenset({"window", "softcap", "alibi", "lengths"}),
            notes="flex_attention without torch.compile (its unfused implementation; a compile costs 40-77 s "
            "per shape here); causal, masks, windows and lengths as mask_mods, soft cap and ALiBi as score_mods; "
            "layer = reference projections around the kernel",
        )

    def _run(
        self,
        q: Array,
        k: Array,
        v: Array,
        mask: Array | None,
        causal: bool,
        scale: float | None,
        dtype: str,
        window: tuple[int | None, int | None] | None = None,
        logit_softcap: float | None = None,
        alibi_slopes: Array | None = None,
        query_lengths: Array | None = None,
        key_lengths: Array | None = None,
    ) -> Array:
        t = _torch.torch()
        flex = _flex()
        B, H, T, _ = np.shape(q)
        S = np.shape(k)[2]
        with t.inference_mode():
            tq, tk, tv = (_torch.tensor(a, dtype) for a in (q, k, v))
            tmask = None if mask is None else t.from_numpy(np.ascontiguousarray(np.broadcast_to(mask, (B, H, T, S))))
            q_lens = None if query_lengths is None else t.as_tensor(np.asarray(query_lengths, dtype=np.int64))
            k_lens = None if key_lengths is None else t.as_tensor(np.asarray(key_lengths, dtype=np.int64))
            slopes = (
                None if alibi_slopes is None else _torch.tensor(np.asarray(alibi_slopes, dtype=np.float64), "float64")
            )
            mods = _mask_mods(T, S, tmask, causal, window, q_lens, k_lens)
            block_mask = None
            if mods:
                mask_mod = mods[0] if len(mods) == 1 else flex.and_masks(*mods)
                block_mask = flex.create_block_mask(mask_mod, B=B, H=H, Q_LEN=T, KV_LEN=S, device="cpu")
            gqa = {"enable_gqa": True} if np.shape(k)[1] != H else {}
            with warnings.catch_warnings():  # "called without torch.compile()": intended, see the module docstring
                warnings.filterwarnings("ignore", message=".*without torch.compile.*", category=UserWarning)
                out = flex.flex_attention(
                    tq, tk, tv, score_mod=_score_mod(logit_softcap, slopes), block_mask=block_mask, scale=scale, **gqa
                )
        return _torch.to_numpy(out, dtype)

    def dot_product_attention(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool, scale: float | None, dtype: str
    ) -> Array:
        """q `(B, H, T, D_k)`, k `(B, H_kv, S, D_k)`, v `(B, H_kv, S, D_v)`, mask `(B, H, T, S)` -> `(B, H, T, D_v)`."""
        return self._run(q, k, v, mask, causal, scale, dtype)

    def convention_attention(
        self,
        q: Array,
        k: Array,
        v: Array,
        mask: Array | None,
        causal: bool,
        scale: float | None,
        dtype: str,
        *,
        window: tuple[int | None, int | None] | None = None,
        logit_softcap: float | None = None,
        alibi_slopes: Array | None = None,
        query_lengths: Array | None = None,
        key_lengths: Array | None = None,
    ) -> Array:
        """As `dot_product_attention`, with the conventions as mask_mods and score_mods -> `(B, H, T, D_v)`."""
        return self._run(
            q, k, v, mask, causal, scale, dtype, window, logit_softcap, alibi_slopes, query_lengths, key_lengths
        )
