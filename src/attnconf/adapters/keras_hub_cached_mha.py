"""keras-hub's `CachedMultiHeadAttention` (a KV-cache layer) behind `decode_step`, on Keras 3's torch backend.

The contract's decode step works on heads `(B, H, N, D)`; the layer projects its inputs itself.
The adapter builds it with identity projections (``num_heads=H, key_dim=D, use_bias=False``; the
query, key and value kernels `(H*D, H, D)` and the output kernel `(H, D, H*D)` are the identity
reshaped), so the layer's own attention sees the heads unchanged: a product by 1 and sums with
exact zeros round nothing. Then, as keras-hub's decoders call it:

    cache              (B, 2, S_past + T_new, H, D): the cached keys and values (heads last), zeros after
    cache_update_index S_past: the layer writes the new keys and values there (`ops.slice_update`)
    attention_mask     `compute_causal_mask(B, S_past + T_new, T_new, cache_index=S_past)` (query t
                       sees keys j <= S_past + t), with `cache_lengths` merged with a padding mask
                       over the keys (`merge_padding_and_attention_mask`), keras-hub's helpers
    query, value       q_new and v_new as `(B, T_new, H*D)`; key = k_new likewise

The layer has no kv heads (H_kv = H, ``gqa=False``) and no scale argument (1/sqrt(D)). Measured
with keras-hub 0.32.0 on keras 3.15.1 (torch backend).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters._keras_common import backend_settings, float64_precision, keras3, numpy_of
from attnconf.contract import AdapterBase, AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.reference._checks import FLOAT_DTYPES, invalid

Array = np.ndarray[Any, Any]
BACKEND = "torch"


def _tokens(x: Array) -> Array:
    """`(B, H, N, D)` -> `(B, N, H*D)`."""
    B, H, N, D = np.shape(x)
    return np.ascontiguousarray(np.transpose(x, (0, 2, 1, 3)).reshape(B, N, H * D))


class KerasHubCachedMHA(AdapterBase):
    """`keras_hub.layers.CachedMultiHeadAttention` with a cache and `cache_update_index`, identity projections."""

    name = "keras_hub.layers.CachedMultiHeadAttention"
    framework = "keras"
    api = "keras_hub.layers.CachedMultiHeadAttention"
    distributions = ("keras-hub", "keras", "torch")
    modules = ("keras_hub", "keras", "torch")
    process_group = backend_settings(BACKEND)["process_group"]
    environment = backend_settings(BACKEND)["environment"]

    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="kernel",
            causal=False,
            causal_alignment=None,
            causal_with_mask=False,
            returns_weights=False,
            gqa=False,
            custom_scale=False,
            kv_cache=True,
            dtypes=frozenset(FLOAT_DTYPES),
            precision=float64_precision(BACKEND),
            notes="decode_step only: identity projections, the cache filled at cache_update_index, keras-hub's "
            "compute_causal_mask (attention chapters: not an attention kernel)",
        )

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        raise NotImplementedError(f"{self.name}: this adapter exercises decode_step only")

    def dot_product_attention(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool, scale: float | None, dtype: str
    ) -> Array:
        raise NotImplementedError(f"{self.name}: this adapter exercises decode_step only")

    def decode_step(
        self,
        q_new: Array,
        k_cache: Array,
        v_cache: Array,
        k_new: Array,
        v_new: Array,
        dtype: str,
        *,
        scale: float | None = None,
        cache_lengths: Array | None = None,
    ) -> Array:
        """q_new `(B, H, T_new, D)` against the cache plus k_new, v_new -> `(B, H, T_new, D)`."""
        B, H, T_new, D = np.shape(q_new)
        S_past = np.shape(k_cache)[2]
        if np.shape(k_cache)[1] != H:
            raise invalid(
                "k_cache", f"{H} kv heads (CachedMultiHeadAttention has no grouped heads)", np.shape(k_cache)[1]
            )
        if np.shape(v_cache)[3] != D:
            raise invalid("v_cache", f"value width {D} = key width (num_heads * key_dim in, out)", np.shape(v_cache))
        if scale is not None and not np.isclose(scale, 1 / np.sqrt(D), rtol=0, atol=0):
            raise invalid("scale", "None or 1/sqrt(D) (the layer has no scale argument)", repr(scale))
        keras = keras3(BACKEND)
        import keras_hub
        from keras_hub.src.layers.modeling.transformer_layer_utils import (
            compute_causal_mask,
            merge_padding_and_attention_mask,
        )

        ops = keras.ops
        E = H * D
        layer = keras_hub.layers.CachedMultiHeadAttention(num_heads=H, key_dim=D, use_bias=False, dtype=dtype)
        layer.build((None, None, E), (None, None, E), (None, None, E))
        eye = np.eye(E)
        kernels = {
            "query/kernel": eye.reshape(E, H, D),
            "key/kernel": eye.reshape(E, H, D),
            "value/kernel": eye.reshape(E, H, D),
            "attention_output/kernel": eye.reshape(H, D, E),
        }
        layer.set_weights([kernels[next(n for n in kernels if v.path.endswith(n))] for v in layer.weights])

        def tensor(a: Array) -> Any:
            return ops.convert_to_tensor(np.asarray(a, dtype=np.float32 if dtype == "bfloat16" else None), dtype=dtype)

        S = S_past + T_new
        cache = np.zeros((B, 2, S, H, D), dtype=np.asarray(k_cache).dtype)
        cache[:, 0, :S_past] = np.transpose(k_cache, (0, 2, 1, 3))
        cache[:, 1, :S_past] = np.transpose(v_cache, (0, 2, 1, 3))
        query = tensor(_tokens(q_new))
        mask = compute_causal_mask(B, S, T_new, cache_index=S_past)
        if cache_lengths is not None:
            keys = np.arange(S)[None, :]
            padding = (keys < np.asarray(cache_lengths)[:, None]) | (keys >= S_past)
            mask = merge_padding_and_attention_mask(query, ops.convert_to_tensor(padding), mask)
        out, _ = layer(
            query,
            tensor(_tokens(v_new)),
            key=tensor(_tokens(k_new)),
            attention_mask=mask,
            cache=tensor(cache),
            cache_update_index=S_past,
            training=False,
        )
        return np.ascontiguousarray(np.transpose(numpy_of(out, dtype, BACKEND).reshape(B, T_new, H, D), (0, 2, 1, 3)))
