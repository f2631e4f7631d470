"""`onnxruntime.Attention`: the ONNX `Attention` operator (opset 23) on ONNX Runtime's CPU provider.

A kernel-level adapter: each call runs a one-node model ``Y = Attention(Q, K, V[, attn_mask])``;
the layer around it is the reference's projections (`KernelAdapterBase`). Sessions are cached
per (shapes, dtype, mask kind, causal, scale).

Mapping, canonical -> ONNX (https://onnx.ai/onnx/operators/onnx__Attention.html):

    q (B, H, T, D_k)            -> Q (B, q_num_heads=H, q_sequence_length=T, head_size=D_k)
    k (B, H_kv, S, D_k)         -> K (B, kv_num_heads=H_kv, kv_sequence_length=S, D_k)
    v (B, H_kv, S, D_v)         -> V (B, H_kv, S, v_head_size=D_v)
    mask (B, H, T, S) bool      -> attn_mask, same array (the op's True = takes part, as ours)
    causal                      -> is_causal=1 (no past_key: key j visible to query i iff j <= i,
                                   i.e. our top_left)
    scale (None = 1/sqrt(D_k))  -> scale attribute (a float32 in ONNX), omitted when None
    output                      <- Y (B, H, T, D_v)

Grouped-query heads need no attribute with 4-D inputs: H_kv < H is read from K's shape and
query head h reads kv head h // (H // H_kv), as in the spec. `native_mask_attention` hands a
`(B, T, S)` mask to `attn_mask` as `(B, 1, T, S)`, boolean or float (additive), unconverted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters import _onnx_common as common
from attnconf.adapters.support import KernelAdapterBase
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities

Array = np.ndarray[Any, Any]


class OnnxAttention(KernelAdapterBase):
    """The opset-23 `Attention` op, one node, run by onnxruntime's CPUExecutionProvider."""

    name = "onnxruntime.Attention"
    framework = "onnxruntime"
    api = "onnx Attention (opset 23), onnxruntime CPUExecutionProvider"
    distributions = common.DISTRIBUTIONS
    modules = common.MODULES
    first_release = common.FIRST_RELEASE
    process_group = "onnxruntime"
    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="kernel", dtypes=common.DTYPES, causal_alignment="top_left", returns_weights=False,
            gqa=True, kdim_vdim=True, value_dim=True, output_dim=True, custom_scale=True,
            scale_precision=common.float64_scale_precision(),
            notes="4-D Q/K/V; projections by the reference; no bfloat16 CPU kernel (onnxruntime#27891)",
        )

    def __init__(self) -> None:
        self._sessions = common.SessionCache()

    def _attend(
        self, q: Array, k: Array, v: Array, attn_mask: Array | None, causal: bool,
        scale: float | None, dtype: str,
    ) -> Array:
        """Run `Attention` on `(B, H, T, D_k)`, `(B, H_kv, S, D_k)`, `(B, H_kv, S, D_v)`;
        `attn_mask` is boolean or float, broadcastable to `(B, H, T, S)`, or None."""
        np_dtype = common.numpy_dtype(dtype)
        feeds = {"Q": np.asarray(q, np_dtype), "K": np.asarray(k, np_dtype), "V": np.asarray(v, np_dtype)}
        if attn_mask is not None:
            feeds["attn_mask"] = common.as_attn_mask(attn_mask, dtype)
        shapes = tuple((n, a.shape, str(a.dtype)) for n, a in feeds.items())
        key = (shapes, dtype, bool(causal), None if scale is None else float(scale))

        def build() -> Any:
            inputs = [common.value_info(n, a.dtype, a.shape) for n, a in feeds.items()]
            node = common.attention_node(list(feeds), ["Y"], causal, scale)
            y_shape = (*feeds["Q"].shape[:3], feeds["V"].shape[3])  # (B, H, T, D_v)
            return common.make_model([node], inputs, [common.value_info("Y", np_dtype, y_shape)])

        (y,) = self._sessions.get(key, build).run(["Y"], feeds)
        return np.asarray(y)

    def dot_product_attention(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
        scale: float | None, dtype: str,
    ) -> Array:
        """q `(B, H, T, D_k)`, k `(B, H_kv, S, D_k)`, v `(B, H_kv, S, D_v)`, mask `(B, H, T, S)`
        bool or None -> `(B, H, T, D_v)`."""
        return self._attend(q, k, v, mask, causal, scale, dtype)

    def native_mask_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, native_mask: Array
    ) -> AttentionOutputs:
        """The layer with `native_mask` `(B, T, S)` (bool or float) handed to `attn_mask` as is,
        as `(B, 1, T, S)`: the op's 4-D layout."""
        return self.kernel_layer(inputs, weights, dtype, np.asarray(native_mask)[:, None])
