"""keras-hub's `CachedMultiHeadAttention` (a KV-cache layer), on Keras 3's torch backend.

Without a cache the layer is Keras's `MultiHeadAttention` (it subclasses it): the layer chapters
run on it through the Keras adapter's flow (`KerasMHA`, adapters/keras_mha.py), with the layer
built by keras-hub. Its `call` has no `use_causal_mask` (keras-hub's decoders pass a mask from
`compute_causal_mask`), so it declares no causal flag.

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

import dataclasses
from typing import Any

import numpy as np

from attnconf.adapters._keras_common import keras3, numpy_of
from attnconf.adapters.keras_mha import KerasMHA
from attnconf.contract import AttentionInputs, Capabilities
from attnconf.reference._checks import invalid

Array = np.ndarray[Any, Any]
BACKEND = "torch"


def _tokens(x: Array) -> Array:
    """`(B, H, N, D)` -> `(B, N, H*D)`."""
    B, H, N, D = np.shape(x)
    return np.ascontiguousarray(np.transpose(x, (0, 2, 1, 3)).reshape(B, N, H * D))


class KerasHubCachedMHA(KerasMHA, backend=BACKEND):
    """`keras_hub.layers.CachedMultiHeadAttention`: the layer without a cache; `decode_step` with one."""

    @classmethod
    def _capabilities(cls) -> Capabilities:
        return dataclasses.replace(
            super()._capabilities(),
            causal=False,
            causal_alignment=None,
            causal_with_mask=False,
            kv_cache=True,
            notes="keras-hub's CachedMultiHeadAttention: its call has no use_causal_mask (no causal flag); "
            "decode_step with identity projections, the cache filled at cache_update_index, keras-hub's "
            "compute_causal_mask; fused path (ops.dot_product_attention)",
        )

    def _new_layer(self, arguments: dict[str, Any], dtype: str, dropout: float, widths: tuple[int, int, int]) -> Any:
        keras3(BACKEND)
        import keras_hub

        layer = keras_hub.layers.CachedMultiHeadAttention(
            **arguments, dropout=dropout, dtype=dtype, kernel_initializer="zeros"
        )  # set_weights follows
        E_q, E_k, E_v = widths
        layer.build((None, None, E_q), (None, None, E_v), (None, None, E_k))
        return layer

    def _kwargs(self, inputs: AttentionInputs, mask: Array | None) -> dict[str, Any]:
        if inputs.causal:
            raise invalid("causal", f"False ({self.api}.call has no use_causal_mask)", True)
        return super()._kwargs(inputs, mask)

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
        from keras_hub.src.layers.modeling.transformer_layer_utils import (
            compute_causal_mask,
            merge_padding_and_attention_mask,
        )

        ops = keras.ops
        E = H * D
        layer = self._new_layer({"num_heads": H, "key_dim": D, "use_bias": False}, dtype, 0.0, (E, E, E))
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


KerasHubCachedMHA.name = "keras_hub.layers.CachedMultiHeadAttention"
KerasHubCachedMHA.api = "keras_hub.layers.CachedMultiHeadAttention"
KerasHubCachedMHA.distributions = ("keras-hub", "keras", "torch")
KerasHubCachedMHA.modules = ("keras_hub", "keras", "torch")
