"""`mlx.core.fast.scaled_dot_product_attention`, the kernel, behind the contract.

The layouts match: q `(B, H, T, D_k)`, k `(B, H_kv, S, D_k)`, v `(B, H_kv, S, D_v)`, output
`(B, H, T, D_v)`; grouped and single kv heads are native (k and v are not tiled: MLX's docs).
MLX has one `mask` argument, which takes a boolean array (True = takes part, the spec's polarity),
an additive array, or the string ``"causal"``:

    mask (B, H, T, S) bool  -> mask (B, H, T, S) bool   unchanged
    causal                  -> mask="causal"            lower-right aligned (MLX docs; measured:
                                                        bottom_right, the last query sees the last key;
                                                        before 0.30.5 top-left when T > S, mlx#2967)
    mask and causal         -> refused (one `mask` argument: causal_with_mask=False)
    scale                   -> scale                    a required argument: None passes 1/sqrt(D_k),
                                                        the value MLX's docs give as the typical one

The layer (`multi_head_attention`) is the reference's projections around the kernel
(`KernelAdapterBase`); its gradients (`multi_head_attention_vjp`) run the same projections in MLX
so that `mx.vjp` sees the whole layer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from attnconf.adapters import _mlx_common as common
from attnconf.adapters.support import KernelAdapterBase, release_in
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.reference.precision import round_to

Array = np.ndarray[Any, Any]
API = "mlx.core.fast.scaled_dot_product_attention"


def mlx_mask(mask: Array | None, causal: bool, dtype: str) -> Any:
    """MLX's `mask` argument for a boolean (or additive float) NumPy `mask` and the causal flag."""
    if mask is not None and causal:
        raise NotImplementedError(
            f"{API} takes either a mask array or mask='causal' (one `mask` argument), "
            "received both a mask and causal=True"
        )
    if causal:
        return "causal"
    return None if mask is None else common.to_mlx(np.asarray(mask), dtype)


def sdpa(q: Any, k: Any, v: Any, mask: Any, scale: float | None) -> Any:
    """The MLX call on arrays `(B, H, T, D_k)`, `(B, H_kv, S, D_k)`, `(B, H_kv, S, D_v)`."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return common.mx().fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


class MlxSDPA(KernelAdapterBase):
    """`mx.fast.scaled_dot_product_attention(q, k, v, scale=..., mask=...)` on the CPU."""

    name = API
    framework = "mlx"
    api = API
    distributions = common.DISTRIBUTIONS
    modules = ("mlx",)
    process_group = common.PROCESS_GROUP

    @classmethod
    def _capabilities(cls) -> Capabilities:
        """From the installed mlx's release (package metadata; nothing is imported)."""
        # mask="causal" with T > S: top-left (the offset S - T clamped at 0) before 0.30.5, bottom-right from
        # 0.30.5 (ml-explore/mlx#2967); measured on 0.27.1-0.30.4 and 0.30.5-0.32.4. T <= S: bottom-right on
        # all. The chapters skip causal T > S under bottom-right (fully masked rows), so both conform; the
        # audit's causal_alignment scenario reports the older releases as inconsistent.
        clamped = release_in("mlx", "<0.30.5")
        return Capabilities(
            level="kernel",
            causal=True,
            causal_alignment="bottom_right",
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
            precision=(common.FLOAT64_PRECISION,),
            notes="layer = reference projections around the kernel; one mask argument: an array or 'causal' "
            "(bottom-right), not both; float64 attention computed in float32"
            + (
                "; this mlx aligns 'causal' top-left when T > S (bottom-right from 0.30.5, ml-explore/mlx#2967)"
                if clamped
                else ""
            ),
        )

    def dot_product_attention(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool, scale: float | None, dtype: str
    ) -> Array:
        m = mlx_mask(mask, causal, dtype)
        out = sdpa(*(common.to_mlx(a, dtype) for a in (q, k, v)), m, scale)
        return common.to_numpy(out, dtype)

    def native_mask_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, native_mask: Array
    ) -> AttentionOutputs:
        """The layer with `native_mask (B, T, S)` handed to MLX's `mask` as `(B, 1, T, S)` (bool or float)."""
        return self.kernel_layer(inputs, weights, dtype, np.asarray(native_mask)[:, None])

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
        """`mx.vjp` of the kernel with respect to q, k, v for `cotangent (B, H, T, D_v)`."""
        m = mlx_mask(mask, causal, dtype)
        primals = [common.to_mlx(a, dtype) for a in (q, k, v)]
        _, grads = common.mx().vjp(
            lambda q_, k_, v_: sdpa(q_, k_, v_, m, scale), primals, [common.to_mlx(round_to(cotangent, dtype), dtype)]
        )
        return {n: common.to_numpy(g, dtype) for n, g in zip(("q", "k", "v"), grads, strict=True)}

    def multi_head_attention_vjp(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, cotangent: Array
    ) -> dict[str, Array]:
        """Gradients of the layer (MLX projections around the kernel) in the canonical layout."""
        m_x = common.mx()
        names = ["query", "key", "value", *weights.arrays()]
        arrays = [getattr(inputs, n) for n in names[:3]] + list(weights.arrays().values())
        mask = None if inputs.mask is None else inputs.mask[:, None]
        m = mlx_mask(mask, inputs.causal, dtype)

        def layer(*xs: Any) -> Any:
            p = dict(zip(names, xs, strict=True))

            def heads(n: str) -> Any:
                y = m_x.einsum("bne,ehd->bhnd", p[n], p[f"{n}_kernel"])
                return y if f"{n}_bias" not in p else y + p[f"{n}_bias"][None, :, None, :]

            o = sdpa(heads("query"), heads("key"), heads("value"), m, inputs.scale)
            out = m_x.einsum("bhtd,hde->bte", o, p["output_kernel"])
            return out if "output_bias" not in p else out + p["output_bias"]

        _, grads = m_x.vjp(
            layer, [common.to_mlx(a, dtype) for a in arrays], [common.to_mlx(round_to(cotangent, dtype), dtype)]
        )
        return {n: common.to_numpy(g, dtype) for n, g in zip(names, grads, strict=True)}
