"""Haiku `hk.MultiHeadAttention` behind the contract.

Haiku is in maintenance mode upstream: since July 2023 Google DeepMind recommends Flax for new
projects, and Haiku receives bug fixes and JAX compatibility releases but no new features
(https://github.com/google-deepmind/dm-haiku#readme). It is here because existing models are
ported out of it.

Canonical -> native. Each projection is an `hk.Linear` with ``w (in, out)`` and ``b (out,)``,
``y = x @ w + b``, whose output is split head-major (``reshape(..., H, D)``), so each kernel is
its einsum layout flattened, nothing transposed::

    query_kernel  (E_q, H, D_k)    -> params["multi_head_attention/query"]["w"]   (E_q, H * D_k)
    key_kernel    (E_k, H, D_k)    -> params["multi_head_attention/key"]["w"]     (E_k, H * D_k)
    value_kernel  (E_v, H, D_v)    -> params["multi_head_attention/value"]["w"]   (E_v, H * D_v)
    output_kernel (H, D_v, E_out)  -> params["multi_head_attention/linear"]["w"]  (H * D_v, E_out)
    query_bias (H, D_k), key_bias (H, D_k), value_bias (H, D_v), output_bias (E_out,)
                                   -> params[...]["b"]  (flattened the same way)

The layer is ``hk.MultiHeadAttention(num_heads=H, key_size=D_k, value_size=D_v, model_size=E_out,
with_bias=..., w_init=zeros)`` inside ``hk.without_apply_rng(hk.transform(...))``, applied to the
canonical params (the initialiser never runs; `w_init` is mandatory, so it is given one). The
parameters take the dtype of the inputs (`hk.Linear` creates them in ``inputs.dtype``).

* Mask: `(B, T, S)` bool, True = may attend -> `mask (B, 1, T, S)` (Haiku requires the mask's rank
  to equal the logits' `(B, H, T, S)`); the same polarity: hidden logits are replaced by -1e30
  (``jnp.where(mask, logits, -1e30)``), so nothing is converted.
* No causal flag and no scale argument (``logits / sqrt(key_size)``): the adapter declares
  causal=False and custom_scale=False rather than build a causal mask itself.
* One `with_bias` flag for the four projections; no grouped kv heads; no dropout; the attention
  weights are not returned.
* Key and value take their own widths (each `hk.Linear` infers its input width), and
  `value_size` / `model_size` give D_v != D_k and E_out != E_q.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from attnconf.adapters._jax_common import PROCESS_GROUP, JitCache, jax, to_jax, to_numpy, tree_to_numpy
from attnconf.adapters.support import AdapterBase, one_bias_switch
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.reference._checks import invalid
from attnconf.reference.precision import round_to

Array = np.ndarray[Any, Any]
API = "haiku.MultiHeadAttention"
MAINTENANCE = (
    "Haiku is in maintenance mode (bug fixes and JAX compatibility only; Google DeepMind recommends "
    "Flax for new projects: https://github.com/google-deepmind/dm-haiku#readme)"
)

#: The module's name in the params dict: what `hk.MultiHeadAttention` calls itself by default.
MODULE = "multi_head_attention"

#: canonical name -> (Haiku submodule, parameter)
NATIVE_NAMES = {
    "query_kernel": ("query", "w"),
    "key_kernel": ("key", "w"),
    "value_kernel": ("value", "w"),
    "output_kernel": ("linear", "w"),
    "query_bias": ("query", "b"),
    "key_bias": ("key", "b"),
    "value_bias": ("value", "b"),
    "output_bias": ("linear", "b"),
}


def takes_with_bias() -> bool:
    """Whether the installed Haiku's `MultiHeadAttention` takes `with_bias` (reads its signature,
    importing Haiku; True where Haiku cannot be imported: the adapter cannot run there anyway)."""
    try:
        import haiku as hk
    except ImportError:
        return True
    return "with_bias" in inspect.signature(hk.MultiHeadAttention.__init__).parameters


def native_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape Haiku holds canonical array `name` of `shape` in: the head axes flattened
    (head-major), ``(E, H * D)`` for the input kernels, ``(H * D_v, E_out)`` for the output kernel,
    ``(H * D,)`` for a bias."""
    if name == "output_kernel":
        return (shape[0] * shape[1], shape[2])
    if name.endswith("_kernel"):
        return (shape[0], shape[1] * shape[2])
    return (int(np.prod(shape)),)


