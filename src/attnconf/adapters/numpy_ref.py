"""The `numpy` adapter: the reference itself behind the contract.

It proves the pipeline end to end (registry, plugin, chapters, reports) and is the baseline
every framework adapter is compared with. Its "native" weights are the canonical ones. It declares
every convention of current models (docs/spec.md, section 13: windows, soft caps, ALiBi, ragged
lengths, the KV-cache decode step, rotary embeddings in both layouts, partial rotary) and implements
each through the reference: it is the spec behind the contract, so every chapter passes on it by
construction, and the faulty adapters of the project's own tests are its variants.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters.support import AdapterBase
from attnconf.contract import (
    CONVENTIONS,
    ROTARY_LAYOUTS,
    AttentionInputs,
    AttentionOutputs,
    AttentionWeights,
    Capabilities,
)
from attnconf.reference import (
    decode_step,
    lengths_to_mask,
    multi_head_attention,
    multi_head_attention_vjp,
    scaled_dot_product_attention,
    scaled_dot_product_attention_vjp,
)
from attnconf.reference import rotary_embedding as reference_rotary_embedding
from attnconf.reference.masks import Window

Array = np.ndarray[Any, Any]


class NumpyAdapter(AdapterBase):
    """`attnconf.reference.multi_head_attention`, evaluated in the requested precision."""

    name = "numpy"
    framework = "numpy"
    api = "attnconf.reference.multi_head_attention"

    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="layer",
            gqa=True,
            kdim_vdim=True,
            value_dim=True,
            output_dim=True,
            custom_scale=True,
            weight_round_trip=True,
            gradients=True,
            conventions=frozenset(CONVENTIONS),
            kv_cache=True,
            rotary_layouts=frozenset(ROTARY_LAYOUTS),
            rotary_partial=True,
            notes="the specification; bfloat16 emulated in float32",
        )

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        return multi_head_attention(inputs, weights, dtype=dtype)

    def multi_head_attention_vjp(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, cotangent: Array
    ) -> dict[str, Array]:
        return multi_head_attention_vjp(inputs, weights, cotangent, dtype=dtype)

    def round_trip_weights(self, weights: AttentionWeights, dtype: str) -> AttentionWeights:
        native = {name: np.array(a) for name, a in weights.astype(dtype).arrays().items()}
        return AttentionWeights(**native)

    def dot_product_attention(
        self,
        q: Array,
        k: Array,
        v: Array,
        mask: Array | None,
        causal: bool,
        scale: float | None,
        dtype: str,
    ) -> Array:
        return scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, scale=scale, dtype=dtype)

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
        return scaled_dot_product_attention_vjp(q, k, v, cotangent, mask=mask, causal=causal, scale=scale, dtype=dtype)

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
        window: Window | None = None,
        logit_softcap: float | None = None,
        alibi_slopes: Array | None = None,
        query_lengths: Array | None = None,
        key_lengths: Array | None = None,
    ) -> Array:
        """`scaled_dot_product_attention` with the conventions' keywords; lengths become a mask `(B, 1, T, S)`."""
        if (query_lengths is None) != (key_lengths is None):
            raise ValueError(
                "query_lengths and key_lengths: expected both or neither, "
                f"received query_lengths={query_lengths!r}, key_lengths={key_lengths!r}"
            )
        if query_lengths is not None:
            ragged = lengths_to_mask(query_lengths, key_lengths, q.shape[2], k.shape[2])[:, None]
            mask = ragged if mask is None else mask & ragged
        return scaled_dot_product_attention(
            q,
            k,
            v,
            mask=mask,
            causal=causal,
            scale=scale,
            dtype=dtype,
            window=window,
            logit_softcap=logit_softcap,
            alibi_slopes=alibi_slopes,
        )

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
        return decode_step(q_new, k_cache, v_cache, k_new, v_new, scale=scale, cache_lengths=cache_lengths, dtype=dtype)

    def rotary_embedding(
        self,
        x: Array,
        positions: Array,
        dtype: str,
        *,
        layout: str,
        rotary_dim: int | None = None,
        theta: float = 10000.0,
    ) -> Array:
        return reference_rotary_embedding(
            x,
            positions,
            layout=layout,  # type: ignore[arg-type]  # checked by the reference
            rotary_dim=rotary_dim,
            theta=theta,
            dtype=dtype,
        )
