"""keras-hub's `RotaryEmbedding` layer (``level="rotary"``: `rotary_embedding` only), on Keras 3's
torch backend.

``keras_hub.layers.RotaryEmbedding(max_wavelength=theta, sequence_axis=2, feature_axis=-1,
dtype=<precision>)(x, positions=positions)``: x `(B, H, N, D)` as is (the sequence on axis 2),
positions `(B, N)`. The layer rotates every feature of the feature axis (a model that rotates
part of D slices it first: no partial rotation here) in the rotate-half layout (it splits the
features in two halves, `_apply_rotary_pos_emb`). It computes the inverse frequencies and the
angles in float32 (``ops.arange(..., dtype="float32")``, ``ops.cast(positions, "float32")``) and
casts cos and sin to the layer's compute dtype: float64 at float32 accuracy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters._keras_common import backend_settings, keras3, numpy_of
from attnconf.adapters.support import RotaryAdapterBase
from attnconf.contract import Capabilities
from attnconf.reference._checks import FLOAT_DTYPES, invalid

Array = np.ndarray[Any, Any]
BACKEND = "torch"

#: measured with keras-hub 0.32.0 on keras 3.15.1 (torch backend)
FLOAT64_IN_FLOAT32 = (
    "float64",
    "float32",
    "keras_hub.layers.RotaryEmbedding computes its frequencies and angles in float32 for every "
    "compute dtype (_get_inverse_freq, _compute_cos_sin_embedding: ops.arange(..., dtype='float32'), "
    "ops.cast(positions, 'float32'); https://github.com/keras-team/keras-hub/blob/master/keras_hub/src/layers/"
    "modeling/rotary_embedding.py); measured with keras-hub 0.32.0",
)


class KerasHubRotary(RotaryAdapterBase):
    """`keras_hub.layers.RotaryEmbedding` on the torch backend."""

    name = "keras_hub.layers.RotaryEmbedding"
    framework = "keras"
    api = "keras_hub.layers.RotaryEmbedding"
    distributions = ("keras-hub", "keras", "torch")
    modules = ("keras_hub", "keras", "torch")
    process_group = backend_settings(BACKEND)["process_group"]
    environment = backend_settings(BACKEND)["environment"]

    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="rotary",
            causal=False,
            causal_alignment=None,
            causal_with_mask=False,
            boolean_mask=False,
            returns_weights=False,
            rotary_layouts=frozenset({"half"}),
            rotary_partial=False,
            precision=(FLOAT64_IN_FLOAT32,),
            dtypes=frozenset(FLOAT_DTYPES),
            notes="keras-hub RotaryEmbedding(max_wavelength=theta, sequence_axis=2) on Keras's torch backend",
        )


    def rotary_embedding(
        self,
        x: Array,
        positions: Array,
        dtype: str,
        *,
        layout: str,
        rotary_dim: int | None = None,
        theta: float = 10000.0,
    ) -> Array:
        """x `(B, H, N, D)` rotated at `positions` `(B, N)` -> `(B, H, N, D)` in precision `dtype`."""
        if layout != "half":
            raise invalid("layout", "'half' (keras_hub RotaryEmbedding rotates halves)", repr(layout))
        D = int(np.shape(x)[-1])
        if rotary_dim not in (None, D):
            raise invalid("rotary_dim", f"None or D={D} (the layer rotates the whole feature axis)", repr(rotary_dim))
        keras = keras3(BACKEND)
        import keras_hub

        layer = keras_hub.layers.RotaryEmbedding(
            max_wavelength=float(theta), sequence_axis=2, feature_axis=-1, dtype=dtype
        )
        pos = np.asarray(positions, dtype=np.int64)
        if pos.ndim == 1:
            pos = np.broadcast_to(pos, (np.shape(x)[0], pos.shape[0]))
        tx = keras.ops.convert_to_tensor(np.asarray(x, dtype=np.float32 if dtype == "bfloat16" else None), dtype=dtype)
        out = layer(tx, positions=keras.ops.convert_to_tensor(np.ascontiguousarray(pos)))
        return numpy_of(out, dtype, BACKEND)
