"""Equinox `eqx.nn.MultiheadAttention` behind the attnconf adapter contract.

Canonical -> native. Equinox's `Linear` stores `weight (out, in)` and computes `weight @ x`;
the contract's kernels are einsum layout (`x @ W`) with the heads split out. Flattening the
head axes head-major (Equinox reshapes `(seq, H * D)` to `(seq, H, D)`) and transposing maps
one onto the other::

    query_kernel  (E_q, H, D_k)    -> query_proj.weight  (H * D_k, E_q)   reshape(E_q, H * D_k).T
    key_kernel    (E_k, H, D_k)    -> key_proj.weight    (H * D_k, E_k)   reshape(E_k, H * D_k).T
    value_kernel  (E_v, H, D_v)    -> value_proj.weight  (H * D_v, E_v)   reshape(E_v, H * D_v).T
    output_kernel (H, D_v, E_out)  -> output_proj.weight (E_out, H * D_v) reshape(H * D_v, E_out).T
    query_bias (H, D_k) -> query_proj.bias (H * D_k,)     key_bias (H, D_k) -> key_proj.bias
    value_bias (H, D_v) -> value_proj.bias (H * D_v,)     output_bias (E_out,) -> output_proj.bias

The layer is `MultiheadAttention(num_heads=H, query_size=E_q, key_size=E_k, value_size=E_v,
output_size=E_out, qk_size=D_k, vo_size=D_v, use_*_bias=..., dtype=p)`. It takes one example
`(T, E)` at a time, so the batch is `jax.vmap`-ed; the mask `(B, T, S)` goes to it per example as
`(T, S)` (True = may attend, Equinox's polarity too). No causal flag, no scale argument, no
grouped kv heads, no returned weights: the capabilities say so and those tests are skipped.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

import numpy as np

from attnconf.adapters import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities

Array = np.ndarray[Any, Any]
_PROJECTIONS = {"query": "query_proj", "key": "key_proj", "value": "value_proj", "output": "output_proj"}


def _jax() -> Any:
    """`jax`, imported on first use, with float64 enabled."""
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def _to_jax(x: Array, dtype: str) -> Any:
    """NumPy -> jax array in precision `dtype` (bfloat16 arrives as float32 holding bfloat16 values)."""
    import jax.numpy as jnp

    return jnp.asarray(np.asarray(x), dtype=getattr(jnp, dtype))


def _to_numpy(x: Any, dtype: str) -> Array:
    """jax array -> NumPy (bfloat16 leaves as float32, the contract's convention)."""
    return np.asarray(x, dtype=np.float32 if dtype == "bfloat16" else dtype)


class EquinoxMHA:
    """`equinox.nn.MultiheadAttention`, vmapped over the batch, jitted with `eqx.filter_jit`."""

    name = "equinox.nn.MultiheadAttention"
    framework = "equinox"
    api = "equinox.nn.MultiheadAttention"
    distributions = ("equinox", "jax", "jaxlib")
    # Run in a worker process of its own; JAX_PLATFORMS pins it to the CPU there.
    process_group = "equinox"
    environment = {"JAX_PLATFORMS": "cpu"}
    capabilities = Capabilities(
        level="layer", causal=False, causal_alignment=None, causal_with_mask=False,
        returns_weights=False, gqa=False, kdim_vdim=True, value_dim=True, head_dim=True,
        output_dim=True, bias_free=True, custom_scale=False, weight_round_trip=True, gradients=True,
        notes="unbatched layer, vmapped; a bias flag per projection",
    )
    # Declared departures from the spec would go here (see docs/writing-an-adapter.md), e.g.
    # {"adapter": name, "test": "test_agreement", "dtype": "float16", "versions": "equinox>=0.11,<0.12",
    #  "max_ratio": 6.0, "reason": "... measured worst 0.75 x the tolerance, bound 8x", "link": "https://..."}.
    expected_differences: list[dict[str, str]] = []

    def __init__(self) -> None:
        self._forward: Any = None
        self._vjp: Any = None

    @classmethod
    def missing(cls) -> str | None:
        """Why the adapter cannot run here, or None (imports nothing)."""
        for module in ("equinox", "jax"):
            if importlib.util.find_spec(module) is None:
                return f"module {module!r} is not installed"
        return None

    def versions(self) -> dict[str, str]:
        return {d: importlib.metadata.version(d) for d in self.distributions}

    # -- weights -----------------------------------------------------------------------------

    def _module(self, weights: AttentionWeights, dtype: str, rate: float = 0.0) -> Any:
        """The layer for `weights`: shapes from `eqx.filter_eval_shape` (no random init), arrays ours."""
        import equinox as eqx

        if weights.num_kv_heads != weights.num_heads:
            raise ValueError("Received an invalid value for argument `key_kernel`, expected H_kv = H "
                             f"(Equinox has no grouped kv heads). Received: H_kv={weights.num_kv_heads}")
        H, D_k, D_v = weights.num_heads, weights.key_head_dim, weights.value_head_dim
        jax = _jax()
        shape = eqx.filter_eval_shape(
            eqx.nn.MultiheadAttention, num_heads=H, query_size=weights.query_dim, key_size=weights.key_dim,
            value_size=weights.value_dim, output_size=weights.output_dim, qk_size=D_k, vo_size=D_v,
            use_query_bias=weights.query_bias is not None, use_key_bias=weights.key_bias is not None,
            use_value_bias=weights.value_bias is not None, use_output_bias=weights.output_bias is not None,
            dropout_p=rate, inference=True, dtype=getattr(jax.numpy, dtype), key=jax.random.key(0))
        native = {
            "query_proj.weight": weights.query_kernel.reshape(weights.query_dim, H * D_k).T,
            "key_proj.weight": weights.key_kernel.reshape(weights.key_dim, H * D_k).T,
            "value_proj.weight": weights.value_kernel.reshape(weights.value_dim, H * D_v).T,
            "output_proj.weight": weights.output_kernel.reshape(H * D_v, weights.output_dim).T,
        }
        for part, proj in _PROJECTIONS.items():
            bias = getattr(weights, f"{part}_bias")
            if bias is not None:
                native[f"{proj}.bias"] = bias.reshape(-1)
        module = shape
        for path, array in native.items():
            proj, leaf = path.split(".")
            expected = getattr(getattr(shape, proj), leaf).shape
            if array.shape != expected:
                raise ValueError(f"Received an invalid value for `{path}`, expected shape {expected}. "
                                 f"Received: shape {array.shape}")
            module = eqx.tree_at(lambda m, p=proj, a=leaf: getattr(getattr(m, p), a), module, _to_jax(array, dtype))
        return module

    @staticmethod
    def _canonical(module: Any, dtype: str) -> AttentionWeights:
        """The layer's arrays (or their gradients, same structure) back in the canonical layout."""
        H = module.num_heads
        D_k, D_v = module.qk_size, module.vo_size

        def get(proj: str, leaf: str) -> Array | None:
            a = getattr(getattr(module, proj), leaf)
            return None if a is None else _to_numpy(a, dtype)

        return AttentionWeights(
            query_kernel=get("query_proj", "weight").T.reshape(-1, H, D_k),
            key_kernel=get("key_proj", "weight").T.reshape(-1, H, D_k),
            value_kernel=get("value_proj", "weight").T.reshape(-1, H, D_v),
            output_kernel=get("output_proj", "weight").T.reshape(H, D_v, -1),
            query_bias=None if (b := get("query_proj", "bias")) is None else b.reshape(H, D_k),
            key_bias=None if (b := get("key_proj", "bias")) is None else b.reshape(H, D_k),
            value_bias=None if (b := get("value_proj", "bias")) is None else b.reshape(H, D_v),
            output_bias=get("output_proj", "bias"),
        )

    # -- running -------------------------------------------------------------------------------

    def _functions(self) -> tuple[Any, Any]:
        """(forward, vjp), jitted once; `eqx.filter_jit` compiles per layer structure and shapes."""
        if self._forward is None:
            import equinox as eqx

            jax = _jax()

            def batched(module: Any, q: Any, k: Any, v: Any, mask: Any) -> Any:
                if mask is None:
                    return jax.vmap(lambda q, k, v: module(q, k, v))(q, k, v)
                return jax.vmap(lambda q, k, v, m: module(q, k, v, m))(q, k, v, mask)

            def vjp(module: Any, q: Any, k: Any, v: Any, mask: Any, cotangent: Any) -> Any:
                _, pull = eqx.filter_vjp(lambda m, q, k, v: batched(m, q, k, v, mask), module, q, k, v)
                return pull(cotangent)

            self._forward, self._vjp = eqx.filter_jit(batched), eqx.filter_jit(vjp)
        return self._forward, self._vjp

    def _args(self, inputs: AttentionInputs, dtype: str) -> tuple[Any, ...]:
        for flag, value in (("causal", inputs.causal), ("scale", inputs.scale)):
            if value not in (False, None):
                raise ValueError(f"Received an invalid value for argument `{flag}`, expected "
                                 f"{'False' if flag == 'causal' else 'None'} (Equinox has no such argument). "
                                 f"Received: {flag}={value}")
        mask = None if inputs.mask is None else np.asarray(inputs.mask, dtype=bool)
        return (_to_jax(inputs.query, dtype), _to_jax(inputs.key, dtype), _to_jax(inputs.value, dtype), mask)

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights,
                             dtype: str) -> AttentionOutputs:
        forward, _ = self._functions()
        out = forward(self._module(weights, dtype), *self._args(inputs, dtype))
        return AttentionOutputs(output=_to_numpy(out, dtype))

    def with_dropout(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                     rate: float) -> AttentionOutputs:
        """The layer built with `dropout_p=rate, inference=True` (Equinox's inference mode)."""
        forward, _ = self._functions()
        out = forward(self._module(weights, dtype, rate), *self._args(inputs, dtype))
        return AttentionOutputs(output=_to_numpy(out, dtype))

    def round_trip_weights(self, weights: AttentionWeights, dtype: str) -> AttentionWeights:
        """Canonical -> the layer's `Linear` weights and biases -> canonical."""
        return self._canonical(self._module(weights, dtype), dtype)

    def multi_head_attention_vjp(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                                 cotangent: Array) -> dict[str, Array]:
        """`eqx.filter_vjp` with respect to query, key, value and every present weight."""
        _, vjp = self._functions()
        g_module, dq, dk, dv = vjp(self._module(weights, dtype), *self._args(inputs, dtype),
                                   _to_jax(cotangent, dtype))
        grads = self._canonical(g_module, dtype).arrays()
        return {"query": _to_numpy(dq, dtype), "key": _to_numpy(dk, dtype), "value": _to_numpy(dv, dtype), **grads}
