"""The `numpy` adapter: the reference itself behind the contract.

It proves the pipeline end to end (registry, plugin, chapters, reports) and is the baseline
every framework adapter is compared with. Its "native" weights are the canonical ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters.support import AdapterBase
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.reference import (
    multi_head_attention,
    multi_head_attention_vjp,
    scaled_dot_product_attention,
    scaled_dot_product_attention_vjp,
)

Array = np.ndarray[Any, Any]


class NumpyAdapter(AdapterBase):
    """`attnconf.reference.multi_head_attention`, evaluated in the requested precision."""

    name = "numpy"
    framework = "numpy"
    api = "attnconf.reference.multi_head_attention"
    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="layer", gqa=True, kdim_vdim=True, value_dim=True, output_dim=True,
            custom_scale=True, weight_round_trip=True, gradients=True,
            notes="the specification; bfloat16 emulated in float32",
        )

    def multi_head_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str
    ) -> AttentionOutputs:
        return multi_head_attention(inputs, weights, dtype=dtype)

    def multi_head_attention_vjp(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, cotangent: Array
    ) -> dict[str, Array]:
        return multi_head_attention_vjp(inputs, weights, cotangent, dtype=dtype)

    def round_trip_weights(self, weights: AttentionWeights, dtype: str) -> AttentionWeights:
        native = {name: np.array(a) for name, a in weights.astype(dtype).arrays().items()}
        return AttentionWeights(**native)

    def dot_product_attention(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
        scale: float | None, dtype: str,
    ) -> Array:
        return scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, scale=scale, dtype=dtype)

    def dot_product_attention_vjp(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
        scale: float | None, dtype: str, cotangent: Array,
    ) -> dict[str, Array]:
        return scaled_dot_product_attention_vjp(q, k, v, cotangent, mask=mask, causal=causal, scale=scale, dtype=dtype)
