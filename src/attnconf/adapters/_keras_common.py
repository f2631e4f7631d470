"""What the Keras 3 and tf_keras adapters share: the weight mapping, the layer flow, the backend setup.

Canonical -> native. Both `MultiHeadAttention` layers keep the einsum layout of the spec, so the
mapping is a renaming (a variable's path ends with the native name)::

    query_kernel  (E_q, H, D_k)    ->  query/kernel             (E_q, H, D_k)
    key_kernel    (E_k, H, D_k)    ->  key/kernel               (E_k, H, D_k)
    value_kernel  (E_v, H, D_v)    ->  value/kernel             (E_v, H, D_v)
    output_kernel (H, D_v, E_out)  ->  attention_output/kernel  (H, D_v, E_out)
    query_bias (H, D_k), key_bias (H, D_k), value_bias (H, D_v), output_bias (E_out,)
                                   ->  query/bias, key/bias, value/bias, attention_output/bias

Layer arguments: ``num_heads=H, key_dim=D_k, value_dim=D_v, use_bias=<all four biases>,
output_shape=E_out`` (when E_out != E_q), the layer's ``dtype`` policy = the precision. Weights go
in with `set_weights` in the layer's own variable order. There are no kv heads (H_kv = H), no
scale argument (1/sqrt(D_k) is fixed) and one bias switch (biases all or none).

The call: ``layer(query (B, T, E_q), value (B, S, E_v), key=key (B, S, E_k), attention_mask=mask
(B, T, S) bool (True = may attend), use_causal_mask=causal, training=False)``; with
``return_attention_scores=True`` it also returns the per-head weights (B, H, T, S).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from attnconf.adapters.support import AdapterBase, one_bias_switch, release_in
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights
from attnconf.reference._checks import invalid
from attnconf.reference.precision import storage_dtype

Array = np.ndarray[Any, Any]

NATIVE_NAMES = {
    "query_kernel": "query/kernel", "query_bias": "query/bias",
    "key_kernel": "key/kernel", "key_bias": "key/bias",
    "value_kernel": "value/kernel", "value_bias": "value/bias",
    "output_kernel": "attention_output/kernel", "output_bias": "attention_output/bias",
}
_CANONICAL = {native: name for name, native in NATIVE_NAMES.items()}


def float64_precision(backend: str, scores: bool = False) -> tuple[tuple[str, str, str], ...]:
    """`Capabilities.precision` of Keras 3's attention in float64 on `backend` (releases measured).

    On JAX and torch, keras.ops.dot_product_attention (and so MultiHeadAttention's fused path) casts
    float64 q, k, v to float32: Keras's type promotion maps float64 to float32 on every backend but
    TensorFlow (keras/src/backend/common/dtypes.py). The scores path (`scores`) stays in float64."""
    if backend == "tensorflow" or scores or not release_in("keras", ">=3.6,<3.16"):
        return ()
    return (("float64", "float32",
             "keras.ops.dot_product_attention casts float64 q, k, v to float32 (Keras's result_type maps float64 "
             f"to float32 on the {backend} backend; https://github.com/keras-team/keras/issues/23704); "
             "measured with keras 3.15.1"),)


def float64_scale_precision(backend: str) -> tuple[tuple[str, str, str], ...]:
    """`Capabilities.scale_precision` of Keras 3's attention in float64 on `backend` (releases measured).

    On TensorFlow both paths scale the logits by tf.cast(scale, float64) of a Python float, which
    TensorFlow first converts to a float32 constant: the logits carry a float32 rounding of the scale
    (exact when the scale is a float32 number, ~6e-8 relative otherwise)."""
    if backend != "tensorflow" or not (release_in("keras", ">=3.6,<3.16") and release_in("tensorflow", ">=2.16,<2.22")):
        return ()
    return (("float64", "float32",
             "the logit scale is rounded to float32: tf.cast of a Python float makes a float32 constant before "
             "widening it (https://github.com/tensorflow/tensorflow/issues/57779); measured with keras 3.15.1 "
             "and tensorflow 2.21"),)


def layer_arguments(w: AttentionWeights) -> dict[str, Any]:
    """`MultiHeadAttention` constructor arguments for weights `w`; raises for what it cannot hold."""
    if w.num_kv_heads != w.num_heads:
        raise invalid("key_kernel", f"H_kv = H = {w.num_heads} heads (MultiHeadAttention has no kv heads)",
                      w.num_kv_heads)
    return {"num_heads": w.num_heads, "key_dim": w.key_head_dim, "value_dim": w.value_head_dim,
            "use_bias": one_bias_switch(w, "MultiHeadAttention", "use_bias"), "output_shape": w.output_dim if w.output_dim != w.query_dim else None}


def canonical_name(variable_path: str) -> str:
    """The canonical weight name of a layer variable, from its path (".../query/kernel[:0]")."""
    native = "/".join(variable_path.split(":")[0].split("/")[-2:])
    if native not in _CANONICAL:
        raise ValueError(f"Unexpected MultiHeadAttention variable {variable_path!r}: expected a path ending "
                         f"with one of {sorted(_CANONICAL)}")
    return _CANONICAL[native]


def to_native(paths: list[str], w: AttentionWeights) -> list[Array]:
    """`w` as the list `set_weights` takes, for a layer whose variables have `paths` (in order)."""
    return [getattr(w, canonical_name(p)) for p in paths]


def from_native(paths: list[str], arrays: list[Array]) -> AttentionWeights:
    """The inverse of `to_native`: arrays in the layer's variable order -> canonical weights."""
    return AttentionWeights(**{canonical_name(p): a for p, a in zip(paths, arrays, strict=True)})


def as_storage(a: Any, dtype: str) -> Array:
    """A NumPy-convertible array of precision `dtype` in `storage_dtype(dtype)` (bfloat16 -> float32)."""
    a = np.asarray(a)
    return np.asarray(a.astype(np.float32) if dtype == "bfloat16" else a, dtype=storage_dtype(dtype))


def host_array(x: Array, dtype: str, backend: str) -> Array:
    """`x` (already rounded to `dtype`) as NumPy hands it to Keras on `backend`.

    On JAX a bfloat16 array goes over as a NumPy array of bfloat16 (ml_dtypes, the type JAX itself
    uses): the conversion happens in NumPy, exactly, where converting a float32 array on the
    device would compile one XLA program per shape. torch has no NumPy bfloat16, so the other
    backends take the float32 storage array and convert it themselves."""
    if backend == "jax" and dtype == "bfloat16":
        import ml_dtypes

        return np.asarray(x, dtype=ml_dtypes.bfloat16)
    return np.asarray(x)


def numpy_of(t: Any, dtype: str, backend: str) -> Array:
    """A Keras tensor of precision `dtype` as NumPy in `storage_dtype(dtype)`: bfloat16 is widened
    to float32 in NumPy on JAX (see `host_array`), by the backend elsewhere."""
    ops = keras3(backend).ops
    return as_storage(ops.convert_to_numpy(ops.cast(t, "float32") if dtype == "bfloat16" and backend != "jax" else t),
                      dtype)


def backend_settings(backend: str) -> dict[str, Any]:
    """Class attributes of a Keras 3 adapter on `backend`: one worker process per backend."""
    package = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}[backend]
    return {"process_group": f"keras-{backend}", "environment": {"KERAS_BACKEND": backend},
            "distributions": ("keras", *package), "modules": ("keras", package[0])}


