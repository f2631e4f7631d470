"""`mlx.nn.MultiHeadAttention` behind the contract (a layer adapter, on MLX's CPU).

Canonical -> MLX. The layer has four `mlx.nn.Linear` projections; a Linear's weight is
`(out, in)` and computes ``x @ weight.T + bias``. Feature `h * D + d` of a projection is head `h`,
component `d` (`mx.unflatten(..., (num_heads, -1))`). The layer is built as
``MultiHeadAttention(dims=H * D_k, num_heads=H, query_input_dims=E_q, key_input_dims=E_k,
value_input_dims=E_v, value_dims=H * D_v, value_output_dims=E_out, bias=...)``:

    query_proj.weight (H*D_k, E_q)  = query_kernel  (E_q, H, D_k).reshape(E_q, H*D_k).T
    key_proj.weight   (H*D_k, E_k)  = key_kernel    (E_k, H, D_k).reshape(E_k, H*D_k).T
    value_proj.weight (H*D_v, E_v)  = value_kernel  (E_v, H, D_v).reshape(E_v, H*D_v).T
    out_proj.weight   (E_out, H*D_v) = output_kernel (H, D_v, E_out).reshape(H*D_v, E_out).T
    {query,key,value}_proj.bias     = {query,key,value}_bias (H, D).reshape(H*D)
    out_proj.bias     (E_out,)      = output_bias

No kv heads (H_kv = H); one `bias` switch for all four projections (all four biases or none); the
logit scale is fixed at 1/sqrt(D_k). Mask: the layer documents an additive mask that broadcasts to
`(B, H, T, S)` with "-inf or very large negative numbers" where a key is hidden; the canonical
boolean mask `(B, T, S)` becomes `(B, 1, T, S)` holding 0 (may attend) or `mx.finfo(dtype).min`,
the value of MLX's own `MultiHeadAttention.create_additive_causal_mask`. No causal flag: the layer's
only causal helper is that square `(N, N)` mask, so causal attention is left to the kernel adapter.
No attention dropout. Returns no weights. Before mlx 0.29.3 a biased layer runs in float32 only
(`_mlx_common.ADDMM_LIMIT`); the adapter refuses the other dtypes with that reason
(NotImplementedError) rather than call mlx, whose error aborts the process on 0.27.1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters import _mlx_common as common
from attnconf.adapters.support import AdapterBase, one_bias_switch, release_in
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.reference._checks import FLOAT_DTYPES, invalid
from attnconf.reference.precision import round_to

Array = np.ndarray[Any, Any]
API = "mlx.nn.MultiHeadAttention"

_PROJ = {"query": "query_proj", "key": "key_proj", "value": "value_proj", "output": "out_proj"}


def to_native(w: AttentionWeights) -> dict[str, Array]:
    """Canonical weights -> MLX parameters by dotted name (shapes in the module docstring)."""
    if w.num_kv_heads != w.num_heads:
        raise invalid("key_kernel", f"H_kv = H = {w.num_heads} ({API} has no kv heads)", w.num_kv_heads)
    out: dict[str, Array] = {}
    for n in ("query", "key", "value"):
        kernel = getattr(w, f"{n}_kernel")
        out[f"{_PROJ[n]}.weight"] = kernel.reshape(kernel.shape[0], -1).T
        bias = getattr(w, f"{n}_bias")
        if bias is not None:
            out[f"{_PROJ[n]}.bias"] = bias.reshape(-1)
    out["out_proj.weight"] = w.output_kernel.reshape(-1, w.output_dim).T
    if w.output_bias is not None:
        out["out_proj.bias"] = w.output_bias
    return out


def from_native(p: dict[str, Array], num_heads: int) -> AttentionWeights:
    """MLX parameters by dotted name -> canonical weights (the inverse of `to_native`)."""
    H = num_heads
    w: dict[str, Array] = {}
    for n in ("query", "key", "value"):
        weight = p[f"{_PROJ[n]}.weight"]  # (H*D, E_in)
        w[f"{n}_kernel"] = weight.T.reshape(weight.shape[1], H, -1)
        if f"{_PROJ[n]}.bias" in p:
            w[f"{n}_bias"] = p[f"{_PROJ[n]}.bias"].reshape(H, -1)
    out = p["out_proj.weight"]  # (E_out, H*D_v)
    w["output_kernel"] = out.T.reshape(H, -1, out.shape[0])
    if "out_proj.bias" in p:
        w["output_bias"] = p["out_proj.bias"]
    return AttentionWeights(**w)


class MlxMHA(AdapterBase):
    """`mlx.nn.MultiHeadAttention(...)(queries, keys, values, mask)` on the CPU, one layer per shape."""

    name = API
    framework = "mlx"
    api = API
    distributions = common.DISTRIBUTIONS
    modules = ("mlx",)
    process_group = common.PROCESS_GROUP

    @classmethod
    def _capabilities(cls) -> Capabilities:
        """From the installed mlx's release (package metadata; nothing is imported)."""
        # the biased projections raise for every dtype but float32 before mlx 0.29.3 (ADDMM_LIMIT)
        old = release_in("mlx", common.ADDMM_FLOAT32_ONLY)
        limited = ("float64", "float16", "bfloat16") if old else ()
        return Capabilities(
            dtypes=frozenset(FLOAT_DTYPES) - set(limited),
            limits=tuple((d, common.ADDMM_LIMIT) for d in limited),
            level="layer",
            causal=False,
            causal_alignment=None,
            causal_with_mask=False,
            returns_weights=False,
            gqa=False,
            mqa=False,
            kdim_vdim=True,
            value_dim=True,
            head_dim=True,
            output_dim=True,
            bias_free=True,
            custom_scale=False,
            weight_round_trip=True,
            gradients=True,
            precision=() if old else (common.FLOAT64_PRECISION,),
            notes="one bias switch (all four biases or none); additive mask (finfo.min where hidden); no causal "
            "flag, scale fixed at 1/sqrt(D_k); float64 attention computed in float32 (its SDPA kernel)",
        )

    def __init__(self) -> None:
        self._layers: dict[tuple[Any, ...], Any] = {}

    def _layer(self, w: AttentionWeights, dtype: str) -> Any:
        """The module for `w`'s shapes (cached per shape and dtype) with `w` loaded into it."""
        import mlx.nn as nn

        bias = one_bias_switch(w, API, "bias")
        limit = self.capabilities.limit(dtype)
        if bias and limit is not None:  # refused here: on mlx 0.27.1 the framework's error aborts the process
            raise NotImplementedError(f"{API} with bias=True in {dtype} on this mlx: {limit}")
        native = to_native(w)
        H = w.num_heads
        key = (w.query_dim, w.key_dim, w.value_dim, H, w.key_head_dim, w.value_head_dim, w.output_dim, bias, dtype)
        if key not in self._layers:
            common.mx()  # the CPU device, before the first array is made
            layer = nn.MultiHeadAttention(
                H * w.key_head_dim,
                H,
                query_input_dims=w.query_dim,
                key_input_dims=w.key_dim,
                value_input_dims=w.value_dim,
                value_dims=H * w.value_head_dim,
                value_output_dims=w.output_dim,
                bias=bias,
            )
            layer.eval()
            self._layers[key] = layer
        layer = self._layers[key]
        layer.load_weights([(n, common.to_mlx(a, dtype)) for n, a in native.items()], strict=True)
        return layer

    @staticmethod
    def _check(inputs: AttentionInputs) -> None:
        if inputs.scale is not None:
            raise invalid("scale", f"None ({API} fixes the scale at 1/sqrt(D_k))", inputs.scale)
        if inputs.causal:
            raise NotImplementedError(f"{API} has no causal flag (its create_additive_causal_mask is square only)")

    @staticmethod
    def _additive(mask: Array | None, dtype: str) -> Any:
        """The boolean mask `(B, T, S)` as MLX's additive mask `(B, 1, T, S)`: 0 or `finfo(dtype).min`."""
        if mask is None:
            return None
        m = common.mx()
        hidden = float(m.finfo(common.mlx_dtype(dtype)).min)
        return common.to_mlx(np.where(np.asarray(mask)[:, None], 0.0, hidden), dtype)

    def _run(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, mask: Any) -> AttentionOutputs:
        layer = self._layer(weights, dtype)
        q, k, v = (common.to_mlx(getattr(inputs, n), dtype) for n in ("query", "key", "value"))
        return AttentionOutputs(common.to_numpy(layer(q, k, v, mask=mask), dtype), None)

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        self._check(inputs)
        return self._run(inputs, weights, dtype, self._additive(inputs.mask, dtype))

    def native_mask_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, native_mask: Array
    ) -> AttentionOutputs:
        """`native_mask` `(B, T, S)` handed to the layer's `mask` as is (bool or float), as `(B, 1, T, S)`."""
        self._check(inputs)
        return self._run(inputs, weights, dtype, common.to_mlx(np.asarray(native_mask)[:, None], dtype))

    def round_trip_weights(self, weights: AttentionWeights, dtype: str) -> AttentionWeights:
        from mlx.utils import tree_flatten

        layer = self._layer(weights, dtype)
        params = {n: common.to_numpy(a, dtype) for n, a in tree_flatten(layer.parameters())}
        return from_native(params, weights.num_heads)

    def multi_head_attention_vjp(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, cotangent: Array
    ) -> dict[str, Array]:
        """`mx.vjp` of the layer with respect to its three inputs and its parameters, canonical layout."""
        from mlx.utils import tree_unflatten

        self._check(inputs)
        layer = self._layer(weights, dtype)
        names = list(to_native(weights))
        mask = self._additive(inputs.mask, dtype)

        def run(q: Any, k: Any, v: Any, *params: Any) -> Any:
            layer.update(tree_unflatten(list(zip(names, params, strict=True))))
            return layer(q, k, v, mask=mask)

        primals = [common.to_mlx(getattr(inputs, n), dtype) for n in ("query", "key", "value")]
        primals += [common.to_mlx(a, dtype) for a in to_native(weights).values()]
        _, grads = common.mx().vjp(run, primals, [common.to_mlx(round_to(cotangent, dtype), dtype)])
        native = {n: common.to_numpy(g, dtype) for n, g in zip(names, grads[3:], strict=True)}
        return {
            "query": common.to_numpy(grads[0], dtype),
            "key": common.to_numpy(grads[1], dtype),
            "value": common.to_numpy(grads[2], dtype),
            **from_native(native, weights.num_heads).arrays(),
        }
