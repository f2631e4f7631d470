"""Helpers for writing adapters: the layer built on a kernel, and the contract's helpers re-exported.

`KernelAdapterBase` is public (exported by `attnconf.adapters.base`); the rest are conveniences
that adapters may use or not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.contract import (
    AdapterBase,
    AttentionInputs,
    AttentionOutputs,
    AttentionWeights,
    distribution_versions,
    installed_version,
    release_in,
)
from attnconf.reference.attention import project_heads
from attnconf.reference.precision import in_compute, round_to

__all__ = ["AdapterBase", "KernelAdapterBase", "distribution_versions", "installed_version", "release_in"]

Array = np.ndarray[Any, Any]


class KernelAdapterBase(AdapterBase):
    """A kernel-level adapter; its layer is the NumPy projections around the framework kernel.

    Subclasses implement `dot_product_attention`. `multi_head_attention` projects with the
    reference in the requested precision, calls the kernel, and applies the output projection,
    so the layer-level chapters test the kernel on exactly the reference's projections.
    """

    def dot_product_attention(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
        scale: float | None, dtype: str,
    ) -> Array:
        raise NotImplementedError

    def multi_head_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str
    ) -> AttentionOutputs:
        q = project_heads(inputs.query, weights.query_kernel, weights.query_bias, dtype)
        k = project_heads(inputs.key, weights.key_kernel, weights.key_bias, dtype)
        v = project_heads(inputs.value, weights.value_kernel, weights.value_bias, dtype)
        H = weights.num_heads
        mask = None
        if inputs.mask is not None:
            B, T, S = inputs.mask.shape
            mask = np.broadcast_to(inputs.mask[:, None], (B, H, T, S)).copy()
        heads = np.asarray(
            self.dot_product_attention(q, k, v, mask, inputs.causal, inputs.scale, dtype)
        )
        out = np.einsum("bhtd,hde->bte", in_compute(heads, dtype), in_compute(weights.output_kernel, dtype))
        out = round_to(out, dtype)
        if weights.output_bias is not None:
            out = round_to(in_compute(out, dtype) + in_compute(weights.output_bias, dtype), dtype)
        return AttentionOutputs(output=out, weights=None)
