"""`paddle.nn.functional.scaled_dot_product_attention`, the kernel, behind the contract.

Layout: paddle's q, k, v are `(B, T, H, D)` (sequence before heads, its docstring: "[batch_size,
seq_len, num_heads, head_dim]"), the contract's `(B, H, T, D)`: the adapter transposes axes 1 and 2
on the way in and out, nothing else. Its boolean `attn_mask` has the spec's polarity ("The bool
mask indicates the positions should take part in attention"; the kernel turns it into 0 / -inf)
and broadcasts to `(B, H, T, S)`; a float mask is added to the logits. `is_causal` is top-left:
on the CPU the math backend adds `triu(full_like(logits, -1e4), diagonal=1)` over `(T, S)`
(`paddle/nn/functional/flash_attention.py`, `get_triangle_upper_mask`). The docstring warns that
with `is_causal` "the provided mask will be ignored" (the math path overwrites it), so
`causal_with_mask=False`; the adapter passes both as given for the audit to observe. Grouped kv
heads are taken (`enable_gqa=True`, the default): kv head `h // (H // H_kv)` for query head `h`
(`_repeat_kv` expands each kv head in place). D_v may differ from D_k. Called with
`dropout_p=0.0, training=False`.

The layer (`multi_head_attention`) is the reference's projections around the kernel
(`KernelAdapterBase`); its gradients (`multi_head_attention_vjp`) run the same projections in
paddle so that autograd sees the whole layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters import _paddle
from attnconf.adapters.support import KernelAdapterBase
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities

Array = np.ndarray[Any, Any]

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")


def _sdpa(q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: float | None) -> Any:
    """The paddle call on tensors in the contract's layout `(B, H, T, D_k)`, `(B, H_kv, S, D_k)`,
    `(B, H_kv, S, D_v)`; returns `(B, H, T, D_v)`."""
    p = _paddle.paddle()
    q, k, v = (p.transpose(a, [0, 2, 1, 3]) for a in (q, k, v))
    out = p.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=bool(causal), training=False, scale=scale
    )
    return p.transpose(out, [0, 2, 1, 3])


def _mask(mask: Array | None, dtype: str) -> Any:
    return None if mask is None else _paddle.mask_tensor(np.asarray(mask), dtype)


class PaddleSDPA(KernelAdapterBase):
    """`F.scaled_dot_product_attention(q, k, v, attn_mask, is_causal=..., scale=...)` on `(B, T, H, D)`."""

    name = "paddle.nn.functional.scaled_dot_product_attention"
    framework = "paddle"
    api = "paddle.nn.functional.scaled_dot_product_attention"
    distributions = ("paddlepaddle",)
    modules = ("paddle",)
    process_group = "paddle"
    # `scale` and grouped kv heads came with PaddlePaddle/Paddle#76446 (merged 2025-11, first in 3.3.0);
    # measured: 3.0.0 raises "got an unexpected keyword argument 'scale'", and without an attn_mask it
    # goes to flash_attention instead of the math path
    first_release = (
        "paddlepaddle",
        "3.3.0",
        "has no `scale` or grouped kv heads in paddle.nn.functional.scaled_dot_product_attention "
        "(added in 3.3.0, PaddlePaddle/Paddle#76446)",
    )

    @classmethod
    def _capabilities(cls) -> Capabilities:
        """From the installed release (package metadata; nothing is imported)."""
        limits = _paddle.half_limits()
        return Capabilities(
            level="kernel",
            dtypes=frozenset(FLOAT_DTYPES) - {dt for dt, _ in limits},
            limits=limits,
            causal=True,
            causal_alignment="top_left",
            causal_with_mask=False,
            returns_weights=False,
            gqa=True,
            mqa=True,
            kdim_vdim=True,
            value_dim=True,
            head_dim=True,
            output_dim=True,
            bias_free=True,
            custom_scale=True,
            gradients=True,
            fused=False,
            notes="layout (B, T, H, D), transposed by the adapter; layer = reference projections around the kernel; "
            "is_causal ignores attn_mask (documented)",
        )

    def dot_product_attention(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool, scale: float | None, dtype: str
    ) -> Array:
        p = _paddle.paddle()
        with p.no_grad():
            out = _sdpa(*(_paddle.tensor(a, dtype) for a in (q, k, v)), _mask(mask, dtype), causal, scale)
        return _paddle.to_numpy(out, dtype)

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
        """Gradients of `sum(output * cotangent)` with respect to "q", "k", "v" (`paddle.grad`)."""
        p = _paddle.paddle()
        leaves = [_paddle.tensor(a, dtype, requires_grad=True) for a in (q, k, v)]
        out = _sdpa(*leaves, _mask(mask, dtype), causal, scale)
        grads = p.grad([out], leaves, [_paddle.tensor(cotangent, dtype)])
        return {n: _paddle.to_numpy(g, dtype) for n, g in zip(("q", "k", "v"), grads, strict=True)}

    def native_mask_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, native_mask: Array
    ) -> AttentionOutputs:
        """The layer with `native_mask` `(B, T, S)` handed to `attn_mask` as is, as `(B, 1, T, S)`."""
        return self.kernel_layer(inputs, weights, dtype, np.asarray(native_mask)[:, None])

    def multi_head_attention_vjp(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, cotangent: Array
    ) -> dict[str, Array]:
        """Gradients of the layer (paddle projections around the kernel) in the canonical layout."""
        p = _paddle.paddle()
        x = {n: _paddle.tensor(getattr(inputs, n), dtype, requires_grad=True) for n in ("query", "key", "value")}
        w = {n: _paddle.tensor(a, dtype, requires_grad=True) for n, a in weights.arrays().items()}

        def heads(n: str) -> Any:
            y = p.einsum("bne,ehd->bhnd", x[n], w[f"{n}_kernel"])
            return y if f"{n}_bias" not in w else y + w[f"{n}_bias"].unsqueeze(1)

        mask = None if inputs.mask is None else p.to_tensor(np.ascontiguousarray(inputs.mask[:, None]))
        o = _sdpa(heads("query"), heads("key"), heads("value"), mask, inputs.causal, inputs.scale)
        out = p.einsum("bhtd,hde->bte", o, w["output_kernel"])
        if "output_bias" in w:
            out = out + w["output_bias"]
        leaves = {**x, **w}
        grads = p.grad([out], list(leaves.values()), [_paddle.tensor(cotangent, dtype)])
        return {n: _paddle.to_numpy(g, dtype) for n, g in zip(leaves, grads, strict=True)}
