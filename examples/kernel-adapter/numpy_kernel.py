"""A worked kernel adapter: scaled dot-product attention written on plain NumPy.

docs/writing-an-adapter.md walks through this file. It is a complete adapter that the conformance
chapters run as they run any other:

    PYTHONPATH=examples/kernel-adapter pytest --pyargs attnconf.conformance \
        --adapter numpy_kernel:NumpyKernel --dtype float32 -q

It is written from the formula, not on `attnconf.reference`, so that the chapters have something
to check: a wrong scale, an inverted mask or a kv head read by the wrong query head fails them.
Only the precision helper `round_to` comes from attnconf, to hand results back in
the contract's representation (bfloat16 as float32 arrays holding bfloat16 values).

Contract (`attnconf.adapters.base.KernelAdapter`), shapes:

    q     (B, H, T, D_k)      queries, already rounded to `dtype`
    k     (B, H_kv, S, D_k)   keys; query head h reads kv head h // (H // H_kv)
    v     (B, H_kv, S, D_v)   values
    mask  (B, H, T, S) bool   True = may attend, or None
    causal                    the causal mask with the alignment declared in `capabilities`
    scale                     the logit scale; None means 1/sqrt(D_k)
    ->    (B, H, T, D_v)      the heads' outputs, rounded to `dtype` (bfloat16 kept in float32)

`KernelAdapterBase` supplies `multi_head_attention` (the reference's projections around this
kernel), so the layer-level chapters run too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from attnconf.adapters.base import Capabilities, KernelAdapterBase
from attnconf.reference import round_to

Array = np.ndarray[Any, Any]

#: Where the causal diagonal sits when T != S: "top_left" (key j visible to query i when j <= i) or
#: "bottom_right" (j <= i + S - T). The capabilities declare it; the chapters hold the kernel to it.
ALIGNMENT = "top_left"


def _compute_dtype(dtype: str) -> type[np.floating[Any]]:
    """float64 and float32 compute in themselves; float16 and bfloat16 in float32."""
    return np.float64 if dtype == "float64" else np.float32


def _visible(mask: Array | None, causal: bool, T: int, S: int) -> Array:
    """`(B or 1, H or 1, T, S)`: True where query t may attend key s."""
    visible = np.ones((1, 1, T, S), dtype=bool)
    if mask is not None:
        visible = visible & np.asarray(mask, dtype=bool)
    if causal:
        offset = 0 if ALIGNMENT == "top_left" else S - T
        visible = visible & (np.arange(S)[None, :] <= np.arange(T)[:, None] + offset)
    return visible


def _probabilities(q: Array, k: Array, visible: Array, scale: float) -> Array:
    """softmax over keys of ``q @ k^T * scale`` `(B, H, T, S)`; hidden keys get weight 0, and a
    query row with no visible key gets all weights 0 (the spec's default, ``fully_masked="zeros"``)."""
    logits = np.einsum("bhtd,bhsd->bhts", q, k) * q.dtype.type(scale)
    logits = np.where(visible, logits, -np.inf)
    row_max = logits.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0)  # a fully masked row: nothing to subtract
    e = np.exp(logits - row_max)  # exp(-inf) = 0 for hidden keys
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total > 0, total, 1)


class NumpyKernel(KernelAdapterBase):
    """Scaled dot-product attention in NumPy, with grouped kv heads, a mask, a causal flag and a scale."""

    name = "example.numpy-kernel"
    framework = "numpy"
    api = "examples/kernel-adapter/numpy_kernel.py"
    distributions = ("numpy",)
    modules = ("numpy",)
    process_group = None  # NumPy only: it may run in the pytest process
    capabilities = Capabilities(
        level="kernel",
        dtypes=frozenset({"float64", "float32", "float16", "bfloat16"}),
        boolean_mask=True,
        causal=True,
        causal_alignment=ALIGNMENT,
        causal_with_mask=True,
        returns_weights=False,  # KernelAdapterBase returns no attention weights
        gqa=True,
        mqa=True,
        kdim_vdim=True,
        value_dim=True,
        head_dim=True,
        output_dim=True,
        bias_free=True,
        custom_scale=True,
        gradients=True,
        notes="the worked example of docs/writing-an-adapter.md",
    )

    def dot_product_attention(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool, scale: float | None, dtype: str
    ) -> Array:
        """The heads' outputs `(B, H, T, D_v)` in precision `dtype`."""
        ct = _compute_dtype(dtype)
        q, k, v = (np.asarray(a, dtype=ct) for a in (q, k, v))
        H, T, D_k = q.shape[1], q.shape[2], q.shape[3]
        S = k.shape[2]
        group = H // k.shape[1]
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)  # kv head h // group for head h
        p = _probabilities(q, k, _visible(mask, causal, T, S), 1 / math.sqrt(D_k) if scale is None else scale)
        return round_to(np.einsum("bhts,bhsd->bhtd", p, v), dtype)

    def dot_product_attention_vjp(
        self,
        q: Array,
        k: Array,
        v: Array,
        mask: Array | None,
        causal: bool,
        scale: float | None,
        dtype: str,
        cotangent: Array,
    ) -> dict[str, Array]:
        """Gradients of ``sum(dot_product_attention(...) * cotangent)`` (cotangent `(B, H, T, D_v)`):
        {"q": (B, H, T, D_k), "k": (B, H_kv, S, D_k), "v": (B, H_kv, S, D_v)}."""
        ct = _compute_dtype(dtype)
        q, k, v, d_out = (np.asarray(a, dtype=ct) for a in (q, k, v, cotangent))
        B, H, T, D_k = q.shape
        H_kv, S = k.shape[1], k.shape[2]
        group = H // H_kv
        scale = 1 / math.sqrt(D_k) if scale is None else scale
        k_h, v_h = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        p = _probabilities(q, k_h, _visible(mask, causal, T, S), scale)
        d_p = np.einsum("bhtd,bhsd->bhts", d_out, v_h)
        d_logits = p * (d_p - np.sum(p * d_p, axis=-1, keepdims=True))  # the softmax's Jacobian
        d_q = np.einsum("bhts,bhsd->bhtd", d_logits, k_h) * ct(scale)
        d_k = np.einsum("bhts,bhtd->bhsd", d_logits, q) * ct(scale)
        d_v = np.einsum("bhts,bhtd->bhsd", p, d_out)
        # The query heads of a group share one kv head: their gradients add up.
        d_k = d_k.reshape(B, H_kv, group, S, D_k).sum(axis=2)
        d_v = d_v.reshape(B, H_kv, group, S, v.shape[3]).sum(axis=2)
        grads = {"q": d_q, "k": d_k, "v": d_v}
        return {name: round_to(g, dtype) for name, g in grads.items()}  # in the storage dtype of `dtype`
