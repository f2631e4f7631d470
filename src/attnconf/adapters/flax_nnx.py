"""Flax NNX `MultiHeadAttention` behind the contract, on both of its code paths.

Canonical -> native (`_flax_common`: NNX's `LinearGeneral` kernels are einsum layout already)::

    query_kernel (E_q, H, D)     -> module.query.kernel;  key_kernel (E_kv, H_kv, D) -> module.key.kernel
    value_kernel (E_kv, H_kv, D) -> module.value.kernel;  output_kernel (H, D, E_out) -> module.out.kernel
    biases (H, D) / (H_kv, D) / (E_out,) -> module.<projection>.bias

The layer is `MultiHeadAttention(num_heads=H, in_features=E_q, qkv_features=H * D,
out_features=E_out, num_kv_heads=H_kv, in_kv_features=E_kv, use_bias=..., dtype=p,
param_dtype=p, decode=False)` for precision `p`, called as
``module(query, key, value, mask=mask[:, None], is_causal=causal, deterministic=True)``.

* Mask: `(B, T, S)` bool, True = may attend -> `mask (B, 1, T, S)`, the same polarity.
* Causal: the native `is_causal` flag.
* Releases: `in_kv_features`, `num_kv_heads` and `is_causal` came over Flax 0.10-0.12; `takes()`
  reads which ones the installed release has from the layer's signatures, and the capabilities
  (computed on first read) follow it.
* Grouped kv heads: `num_kv_heads`. Key and value share one input width (`in_kv_features`),
  so E_k = E_v; one head width, so D_v = D_k; no scale argument.
* Two code paths: without `sow_weights` (and without dropout) NNX calls the fused
  `jax.nn.dot_product_attention`; with `sow_weights=True` it computes the weights itself and
  stores them as `nnx.Intermediate`. `flax.nnx.MultiHeadAttention` is the first path (the
  default call), `flax.nnx.MultiHeadAttention[weights]` the second, so neither hides the other.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from attnconf.adapters import _flax_common as fc
from attnconf.adapters._jax_common import (
    DPA_FLOAT16_LIMIT,
    DPA_FLOAT64_PRECISION,
    PROCESS_GROUP,
    JitCache,
    dpa_float16_fails,
    dpa_float64_in_float32,
    jax,
    jax_dtype,
    to_jax,
    to_numpy,
    tree_to_numpy,
)
from attnconf.adapters.support import AdapterBase, release_in
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.reference._checks import FLOAT_DTYPES, invalid
from attnconf.reference.precision import round_to

Array = np.ndarray[Any, Any]
API = "flax.nnx.MultiHeadAttention"


def _causal(inputs: AttentionInputs) -> bool:
    """The `is_causal` flag for `inputs`; NNX has no scale argument."""
    if inputs.scale is not None:
        raise invalid("scale", f"None ({API} fixes the scale at 1/sqrt(D))", inputs.scale)
    return bool(inputs.causal)


#: The arguments of NNX's layer that came in known releases, by the method that takes them:
#: `in_kv_features` (0.10.7 has it, 0.10.2 not), `num_kv_heads` (GQA in NNX: google/flax#5177;
#: 0.12.8 has it, 0.10.7 not) and the call's `is_causal` (0.12.8 has it, 0.10.7 not); measured in
#: the tox matrix.
RELEASED_ARGUMENTS = {"in_kv_features": "__init__", "num_kv_heads": "__init__", "is_causal": "__call__"}


def takes() -> dict[str, bool]:
    """Which of `RELEASED_ARGUMENTS` the installed Flax's `nnx.MultiHeadAttention` takes, read from
    the signatures of its constructor and call (`inspect.signature`; this imports Flax). Every name
    counts as present where Flax cannot be imported: the adapter cannot run there anyway."""
    try:
        from flax import nnx
    except ImportError:
        return dict.fromkeys(RELEASED_ARGUMENTS, True)
    parameters = {m: inspect.signature(getattr(nnx.MultiHeadAttention, m)).parameters
                  for m in set(RELEASED_ARGUMENTS.values())}
    return {name: name in parameters[method] for name, method in RELEASED_ARGUMENTS.items()}


def _replace_by_pure_dict(state: Any, params: dict[str, Any]) -> None:
    """`nnx.replace_by_pure_dict(state, params)`; Flax 0.10.2 has only the `State` method of that
    name, which later releases deprecate in favour of the function."""
    from flax import nnx

    replace = getattr(nnx, "replace_by_pure_dict", None)
    if replace is not None:
        replace(state, params)
    else:
        state.replace_by_pure_dict(params)


def _capabilities_of(sow: bool) -> Capabilities:
    """What the layer takes on the default call (`sow` False) or the weights path, for the installed Flax."""
    present = takes()
    older = "; ".join(f"this Flax has no {n}" for n, there in present.items() if not there)
    causal = present["is_causal"]
    path = ("sow_weights=True: NNX's dot_product_attention_weights" if sow
            else "default call: fused jax.nn.dot_product_attention")
    # The default call delegates to jax.nn.dot_product_attention from Flax 0.10.3 on (google/flax#4649;
    # the tox matrix: 0.10.2 does not delegate), and so cannot run float16 under jit on the CPU.
    limits = () if sow or not (release_in("flax", ">0.10.2") and dpa_float16_fails()) else (
        ("float16", "the default call delegates to jax.nn.dot_product_attention (google/flax#4649): "
         + DPA_FLOAT16_LIMIT[1]),)
    delegates = not sow and release_in("flax", ">0.10.2")
    precision = ((DPA_FLOAT64_PRECISION[0], DPA_FLOAT64_PRECISION[1],
                  "the default call delegates to jax.nn.dot_product_attention (google/flax#4649): "
                  + DPA_FLOAT64_PRECISION[2]),) if delegates and dpa_float64_in_float32() else ()
    return Capabilities(
        level="layer", dtypes=frozenset(FLOAT_DTYPES) - {lim for lim, _ in limits}, limits=limits, causal=causal,
        precision=precision,
        causal_alignment="top_left" if causal else None, causal_with_mask=causal,
        returns_weights=sow, gqa=present["num_kv_heads"], kdim_vdim=False, value_dim=False, head_dim=True,
        output_dim=True, bias_free=True, custom_scale=False, weight_round_trip=True, gradients=True,
        notes=f"{path}; one in_kv_features for key and value; one use_bias flag" + (f"; {older}" if older else ""),
    )


class FlaxNnxMHA(AdapterBase):
    """`flax.nnx.MultiHeadAttention` called the default way (the fused kernel path)."""

    name = API
    framework = "flax"
    api = API
    distributions = ("flax", "jax", "jaxlib")
    modules = ("flax", "jax")
    process_group = PROCESS_GROUP
    sow_weights = False

    @classmethod
    def _capabilities(cls) -> Capabilities:
        return _capabilities_of(sow=cls.sow_weights)

    def __init__(self) -> None:
        self._templates: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._forward = JitCache(self._build_forward)
        self._vjp = JitCache(self._build_vjp)

    # -- the native layer --------------------------------------------------------------------

    def _layer(self, weights: AttentionWeights, dtype: str, rate: float = 0.0) -> tuple[Any, ...]:
        """The static configuration of the layer for `weights`, checked against what NNX takes."""
        if weights.key_dim != weights.value_dim:
            raise invalid("value_kernel", f"E_v = E_k={weights.key_dim} ({API} has one in_kv_features)",
                          f"E_v={weights.value_dim}")
        fc.check_head_widths(weights, API)
        return (weights.num_heads, weights.num_kv_heads, weights.key_head_dim, weights.query_dim,
                weights.key_dim, weights.output_dim, fc.use_bias(weights, API), dtype, rate)

    def _module(self, H: int, H_kv: int, D: int, E_q: int, E_kv: int, E_out: int, bias: bool,
                dtype: str, rate: float) -> Any:
        from flax import nnx

        jd = jax_dtype(dtype)
        # named only where they differ from their defaults, so that releases without them build
        # every layer they can (the capabilities keep the others away)
        widths = {} if E_kv == E_q else {"in_kv_features": E_kv}
        heads = {} if H_kv == H else {"num_kv_heads": H_kv}
        return nnx.MultiHeadAttention(
            num_heads=H, in_features=E_q, qkv_features=H * D, out_features=E_out, **widths, **heads,
            use_bias=bias, dtype=jd, param_dtype=jd, dropout_rate=rate,
            decode=False, rngs=nnx.Rngs(0),
            # the canonical weights replace every parameter; zeros spare a compiled random
            # initializer per shape (a third of a cold run's XLA compile time)
            kernel_init=nnx.initializers.zeros_init(),
        )

    def _template(self, layer: tuple[Any, ...]) -> tuple[Any, Any]:
        """(graphdef, abstract state) of the layer, once per configuration.

        Built under `nnx.eval_shape`: the state holds shapes and dtypes only, and the jitted
        call replaces every leaf by the canonical weights (a leaf left abstract fails that call),
        so building the template runs and compiles no initializer."""
        if layer not in self._templates:
            from flax import nnx

            self._templates[layer] = nnx.split(nnx.eval_shape(lambda: self._module(*layer)))
        return self._templates[layer]

    def _call(self, layer: tuple[Any, ...], causal: bool, sow: bool) -> Any:
        """`f(params, q, k, v, mask) -> (output, weights or None)` with params a pure dict."""
        from flax import nnx

        graphdef, template = self._template(layer)

        def f(params: Any, q: Any, k: Any, v: Any, mask: Any) -> tuple[Any, Any]:
            state = jax().tree.map(lambda x: x, template)  # fresh Variables; the template stays
            _replace_by_pure_dict(state, params)
            module = nnx.merge(graphdef, state)
            flag = {"is_causal": True} if causal else {}  # releases without the flag take no causal tests
            out = module(q, k, v, mask=mask, **flag, deterministic=True, sow_weights=sow)
            attn = nnx.pop(module, nnx.Intermediate).to_pure_dict()["attention_weights"][0] if sow else None
            return out, attn

        return f

    def _build_forward(self, layer: tuple[Any, ...], causal: bool) -> Any:
        return self._call(layer, causal, self.sow_weights)

    def _build_vjp(self, layer: tuple[Any, ...], causal: bool) -> Any:
        f = self._call(layer, causal, self.sow_weights)

        def vjp(params: Any, q: Any, k: Any, v: Any, mask: Any, cotangent: Any) -> Any:
            return jax().vjp(lambda p, q, k, v: f(p, q, k, v, mask)[0], params, q, k, v)[1](cotangent)

        return vjp

    @staticmethod
    def _params(weights: AttentionWeights, dtype: str) -> dict[str, Any]:
        return fc.to_flax({n: to_jax(a, dtype) for n, a in weights.arrays().items()})

    def _run(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, mask: Array | None,
             rate: float = 0.0) -> AttentionOutputs:
        fn = self._forward(self._layer(weights, dtype, rate), _causal(inputs))
        native_mask = None if mask is None else np.asarray(mask)[:, None]
        out, attn = fn(self._params(weights, dtype), to_jax(inputs.query, dtype), to_jax(inputs.key, dtype),
                       to_jax(inputs.value, dtype), native_mask)
        return AttentionOutputs(output=to_numpy(out, dtype), weights=None if attn is None else to_numpy(attn, dtype))

    # -- the contract --------------------------------------------------------------------------

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        return self._run(inputs, weights, dtype, inputs.mask)

    def native_mask_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                              native_mask: Array) -> AttentionOutputs:
        """`native_mask (B, T, S)` handed to NNX's `mask` as `(B, 1, T, S)`, dtype unchanged."""
        return self._run(inputs, weights, dtype, native_mask)

    def with_dropout(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                     rate: float) -> AttentionOutputs:
        """The layer built with `dropout_rate=rate`, called with `deterministic=True`."""
        return self._run(inputs, weights, dtype, inputs.mask, rate)

    def round_trip_weights(self, weights: AttentionWeights, dtype: str) -> AttentionWeights:
        """Canonical -> the layer's `nnx.Param`s (shapes checked) -> read back from the layer."""
        from flax import nnx

        graphdef, template = self._template(self._layer(weights, dtype))
        state = jax().tree.map(lambda x: x, template)  # fresh Variables; the template stays
        params = self._params(weights, dtype)
        fc.check_params(nnx.state(nnx.merge(graphdef, template), nnx.Param).to_pure_dict(), params, API)
        _replace_by_pure_dict(state, params)
        module = nnx.merge(graphdef, state)
        back = fc.from_flax(nnx.state(module, nnx.Param).to_pure_dict())
        return AttentionWeights(**{n: to_numpy(a, dtype) for n, a in back.items()})

    def multi_head_attention_vjp(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                                 cotangent: Array) -> dict[str, Array]:
        """`jax.vjp` of the layer with respect to query, key, value and every present weight."""
        fn = self._vjp(self._layer(weights, dtype), _causal(inputs))
        mask = None if inputs.mask is None else np.asarray(inputs.mask)[:, None]
        g_params, dq, dk, dv = fn(self._params(weights, dtype), to_jax(inputs.query, dtype),
                                  to_jax(inputs.key, dtype), to_jax(inputs.value, dtype), mask,
                                  to_jax(round_to(cotangent, dtype), dtype))
        grads = fc.from_flax(tree_to_numpy(g_params, dtype))
        return {"query": to_numpy(dq, dtype), "key": to_numpy(dk, dtype), "value": to_numpy(dv, dtype), **grads}


class FlaxNnxMHAWeights(FlaxNnxMHA):
    """`flax.nnx.MultiHeadAttention` called with `sow_weights=True`: NNX's own weights path."""

    name = f"{API}[weights]"
    sow_weights = True