def keras3(backend: str) -> Any:
    """The `keras` module, imported on first use; raises if this process runs another backend.

    JAX is configured first (x64 on for float64, CPU unless JAX_PLATFORMS names a platform), torch
    with the thread count of the torch adapters.
    """
    if backend == "jax":
        from attnconf.adapters._jax_common import jax

        jax()
    elif backend == "torch":
        from attnconf.adapters._torch import torch

        torch()
    import keras

    if keras.backend.backend() != backend:
        raise RuntimeError(f"This process runs Keras on backend {keras.backend.backend()!r}, expected {backend!r}: "
                           f"run with worker isolation (the default), or set KERAS_BACKEND={backend}.")
    return keras


def keras3_vjp(backend: str, fn: Any, primals: list[Any], cotangent: Any) -> list[Any]:
    """Gradients of `sum(fn(*primals) * cotangent)` with the backend's own autodiff."""
    if backend == "jax":
        import jax

        return list(jax.vjp(fn, *primals)[1](cotangent))
    if backend == "tensorflow":
        import tensorflow as tf

        return tf_vjp(fn, [tf.convert_to_tensor(p) for p in primals], cotangent)
    import torch

    leaves = [p.detach().requires_grad_(True) for p in primals]
    return list(torch.autograd.grad(fn(*leaves), leaves, cotangent))


