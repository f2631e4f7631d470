"""`keras.layers.MultiHeadAttention` under Keras 3, on each backend, through both of its paths.

The weight mapping (the canonical einsum layout is Keras's own) and the call are in
`_keras_common`. Keras fixes its backend per process, so each backend runs in its own worker
(process group ``keras-<backend>``, ``KERAS_BACKEND=<backend>``).

Two code paths (keras/src/layers/attention/multi_head_attention.py, `_compute_attention`):

* the fused path, ``keras[B].MultiHeadAttention``: taken when ``dropout == 0``, the call does
  not ask for ``return_attention_scores`` and the projected query has rank 4 (inputs
  `(B, T, E)` with the default attention axes). It calls ``keras.ops.dot_product_attention``
  (TensorFlow: an einsum, softmax in float32; JAX: ``jax.nn.dot_product_attention``; torch:
  ``F.scaled_dot_product_attention``). With ``use_causal_mask`` and no other mask it passes
  ``is_causal=True`` to the backend kernel; otherwise the causal mask is built by the layer
  (lower triangular) and folded into the boolean mask. Returns no weights.
* the scores path, ``keras[B].MultiHeadAttention[scores]``: ``return_attention_scores=True``
  (or dropout > 0): the query scaled by ``1/sqrt(key_dim)`` in the layer's dtype, an einsum,
  the `Softmax` layer (masked logits set to -1e9, -3e4 in float16, masked weights zeroed after),
  an einsum. Returns the per-head weights `(B, H, T, S)`.

Inference is ``training=False``; with ``training=None`` (and no parent layer) Keras also runs
in inference mode (dropout off). Gradients: `layer.stateless_call` under the backend's own
autodiff (``jax.vjp``, ``tf.GradientTape``, ``torch.autograd``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from attnconf.adapters._keras_common import (
    MHAAdapterBase,
    backend_settings,
    float64_precision,
    float64_scale_precision,
    host_array,
    keras3,
    keras3_vjp,
    numpy_of,
)
from attnconf.adapters.support import release_in
from attnconf.contract import Capabilities

Array = np.ndarray[Any, Any]


#: `jax.nn.dot_product_attention` takes values of the key's head width only (its docstring:
#: value `(B, S, K, H)`); Keras's fused path on JAX then fails for value_dim != key_dim.
JAX_VALUE_DIM = ("value_dim != key_dim fails on the fused path (jax.nn.dot_product_attention needs the key's "
                 "head width: https://docs.jax.dev/en/latest/_autosummary/jax.nn.dot_product_attention.html)")


#: Keras releases whose MultiHeadAttention requires E_q = E_v: the check came with
#: keras-team/keras#19973 and went with keras-team/keras#20340 (measured: 3.5.0 raises
#: "The last dimension of `query_shape` and `value_shape` must be equal", 3.10.0 takes it).
SAME_WIDTHS = ">=3.5,<3.7"


def _capabilities_of(backend: str, scores: bool) -> Capabilities:
    """What `keras.layers.MultiHeadAttention` takes on `backend` and path, for the installed Keras."""
    path = "scores path (return_attention_scores=True)" if scores else "fused path (ops.dot_product_attention)"
    value_dim = scores or backend != "jax"
    kdim_vdim = not release_in("keras", SAME_WIDTHS)
    return Capabilities(
        level="layer", causal_alignment="top_left", returns_weights=scores, gqa=False, kdim_vdim=kdim_vdim,
        value_dim=value_dim, output_dim=True, bias_free=True, custom_scale=False, weight_round_trip=True,
        gradients=True, fused=not scores and backend == "torch",  # the fused path calls torch's SDPA
        precision=float64_precision(backend, scores), scale_precision=float64_scale_precision(backend),
        notes=f"{path}; no kv heads, no scale argument; biases all or none"
        + ("" if value_dim else f"; {JAX_VALUE_DIM}")
        + ("" if kdim_vdim else "; this Keras requires E_q = E_v (keras-team/keras#20340 lifted it)"),
    )


class KerasMHA(MHAAdapterBase):
    """`keras.layers.MultiHeadAttention` on one backend (set by the subclass)."""

    framework = "keras"
    backend: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self._functions: dict[tuple[Any, ...], Any] = {}

    def __init_subclass__(cls, backend: str = "", scores: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.backend, cls.scores = backend, scores
        suffix = "[scores]" if scores else ""
        cls.name = f"keras[{backend}].MultiHeadAttention{suffix}"
        cls.api = "keras.layers.MultiHeadAttention" + ("(return_attention_scores=True)" if scores else "")
        for attribute, value in backend_settings(backend).items():
            setattr(cls, attribute, value)

    @classmethod
    def _capabilities(cls) -> Capabilities:
        return _capabilities_of(cls.backend, cls.scores)

    def _new_layer(self, arguments: dict[str, Any], dtype: str, dropout: float,
                   widths: tuple[int, int, int]) -> Any:
        keras = keras3(self.backend)
        layer = keras.layers.MultiHeadAttention(**arguments, dropout=dropout, dtype=dtype,
                                                kernel_initializer="zeros")  # set_weights follows
        E_q, E_k, E_v = widths
        layer.build((None, None, E_q), (None, None, E_v), (None, None, E_k))
        return layer

    def _paths(self, layer: Any) -> list[str]:
        return [v.path for v in layer.weights]

    def _tensor(self, x: Array, dtype: str) -> Any:
        return keras3(self.backend).ops.convert_to_tensor(host_array(x, dtype, self.backend), dtype=dtype)

    def _numpy(self, t: Any, dtype: str) -> Array:
        return numpy_of(t, dtype, self.backend)

    def _host(self, a: Array, dtype: str) -> Array:
        return host_array(a, dtype, self.backend)

    def _function(self, layer: Any, kwargs: dict[str, Any], vjp: bool) -> Any:
        """`layer.stateless_call` as f(trainable, fixed, q, k, v, mask[, cotangent]); jitted on JAX.

        Built once per layer and call flags: `jax.jit` then compiles once per input shape, where
        eager JAX would compile every primitive of the layer separately. Not in float16: on the
        CPU, XLA rejects the F16_F16_F32 dot that `jax.nn.dot_product_attention` asks for, which
        eager JAX catches (it retries with the default precision) and `jax.jit` raises only at
        compile time, outside that retry (keras-team/keras-hub#2354). The eager call is the
        documented one, so float16 stays eager.
        """
        static = tuple(sorted((n, a) for n, a in kwargs.items() if n != "attention_mask"))
        key = (id(layer), static, vjp)
        if key in self._functions:
            return self._functions[key]

        def forward(trainable: list[Any], fixed: list[Any], q: Any, k: Any, v: Any, mask: Any) -> Any:
            extra = {} if mask is None else {"attention_mask": mask}
            return layer.stateless_call(trainable, fixed, q, v, key=k, **dict(static), **extra)[0]

        def backward(trainable: list[Any], fixed: list[Any], q: Any, k: Any, v: Any, mask: Any, cot: Any) -> Any:
            def f(q: Any, k: Any, v: Any, *weights: Any) -> Any:
                return self._output(forward(list(weights), fixed, q, k, v, mask))

            return keras3_vjp(self.backend, f, [q, k, v, *trainable], cot)

        fn = backward if vjp else forward
        if self.backend == "jax" and layer.dtype_policy.compute_dtype != "float16":
            import jax

            fn = jax.jit(fn)
        self._functions[key] = fn
        return fn

    def _state(self, layer: Any, kwargs: dict[str, Any]) -> tuple[list[Any], list[Any], Any]:
        mask = kwargs.get("attention_mask")
        mask = None if mask is None else keras3(self.backend).ops.convert_to_tensor(mask)
        return ([v.value for v in layer.trainable_variables], [v.value for v in layer.non_trainable_variables], mask)

    def _call(self, layer: Any, tensors: tuple[Any, Any, Any], kwargs: dict[str, Any]) -> Any:
        trainable, fixed, mask = self._state(layer, kwargs)
        return self._function(layer, kwargs, vjp=False)(trainable, fixed, *tensors, mask)

    def _vjp(self, layer: Any, tensors: tuple[Any, Any, Any], kwargs: dict[str, Any],
             cotangent: Any) -> tuple[list[Any], dict[str, Any]]:
        trainable, fixed, mask = self._state(layer, kwargs)
        grads = self._function(layer, kwargs, vjp=True)(trainable, fixed, *tensors, mask, cotangent)
        return grads[:3], {v.path: g for v, g in zip(layer.trainable_variables, grads[3:], strict=True)}


class KerasMHATensorflow(KerasMHA, backend="tensorflow"):
    """The fused path on TensorFlow."""


class KerasMHAScoresTensorflow(KerasMHA, backend="tensorflow", scores=True):
    """The scores path on TensorFlow."""


class KerasMHAJax(KerasMHA, backend="jax"):
    """The fused path on JAX."""


class KerasMHAScoresJax(KerasMHA, backend="jax", scores=True):
    """The scores path on JAX."""


class KerasMHATorch(KerasMHA, backend="torch"):
    """The fused path on torch."""


class KerasMHAScoresTorch(KerasMHA, backend="torch", scores=True):
    """The scores path on torch."""
