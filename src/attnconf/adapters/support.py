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
    lazy_capabilities,
    release_in,
)
from attnconf.reference._checks import invalid
from attnconf.reference.attention import output_projection, project_heads

__all__ = [
    "BIASES", "AdapterBase", "KernelAdapterBase", "RotaryAdapterBase", "distribution_versions", "installed_version", "lazy_capabilities",
    "one_bias_switch", "present_biases", "release_in",
]

Array = np.ndarray[Any, Any]

#: The four optional biases of the canonical weights, in projection order.
BIASES = ("query_bias", "key_bias", "value_bias", "output_bias")


def present_biases(weights: AttentionWeights) -> tuple[str, ...]:
    """The names in `BIASES` that `weights` has (not None), in projection order."""
    return tuple(n for n in BIASES if getattr(weights, n) is not None)


def one_bias_switch(weights: AttentionWeights, api: str, switch: str = "use_bias") -> bool:
    """The value of a layer's single bias switch (`switch`, e.g. Keras's and Flax's ``use_bias``) for
    `weights`: True with all four biases, False with none.

    Raises `ValueError` (argument `weights`; expected all four or none; received the ones present)
    for a partial set, which such a layer cannot hold.
    """
    present = present_biases(weights)
    if present and len(present) != len(BIASES):
        raise invalid("weights", f"all four biases or none ({api} has one `{switch}` switch)",
                      f"biases {list(present)} only")
    return bool(present)


class KernelAdapterBase(AdapterBase):
    """A kernel-level adapter; its layer is the NumPy projections around the framework kernel.

    Subclasses implement `dot_product_attention`. `multi_head_attention` projects with the
    reference in the requested precision, calls the kernel, and applies the reference's output
    projection (`kernel_layer`), so the layer-level chapters test the kernel on exactly the
    reference's projections; a `native_mask_attention` hands its own mask to `kernel_layer`.
    """

    def dot_product_attention(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
        scale: float | None, dtype: str,
    ) -> Array:
        raise NotImplementedError

    def multi_head_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str
    ) -> AttentionOutputs:
        """The layer: the kernel between the reference's projections; the mask `(B, T, S)` reaches
        the kernel as `(B, H, T, S)`."""
        mask = None
        if inputs.mask is not None:
            B, T, S = inputs.mask.shape
            mask = np.broadcast_to(inputs.mask[:, None], (B, weights.num_heads, T, S)).copy()
        return self.kernel_layer(inputs, weights, dtype, mask)

    def kernel_layer(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, mask: Array | None
    ) -> AttentionOutputs:
        """`dot_product_attention(q, k, v, mask, ...)` between the reference's input projections
        (`project_heads`) and output projection (`output_projection`), in precision `dtype`.

        `mask` goes to the kernel as given (`(B, H, T, S)`, or a kernel's own layout such as
        `(B, 1, T, S)` for a native-mask test); `inputs.mask` is not read. Returns the output
        `(B, T, E_out)` and no weights.
        """
        q = project_heads(inputs.query, weights.query_kernel, weights.query_bias, dtype)
        k = project_heads(inputs.key, weights.key_kernel, weights.key_bias, dtype)
        v = project_heads(inputs.value, weights.value_kernel, weights.value_bias, dtype)
        heads = np.asarray(self.dot_product_attention(q, k, v, mask, inputs.causal, inputs.scale, dtype))
        return AttentionOutputs(output=output_projection(heads, weights.output_kernel, weights.output_bias, dtype),
                                weights=None)


class RotaryAdapterBase(AdapterBase):
    """An adapter of ``level="rotary"``: a rotary position embedding (`rotary_embedding`), no attention.

    The attention chapters and scenarios skip it; `multi_head_attention`, which the `Adapter`
    protocol names, refuses with the reason if anything calls it."""

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        """Not an attention: a rotary embedding only (``level="rotary"``)."""
        raise NotImplementedError(f"{self.name} is a rotary embedding (level='rotary'), not an attention layer")