def tf_vjp(fn: Any, primals: list[Any], cotangent: Any) -> list[Any]:
    """Gradients of `sum(fn(*primals) * cotangent)` by `tf.GradientTape` (tensors or variables)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(primals)
        out = fn(*primals)
    return list(tape.gradient(out, primals, output_gradients=cotangent))


class MHAAdapterBase(AdapterBase):
    """The flow of a Keras-style `MultiHeadAttention` adapter; subclasses supply the framework.

    Hooks: `_new_layer(arguments, dtype, dropout, widths)` a built layer; `_paths(layer)` its
    variable paths in `layer.weights` order; `_tensor(x, dtype)` / `_numpy(t, dtype)` the
    boundary; `_call(layer, tensors, kwargs)` one forward; `_vjp(layer, tensors, kwargs,
    cotangent)` -> (grads of query, key, value; grads of the variables by path).
    """

    scores: ClassVar[bool] = True  # call with return_attention_scores=True

    def __init__(self) -> None:
        self._layers: dict[tuple[Any, ...], Any] = {}

    # -- hooks -------------------------------------------------------------------------------
    def _new_layer(self, arguments: dict[str, Any], dtype: str, dropout: float,
                   widths: tuple[int, int, int]) -> Any:
        raise NotImplementedError

    def _paths(self, layer: Any) -> list[str]:
        raise NotImplementedError

    def _tensor(self, x: Array, dtype: str) -> Any:
        raise NotImplementedError

    def _numpy(self, t: Any, dtype: str) -> Array:
        raise NotImplementedError

    def _host(self, a: Array, dtype: str) -> Array:
        """A weight as `set_weights` takes it (`host_array` on Keras 3)."""
        return np.asarray(a)

    def _call(self, layer: Any, tensors: tuple[Any, Any, Any], kwargs: dict[str, Any]) -> Any:
        q, k, v = tensors
        return layer(q, v, key=k, **kwargs)

    def _vjp(self, layer: Any, tensors: tuple[Any, Any, Any], kwargs: dict[str, Any],
             cotangent: Any) -> tuple[list[Any], dict[str, Any]]:
        raise NotImplementedError

    def _output(self, result: Any) -> Any:
        """The output `(B, T, E_out)` of a call's result."""
        return result[0] if self.scores else result

    # -- the flow ----------------------------------------------------------------------------
    def _layer(self, w: AttentionWeights, dtype: str, dropout: float = 0.0) -> Any:
        """The layer for `w`'s shapes (cached by shape, dtype and dropout) with `w` loaded."""
        arguments = layer_arguments(w)
        widths = (w.query_dim, w.key_dim, w.value_dim)
        key = (*sorted(arguments.items()), widths, dtype, dropout)
        if key not in self._layers:
            self._layers[key] = self._new_layer(arguments, dtype, dropout, widths)
        layer = self._layers[key]
        layer.set_weights([self._host(a, dtype) for a in to_native(self._paths(layer), w)])
        return layer

    def _kwargs(self, inputs: AttentionInputs, mask: Array | None) -> dict[str, Any]:
        """The call's keyword arguments; `mask` goes to `attention_mask` as is."""
        if inputs.scale is not None:
            raise invalid("scale", f"None ({self.api} has no scale argument; it uses 1/sqrt(key_dim))", inputs.scale)
        kwargs: dict[str, Any] = {"training": False}
        if mask is not None:
            kwargs["attention_mask"] = np.asarray(mask)
        if inputs.causal:
            kwargs["use_causal_mask"] = True
        if self.scores:
            kwargs["return_attention_scores"] = True
        return kwargs

    def _tensors(self, inputs: AttentionInputs, dtype: str) -> tuple[Any, Any, Any]:
        return (self._tensor(inputs.query, dtype), self._tensor(inputs.key, dtype), self._tensor(inputs.value, dtype))

    def _run(self, inputs: AttentionInputs, w: AttentionWeights, dtype: str, mask: Any,
             dropout: float = 0.0) -> AttentionOutputs:
        kwargs = self._kwargs(inputs, mask)
        result = self._call(self._layer(w, dtype, dropout), self._tensors(inputs, dtype), kwargs)
        out, scores = (result[0], result[1]) if self.scores else (result, None)
        return AttentionOutputs(self._numpy(out, dtype), None if scores is None else self._numpy(scores, dtype))

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        return self._run(inputs, weights, dtype, inputs.mask)

    def native_mask_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                              native_mask: Array) -> AttentionOutputs:
        """`native_mask` `(B, T, S)` (bool or float) handed to `attention_mask` as is."""
        return self._run(inputs, weights, dtype, native_mask)

    def with_dropout(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                     rate: float) -> AttentionOutputs:
        """The layer built with `dropout=rate`, called with `training=False` (inference)."""
        return self._run(inputs, weights, dtype, inputs.mask, dropout=rate)

    def round_trip_weights(self, weights: AttentionWeights, dtype: str) -> AttentionWeights:
        """`set_weights` then `get_weights`, mapped back to the canonical names."""
        layer = self._layer(weights, dtype)
        arrays = [as_storage(a, dtype) for a in layer.get_weights()]
        return from_native(self._paths(layer), arrays)

    def multi_head_attention_vjp(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                                 cotangent: Array) -> dict[str, Array]:
        """Gradients of `sum(output * cotangent)` w.r.t. query, key, value and every weight."""
        kwargs = self._kwargs(inputs, inputs.mask)
        layer = self._layer(weights, dtype)
        xs, ws = self._vjp(layer, self._tensors(inputs, dtype), kwargs, self._tensor(cotangent, dtype))
        grads = {n: self._numpy(g, dtype) for n, g in zip(("query", "key", "value"), xs, strict=True)}
        grads.update({canonical_name(p): self._numpy(g, dtype) for p, g in ws.items()})
        return grads
