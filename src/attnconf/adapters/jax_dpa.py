"""`jax.nn.dot_product_attention` behind the contract (a kernel adapter).

Contract -> native layout (jax names the axes B batch, T/S lengths, N query heads, K kv heads,
H head width)::

    q    (B, H, T, D_k)     -> query (B, T, N, H)       np.swapaxes(q, 1, 2)
    k    (B, H_kv, S, D_k)  -> key   (B, S, K, H)
    v    (B, H_kv, S, D_v)  -> value (B, S, K, H)       jax takes value of key's shape: D_v = D_k
    mask (B, H, T, S) bool  -> mask  (B, N, T, S) bool  True = take part (jax docs), unchanged
    causal                  -> is_causal                the native flag
    scale                   -> scale                    None: 1/sqrt(H)
    output (B, T, N, H)     -> (B, H, T, D_v)

Grouped kv heads are native (K divides N). `implementation=None` lets jax choose; on the CPU
that is its XLA implementation. The layer chapters run it on the reference's projections
(`KernelAdapterBase`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters._jax_common import (
    DPA_FLOAT16_LIMIT,
    DPA_FLOAT64_PRECISION,
    PROCESS_GROUP,
    JitCache,
    dpa_float16_fails,
    dpa_float64_in_float32,
    jax,
    to_jax,
    to_numpy,
)
from attnconf.adapters.jax_dpa_conventions import JaxConventions, jax_dpa_conventions
from attnconf.adapters.support import KernelAdapterBase, release_in
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.reference._checks import FLOAT_DTYPES, invalid
from attnconf.reference.precision import round_to

Array = np.ndarray[Any, Any]
API = "jax.nn.dot_product_attention"


def _to_native(x: Array, dtype: str) -> Any:
    """`(B, heads, length, D)` -> jax's `(B, length, heads, D)` in precision `dtype`."""
    return to_jax(np.swapaxes(np.asarray(x), 1, 2), dtype)


def _from_native(x: Any, dtype: str) -> Array:
    """jax's `(B, length, heads, D)` -> `(B, heads, length, D)` NumPy."""
    return np.ascontiguousarray(np.swapaxes(to_numpy(x, dtype), 1, 2))


class JaxDPA(JaxConventions, KernelAdapterBase):
    """`jax.nn.dot_product_attention` with `implementation=None`, jitted once per flag set; the
    conventions of current models (`convention_attention`) through its own arguments
    (adapters/jax_dpa_conventions.py)."""

    name = API
    framework = "jax"
    api = API
    distributions = ("jax", "jaxlib")
    modules = ("jax",)
    process_group = PROCESS_GROUP
    @classmethod
    def _capabilities(cls) -> Capabilities:
        """From the installed jax's release (package metadata) and, for the conventions, the signature of
        `jax.nn.dot_product_attention` (imports jax)."""
        # fewer kv heads than query heads from jax 0.4.32 on (jax-ml/jax#22477; measured: 0.4.31
        # raises "query shape should be [B, -1, N_kv, H]")
        gqa = not release_in("jax", "<0.4.32")
        # float16 raises under jit on the CPU (`_jax_common.DPA_FLOAT16_LIMIT`)
        limits = (DPA_FLOAT16_LIMIT,) if dpa_float16_fails() else ()
        # float64 at float32 accuracy: its softmax (`_jax_common.DPA_FLOAT64_PRECISION`)
        precision = (DPA_FLOAT64_PRECISION,) if dpa_float64_in_float32() else ()
        return Capabilities(
            level="kernel", dtypes=frozenset(FLOAT_DTYPES) - {lim for lim, _ in limits}, limits=limits,
            precision=precision, causal=True, causal_alignment="top_left", causal_with_mask=True,
            returns_weights=False, gqa=gqa, kdim_vdim=True, value_dim=False, head_dim=True,
            output_dim=True, bias_free=True, custom_scale=True, weight_round_trip=False, gradients=True,
            conventions=jax_dpa_conventions(),
            notes="value must have key's shape (D_v = D_k); projections by the reference"
            + ("" if gqa else "; this jax requires as many kv heads as query heads (GQA came in 0.4.32, "
               "jax-ml/jax#22477)"),
        )

    def __init__(self) -> None:
        self._forward = JitCache(self._build_forward)
        self._vjp = JitCache(self._build_vjp)

    @staticmethod
    def _build_forward(causal: bool, scale: float | None) -> Any:
        def forward(q: Any, k: Any, v: Any, mask: Any) -> Any:
            return jax().nn.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=causal,
                                                  implementation=None)

        return forward

    def _build_vjp(self, causal: bool, scale: float | None) -> Any:
        forward = self._build_forward(causal, scale)

        def vjp(q: Any, k: Any, v: Any, mask: Any, cotangent: Any) -> Any:
            return jax().vjp(lambda q, k, v: forward(q, k, v, mask), q, k, v)[1](cotangent)

        return vjp

    @staticmethod
    def _check(k: Array, v: Array) -> None:
        if np.shape(v) != np.shape(k):
            raise invalid("v", f"the shape of k {np.shape(k)} ({API} takes value of key's shape, D_v = D_k)",
                          np.shape(v))

    def dot_product_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                              scale: float | None, dtype: str) -> Array:
        """q `(B, H, T, D)`, k and v `(B, H_kv, S, D)`, mask `(B, H, T, S)` -> `(B, H, T, D)`."""
        self._check(k, v)
        fn = self._forward(bool(causal), scale)
        out = fn(_to_native(q, dtype), _to_native(k, dtype), _to_native(v, dtype),
                 None if mask is None else np.asarray(mask))
        return _from_native(out, dtype)

    def native_mask_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                              native_mask: Array) -> AttentionOutputs:
        """The layer with `native_mask (B, T, S)` handed to jax's `mask` as `(B, 1, T, S)`, dtype unchanged."""
        return self.kernel_layer(inputs, weights, dtype, np.asarray(native_mask)[:, None])

    def dot_product_attention_vjp(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                                  scale: float | None, dtype: str, cotangent: Array) -> dict[str, Array]:
        """`jax.vjp` with respect to q, k and v for `cotangent (B, H, T, D)`, in the contract's layout."""
        self._check(k, v)
        fn = self._vjp(bool(causal), scale)
        dq, dk, dv = fn(_to_native(q, dtype), _to_native(k, dtype), _to_native(v, dtype),
                        None if mask is None else np.asarray(mask), _to_native(round_to(cotangent, dtype), dtype))
        return {"q": _from_native(dq, dtype), "k": _from_native(dk, dtype), "v": _from_native(dv, dtype)}
