"""Flax linen `MultiHeadDotProductAttention` behind the contract.

Canonical -> native (`_flax_common`: linen's `DenseGeneral` kernels are einsum layout already)::

    query_kernel (E_q, H, D) -> params["query"]["kernel"];  key_kernel (E_k, H, D) -> ["key"]
    value_kernel (E_v, H, D) -> params["value"]["kernel"];  output_kernel (H, D, E_out) -> ["out"]
    biases (H, D) / (E_out,) -> params[...]["bias"]

The layer is `MultiHeadDotProductAttention(num_heads=H, qkv_features=H * D, out_features=E_out,
use_bias=..., dtype=p, param_dtype=p)` for precision `p`, called as
``apply({"params": params}, query, key, value, mask=mask[:, None], deterministic=True)``.
Key and value take their own widths (the kernels' input axes are inferred from the inputs).

* Mask: `(B, T, S)` bool, True = may attend -> `mask (B, 1, T, S)`: linen masks out False, the
  same polarity, so nothing is converted.
* No causal flag: linen users build the causal mask themselves (`nn.make_causal_mask`) and
  pass it as the mask, so the layer declares causal=False rather than fake one.
* No scale argument (it is fixed at `1/sqrt(D)` unless `attention_fn` is replaced), no grouped
  kv heads, D_v = D_k (one `qkv_features`).
* Attention weights: `sow_weights=True` stores them in the "intermediates" collection; sowing
  does not change the computation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters import _flax_common as fc
from attnconf.adapters._jax_common import PROCESS_GROUP, JitCache, jax, jax_dtype, to_jax, to_numpy, tree_to_numpy
from attnconf.adapters.support import AdapterBase
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.reference._checks import invalid
from attnconf.reference.precision import round_to

Array = np.ndarray[Any, Any]
API = "flax.linen.MultiHeadDotProductAttention"


class FlaxLinenMHA(AdapterBase):
    """`flax.linen.MultiHeadDotProductAttention`, jitted once per configuration."""

    name = API
    framework = "flax"
    api = API
    distributions = ("flax", "jax", "jaxlib")
    modules = ("flax", "jax")
    process_group = PROCESS_GROUP
    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="layer", causal=False, causal_alignment=None, causal_with_mask=False,
            returns_weights=True, gqa=False, kdim_vdim=True, value_dim=False, head_dim=True,
            output_dim=True, bias_free=True, custom_scale=False, weight_round_trip=True, gradients=True,
            notes="no causal flag (causal masks are built with nn.make_causal_mask); one use_bias flag; "
                  "weights via sow_weights",
        )

    def __init__(self) -> None:
        self._forward = JitCache(self._build_forward)
        self._vjp = JitCache(self._build_vjp)

    # -- the native layer --------------------------------------------------------------------

    def _layer(self, weights: AttentionWeights, dtype: str, rate: float = 0.0) -> tuple[Any, ...]:
        """The static configuration of the layer for `weights`, checked against what linen takes."""
        if weights.num_kv_heads != weights.num_heads:
            raise invalid("key_kernel", f"H_kv = H={weights.num_heads} ({API} has no grouped kv heads)",
                          f"H_kv={weights.num_kv_heads}")
        fc.check_head_widths(weights, API)
        return (weights.num_heads, weights.key_head_dim, weights.output_dim, fc.use_bias(weights, API), dtype, rate)

    @staticmethod
    def _module(H: int, D: int, E_out: int, bias: bool, dtype: str, rate: float) -> Any:
        import flax.linen as nn

        jd = jax_dtype(dtype)
        return nn.MultiHeadDotProductAttention(num_heads=H, qkv_features=H * D, out_features=E_out,
                                               use_bias=bias, dtype=jd, param_dtype=jd, dropout_rate=rate)

    def _build_forward(self, *layer: Any) -> Any:
        module = self._module(*layer)

        def forward(params: Any, q: Any, k: Any, v: Any, mask: Any) -> tuple[Any, Any]:
            out, state = module.apply({"params": params}, q, k, v, mask=mask, deterministic=True,
                                      sow_weights=True, mutable=["intermediates"])
            return out, state["intermediates"]["attention_weights"][0]

        return forward

    def _build_vjp(self, *layer: Any) -> Any:
        module = self._module(*layer)

        def vjp(params: Any, q: Any, k: Any, v: Any, mask: Any, cotangent: Any) -> Any:
            def f(p: Any, q: Any, k: Any, v: Any) -> Any:
                return module.apply({"params": p}, q, k, v, mask=mask, deterministic=True)

            return jax().vjp(f, params, q, k, v)[1](cotangent)

        return vjp

    @staticmethod
    def _params(weights: AttentionWeights, dtype: str) -> dict[str, Any]:
        return fc.to_flax({n: to_jax(a, dtype) for n, a in weights.arrays().items()})

    def _run(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, mask: Array | None,
             rate: float = 0.0) -> AttentionOutputs:
        fn = self._forward(*self._layer(weights, dtype, rate))
        native_mask = None if mask is None else np.asarray(mask)[:, None]
        out, attn = fn(self._params(weights, dtype), to_jax(inputs.query, dtype), to_jax(inputs.key, dtype),
                       to_jax(inputs.value, dtype), native_mask)
        return AttentionOutputs(output=to_numpy(out, dtype), weights=to_numpy(attn, dtype))

    # -- the contract --------------------------------------------------------------------------

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        if inputs.causal:
            raise invalid("causal", f"False ({API} has no causal flag)", True)
        if inputs.scale is not None:
            raise invalid("scale", f"None ({API} fixes the scale at 1/sqrt(D))", inputs.scale)
        return self._run(inputs, weights, dtype, inputs.mask)

    def native_mask_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                              native_mask: Array) -> AttentionOutputs:
        """`native_mask (B, T, S)` handed to linen's `mask` as `(B, 1, T, S)`, dtype unchanged."""
        return self._run(inputs, weights, dtype, native_mask)

    def with_dropout(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                     rate: float) -> AttentionOutputs:
        """The layer built with `dropout_rate=rate`, called with `deterministic=True`."""
        return self._run(inputs, weights, dtype, inputs.mask, rate)

    def round_trip_weights(self, weights: AttentionWeights, dtype: str) -> AttentionWeights:
        """Canonical -> params checked against `module.init`'s -> bound module's variables -> canonical."""
        module = self._module(*self._layer(weights, dtype))
        j = jax()
        widths = (weights.query_dim, weights.key_dim, weights.value_dim)
        dummy = [j.ShapeDtypeStruct((1, 1, e), jax_dtype(dtype)) for e in widths]
        expected = j.eval_shape(module.init, j.random.key(0), *dummy)["params"]
        params = self._params(weights, dtype)
        fc.check_params(expected, params, f"{API}.init")
        back = fc.from_flax(module.bind({"params": params}).variables["params"])
        return AttentionWeights(**{n: to_numpy(a, dtype) for n, a in back.items()})

    def multi_head_attention_vjp(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                                 cotangent: Array) -> dict[str, Array]:
        """`jax.vjp` of the layer with respect to query, key, value and every present weight."""
        if inputs.causal or inputs.scale is not None:
            raise invalid("inputs", f"no causal flag and no scale ({API} takes neither)",
                          f"causal={inputs.causal}, scale={inputs.scale}")
        fn = self._vjp(*self._layer(weights, dtype))
        mask = None if inputs.mask is None else np.asarray(inputs.mask)[:, None]
        g_params, dq, dk, dv = fn(self._params(weights, dtype), to_jax(inputs.query, dtype),
                                  to_jax(inputs.key, dtype), to_jax(inputs.value, dtype), mask,
                                  to_jax(round_to(cotangent, dtype), dtype))
        grads = fc.from_flax(tree_to_numpy(g_params, dtype))
        return {"query": to_numpy(dq, dtype), "key": to_numpy(dk, dtype), "value": to_numpy(dv, dtype), **grads}
