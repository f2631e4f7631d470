"""`tf_keras.layers.MultiHeadAttention` (Keras 2, the tf-keras package) behind the contract.

The weight mapping and the call are Keras 3's (`_keras_common`): the same einsum layout and
variable names. tf_keras has one code path: the query scaled by ``1/sqrt(key_dim)``, an einsum,
its `Softmax` layer (masked logits get a large negative number added: -1e9, or the dtype's
minimum in float16), an einsum; it always computes the per-head weights, returned with
``return_attention_scores=True``. ``use_causal_mask`` builds a lower triangular (top-left) mask
with `tf.linalg.band_part` and combines it with ``attention_mask``. Inference is
``training=False``. Gradients: `tf.GradientTape`. Runs in its own worker (process group
``tf_keras``), away from Keras 3.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters._keras_common import MHAAdapterBase, as_storage, tf_vjp
from attnconf.contract import Capabilities

Array = np.ndarray[Any, Any]


class TfKerasMHA(MHAAdapterBase):
    """`tf_keras.layers.MultiHeadAttention(...)(query, value, key=key, return_attention_scores=True)`."""

    name = "tf_keras.MultiHeadAttention"
    framework = "tf_keras"
    api = "tf_keras.layers.MultiHeadAttention"
    distributions = ("tf_keras", "tensorflow")
    modules = ("tf_keras", "tensorflow")
    process_group = "tf_keras"
    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="layer", causal_alignment="top_left", returns_weights=True, gqa=False, kdim_vdim=True,
            value_dim=True, output_dim=True, bias_free=True, custom_scale=False, weight_round_trip=True,
            gradients=True, notes="one path (einsum + Softmax layer); no kv heads, no scale argument; biases all or none",
        )
    scores = True

    def _new_layer(self, arguments: dict[str, Any], dtype: str, dropout: float,
                   widths: tuple[int, int, int]) -> Any:
        import tf_keras

        layer = tf_keras.layers.MultiHeadAttention(**arguments, dropout=dropout, dtype=dtype,
                                                   kernel_initializer="zeros")  # set_weights follows
        E_q, E_k, E_v = widths
        q, k, v = (self._tensor(np.zeros((1, 1, e)), dtype) for e in (E_q, E_k, E_v))
        layer(q, v, key=k)  # tf_keras creates the variables on the first call
        return layer

    def _paths(self, layer: Any) -> list[str]:
        return [v.name for v in layer.weights]

    def _tensor(self, x: Array, dtype: str) -> Any:
        import tensorflow as tf

        return tf.cast(tf.constant(np.asarray(x)), dtype)

    def _numpy(self, t: Any, dtype: str) -> Array:
        import tensorflow as tf

        return as_storage((tf.cast(t, tf.float32) if dtype == "bfloat16" else t).numpy(), dtype)

    def _vjp(self, layer: Any, tensors: tuple[Any, Any, Any], kwargs: dict[str, Any],
             cotangent: Any) -> tuple[list[Any], dict[str, Any]]:
        variables = list(layer.trainable_weights)

        def forward(q: Any, k: Any, v: Any, *_: Any) -> Any:  # the layer reads its variables itself
            return self._output(self._call(layer, (q, k, v), kwargs))

        grads = tf_vjp(forward, [*tensors, *variables], cotangent)
        return grads[:3], {v.name: g for v, g in zip(variables, grads[3:], strict=True)}