def to_haiku(arrays: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Canonical arrays by name -> Haiku's params ``{"multi_head_attention/query": {"w": ...}, ...}``."""
    params: dict[str, dict[str, Any]] = {}
    for name, array in arrays.items():
        module, leaf = NATIVE_NAMES[name]
        params.setdefault(f"{MODULE}/{module}", {})[leaf] = array.reshape(native_shape(name, array.shape))
    return params


def from_haiku(params: dict[str, dict[str, Any]], weights: AttentionWeights) -> dict[str, Any]:
    """Haiku's params -> canonical arrays by name, reshaped to the canonical shapes of `weights`
    (only the names `weights` has: a zero bias Haiku holds for an absent one is left out)."""
    canonical = weights.arrays()
    return {
        name: params[f"{MODULE}/{module}"][leaf].reshape(canonical[name].shape)
        for name, (module, leaf) in NATIVE_NAMES.items()
        if name in canonical
    }


class HaikuMHA(AdapterBase):
    """`haiku.MultiHeadAttention` in `hk.transform`, jitted once per configuration."""

    name = API
    framework = "haiku"
    api = API
    distributions = ("dm-haiku", "jax", "jaxlib")
    modules = ("haiku", "jax")
    process_group = PROCESS_GROUP

    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="layer",
            causal=False,
            causal_alignment=None,
            causal_with_mask=False,
            returns_weights=False,
            gqa=False,
            kdim_vdim=True,
            value_dim=True,
            head_dim=True,
            output_dim=True,
            bias_free=takes_with_bias(),
            custom_scale=False,
            weight_round_trip=True,
            gradients=True,
            notes="no causal flag, no scale argument, no dropout, weights not returned; one with_bias flag; "
            "hidden logits set to -1e30; " + MAINTENANCE,
        )

    def __init__(self) -> None:
        self._forward = JitCache(self._build_forward)
        self._vjp = JitCache(self._build_vjp)
        self._read_back = JitCache(self._build_read_back)

    # -- the native layer --------------------------------------------------------------------

    def _layer(self, weights: AttentionWeights) -> tuple[Any, ...]:
        """The static configuration of the layer for `weights`, checked against what Haiku takes."""
        if weights.num_kv_heads != weights.num_heads:
            raise invalid(
                "key_kernel",
                f"H_kv = H={weights.num_heads} ({API} has no grouped kv heads)",
                f"H_kv={weights.num_kv_heads}",
            )
        bias = one_bias_switch(weights, API, "with_bias")
        if not bias and not takes_with_bias():
            raise invalid("weights", f"all four biases ({API} of this Haiku has no with_bias)", "no biases")
        return (weights.num_heads, weights.key_head_dim, weights.value_head_dim, weights.output_dim, bias)

    @staticmethod
    def _module(H: int, D_k: int, D_v: int, E_out: int, bias: bool) -> Any:
        """The layer; call it inside a Haiku transform."""
        import haiku as hk

        flag = {} if bias else {"with_bias": False}  # named only when needed, for releases without it
        return hk.MultiHeadAttention(
            num_heads=H, key_size=D_k, value_size=D_v, model_size=E_out, w_init=hk.initializers.Constant(0.0), **flag
        )

    def _transformed(self, *layer: Any) -> Any:
        """`hk.without_apply_rng(hk.transform(f))` with ``f(q, k, v, mask) -> (B, T, E_out)``."""
        import haiku as hk

        return hk.without_apply_rng(hk.transform(lambda q, k, v, mask: self._module(*layer)(q, k, v, mask=mask)))

    def _build_forward(self, *layer: Any) -> Any:
        return self._transformed(*layer).apply

    def _build_vjp(self, *layer: Any) -> Any:
        apply = self._transformed(*layer).apply

        def vjp(params: Any, q: Any, k: Any, v: Any, mask: Any, cotangent: Any) -> Any:
            return jax().vjp(lambda p, q, k, v: apply(p, q, k, v, mask), params, q, k, v)[1](cotangent)

        return vjp

    def _build_read_back(self, *layer: Any) -> Any:
        """``f(params, q, k, v) -> {full name: value}``: every parameter as the layer reads it during
        a call (`hk.custom_getter` sees what `hk.get_parameter` hands to the layer)."""
        import haiku as hk

        def f(q: Any, k: Any, v: Any) -> Any:
            seen: dict[str, Any] = {}

            def record(next_getter: Any, value: Any, context: Any) -> Any:
                seen[context.full_name] = value
                return next_getter(value)

            with hk.custom_getter(record):
                self._module(*layer)(q, k, v)
            return seen

        return hk.without_apply_rng(hk.transform(f)).apply

    @staticmethod
    def _params(weights: AttentionWeights, dtype: str) -> dict[str, Any]:
        """The canonical weights as Haiku's params, in `dtype`."""
        return to_haiku({n: to_jax(a, dtype) for n, a in weights.arrays().items()})

    @staticmethod
    def _dummies(weights: AttentionWeights, dtype: str) -> tuple[Any, Any, Any]:
        """One-token query, key and value of the layer's widths (for `init` shapes and the read-back)."""
        widths = (weights.query_dim, weights.key_dim, weights.value_dim)
        return tuple(to_jax(np.zeros((1, 1, e)), dtype) for e in widths)  # type: ignore[return-value]

    def _run(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, mask: Array | None
    ) -> AttentionOutputs:
        layer = self._layer(weights)
        native_mask = None if mask is None else np.asarray(mask)[:, None]
        out = self._forward(*layer)(
            self._params(weights, dtype),
            to_jax(inputs.query, dtype),
            to_jax(inputs.key, dtype),
            to_jax(inputs.value, dtype),
            native_mask,
        )
        return AttentionOutputs(output=to_numpy(out, dtype), weights=None)

    @staticmethod
    def _check_call(inputs: AttentionInputs) -> None:
        if inputs.causal:
            raise invalid("causal", f"False ({API} has no causal flag)", True)
        if inputs.scale is not None:
            raise invalid("scale", f"None ({API} fixes the scale at 1/sqrt(key_size))", inputs.scale)

    # -- the contract --------------------------------------------------------------------------

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        self._check_call(inputs)
        return self._run(inputs, weights, dtype, inputs.mask)

    def native_mask_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, native_mask: Array
    ) -> AttentionOutputs:
        """`native_mask (B, T, S)` handed to Haiku's `mask` as `(B, 1, T, S)`, dtype unchanged."""
        self._check_call(inputs)
        return self._run(inputs, weights, dtype, native_mask)

    def round_trip_weights(self, weights: AttentionWeights, dtype: str) -> AttentionWeights:
        """Canonical -> params checked against `init`'s names, shapes and dtypes -> the values the
        layer reads during a call -> canonical."""
        layer = self._layer(weights)
        transformed = self._transformed(*layer)
        j = jax()
        dummies = self._dummies(weights, dtype)
        expected = j.eval_shape(transformed.init, j.random.key(0), *dummies, None)
        params = self._params(weights, dtype)
        want = {m: {n: (a.shape, a.dtype) for n, a in leaves.items()} for m, leaves in expected.items()}
        got = {m: {n: (a.shape, a.dtype) for n, a in leaves.items()} for m, leaves in params.items()}
        if want != got:
            raise invalid("weights", f"the parameters of {API}'s init: {want}", got)
        seen = self._read_back(*layer)(params, *dummies)
        back: dict[str, dict[str, Any]] = {}
        for full_name, value in seen.items():
            module, leaf = full_name.rsplit("/", 1)
            back.setdefault(module, {})[leaf] = value
        return AttentionWeights(**{n: to_numpy(a, dtype) for n, a in from_haiku(back, weights).items()})

    def multi_head_attention_vjp(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, cotangent: Array
    ) -> dict[str, Array]:
        """`jax.vjp` of the layer with respect to query, key, value and every present weight."""
        self._check_call(inputs)
        layer = self._layer(weights)
        mask = None if inputs.mask is None else np.asarray(inputs.mask)[:, None]
        g_params, dq, dk, dv = self._vjp(*layer)(
            self._params(weights, dtype),
            to_jax(inputs.query, dtype),
            to_jax(inputs.key, dtype),
            to_jax(inputs.value, dtype),
            mask,
            to_jax(round_to(cotangent, dtype), dtype),
        )
        grads = from_haiku(tree_to_numpy(g_params, dtype), weights)
        return {"query": to_numpy(dq, dtype), "key": to_numpy(dk, dtype), "value": to_numpy(dv, dtype), **grads}
