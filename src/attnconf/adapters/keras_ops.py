"""`keras.ops.dot_product_attention` under Keras 3, on each backend, behind the kernel contract.

Canonical -> Keras. Keras takes heads on the third axis, `(B, T, N, H)` (N heads of width H):

    query (B, H, T, D_k)      -> swapaxes(1, 2) -> (B, T, H, D_k)
    key   (B, H_kv, S, D_k)   -> swapaxes(1, 2) -> (B, S, H_kv, D_k)
    value (B, H_kv, S, D_v)   -> swapaxes(1, 2) -> (B, S, H_kv, D_v)
    mask  (B, H, T, S) bool, True = takes part: Keras's own polarity and shape, passed as is
    output (B, T, H, D_v)     -> swapaxes(1, 2) -> (B, H, T, D_v)

``is_causal`` is a lower triangular (top-left) mask on every backend (TensorFlow `band_part`,
JAX `jnp.tril`, torch `scaled_dot_product_attention`), combined with a given mask. ``scale``
is passed as is (None: 1/sqrt(D_k)). Fewer kv heads (GQA): TensorFlow and torch repeat kv heads
when H_kv > 1 and broadcast H_kv = 1; JAX hands them to `jax.nn.dot_product_attention`. Keras
documents the value with "the same shape of `key`"; TensorFlow and torch take D_v != D_k, JAX
raises (`jax.nn.dot_product_attention` checks it).

The layer (`multi_head_attention`) is the reference's projections around the kernel
(`KernelAdapterBase`); its gradients run the same projections in `keras.ops` so that the
backend's autodiff (`keras3_vjp`) sees the whole layer. Same worker as the layer adapters of
the backend (process group ``keras-<backend>``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from attnconf.adapters._keras_common import (
    backend_settings,
    float64_precision,
    float64_scale_precision,
    host_array,
    keras3,
    keras3_vjp,
    numpy_of,
)
from attnconf.adapters.support import KernelAdapterBase, release_in
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities

Array = np.ndarray[Any, Any]


class KerasOps(KernelAdapterBase):
    """`keras.ops.dot_product_attention(q, k, v, mask=..., scale=..., is_causal=...)` on one backend."""

    framework = "keras"
    api = "keras.ops.dot_product_attention"
    backend: ClassVar[str]

    def __init_subclass__(cls, backend: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.backend = backend
        cls.name = f"keras[{backend}].ops.dot_product_attention"
        for attribute, value in backend_settings(backend).items():
            setattr(cls, attribute, value)

    @classmethod
    def _capabilities(cls) -> Capabilities:
        """From the backend and the installed Keras's release (package metadata; nothing is imported)."""
        backend = cls.backend
        value_dim = backend != "jax"
        # TensorFlow and torch take 1 < H_kv < H only from keras-team/keras#23081 on (measured:
        # 3.10.0 raises "Expected dimension 4 at axis 2" in TensorFlow's einsum, 3.15.1 takes it);
        # JAX hands kv heads to jax.nn.dot_product_attention, which takes them
        gqa = backend == "jax" or not release_in("keras", "<3.15")
        # One kv head (multi-query, documented: "MQA is performed if K==1") raises on TensorFlow: its
        # kernel repeats kv heads only for K > 1 (keras-team/keras#23081) and leaves K == 1 to
        # broadcasting, which tf.einsum("BTNH,BSNH->BNTS") does not do (measured with keras 3.15.1).
        mqa = backend != "tensorflow"
        limits = () if mqa or not gqa else (
            ("mqa", "H_kv = 1 raises InvalidArgumentError \"Expected dimension 4 at axis 2 ... but got dimension 1\": "
             "the TensorFlow kernel repeats kv heads only for K > 1 and tf.einsum does not broadcast K = 1 "
             "(measured with keras 3.15.1; https://github.com/keras-team/keras/pull/23081)"),)
        return Capabilities(
            level="kernel", causal_alignment="top_left", causal_with_mask=True, returns_weights=False, gqa=gqa,
            mqa=mqa or not gqa, limits=limits, kdim_vdim=True, value_dim=value_dim, output_dim=True, bias_free=True,
            custom_scale=True, gradients=True, fused=backend == "torch",  # torch's scaled_dot_product_attention
            precision=float64_precision(backend), scale_precision=float64_scale_precision(backend),
            notes="layer = reference projections around the kernel"
            + ("" if value_dim else "; D_v must equal D_k (jax.nn.dot_product_attention)")
            + ("" if gqa else "; this Keras repeats no kv heads on this backend (keras-team/keras#23081)"),
        )

    first_release = ("keras", "3.6.0", "has no keras.ops.dot_product_attention (added in 3.6.0, keras-team/keras#20286)")

    def __init__(self) -> None:
        self._functions: dict[tuple[Any, ...], Any] = {}

    # -- the boundary ------------------------------------------------------------------------
    def _tensor(self, x: Array, dtype: str, heads_axis: bool = True) -> Any:
        """A Keras tensor of `dtype`; `heads_axis` moves (B, H, N, D) to Keras's (B, N, H, D)."""
        x = np.swapaxes(np.asarray(x), 1, 2) if heads_axis else np.asarray(x)
        return keras3(self.backend).ops.convert_to_tensor(np.ascontiguousarray(host_array(x, dtype, self.backend)),
                                                          dtype=dtype)

    def _numpy(self, t: Any, dtype: str, heads_axis: bool = True) -> Array:
        a = numpy_of(t, dtype, self.backend)
        return np.swapaxes(a, 1, 2) if heads_axis else a

    def _compiled(self, key: tuple[Any, ...], fn: Any, dtype: str) -> Any:
        """`fn`, jitted on JAX (but in float16: see `keras_mha.KerasMHA._function`), cached by `key`."""
        if key not in self._functions:
            if self.backend == "jax" and dtype != "float16":
                import jax

                fn = jax.jit(fn)
            self._functions[key] = fn
        return self._functions[key]

    def _attend(self, causal: bool, scale: float | None) -> Any:
        ops = keras3(self.backend).ops

        def attend(q: Any, k: Any, v: Any, mask: Any) -> Any:
            return ops.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=bool(causal))

        return attend

    # -- the kernel --------------------------------------------------------------------------
    def dot_product_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                              scale: float | None, dtype: str) -> Array:
        fn = self._compiled(("fwd", causal, scale, dtype), self._attend(causal, scale), dtype)
        m = None if mask is None else keras3(self.backend).ops.convert_to_tensor(np.asarray(mask))
        return self._numpy(fn(*(self._tensor(a, dtype) for a in (q, k, v)), m), dtype)

    def dot_product_attention_vjp(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                                  scale: float | None, dtype: str, cotangent: Array) -> dict[str, Array]:
        """Gradients of `sum(output * cotangent)` with respect to "q", "k", "v" (backend autodiff)."""
        attend = self._attend(causal, scale)

        def vjp(q: Any, k: Any, v: Any, mask: Any, cot: Any) -> Any:
            return keras3_vjp(self.backend, lambda q, k, v: attend(q, k, v, mask), [q, k, v], cot)

        fn = self._compiled(("vjp", causal, scale, dtype), vjp, dtype)
        m = None if mask is None else keras3(self.backend).ops.convert_to_tensor(np.asarray(mask))
        grads = fn(*(self._tensor(a, dtype) for a in (q, k, v, )), m, self._tensor(cotangent, dtype))
        return {n: self._numpy(g, dtype) for n, g in zip(("q", "k", "v"), grads, strict=True)}

    # -- the layer around it -----------------------------------------------------------------
    def native_mask_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                              native_mask: Array) -> AttentionOutputs:
        """The layer with `native_mask` `(B, T, S)` handed to `mask` as is, as `(B, 1, T, S)`."""
        return self.kernel_layer(inputs, weights, dtype, np.asarray(native_mask)[:, None])

    def multi_head_attention_vjp(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                                 cotangent: Array) -> dict[str, Array]:
        """Gradients of the layer (`keras.ops` projections around the kernel) in the canonical layout."""
        ops = keras3(self.backend).ops
        attend = self._attend(inputs.causal, inputs.scale)
        names = tuple(weights.arrays())

        def layer(query: Any, key: Any, value: Any, mask: Any, *arrays: Any) -> Any:
            w = dict(zip(names, arrays, strict=True))

            def heads(n: str, x: Any) -> Any:  # (B, N, E) @ (E, H, D) -> (B, N, H, D), Keras's layout
                y = ops.einsum("bne,ehd->bnhd", x, w[f"{n}_kernel"])
                return y if f"{n}_bias" not in w else y + w[f"{n}_bias"]

            o = attend(heads("query", query), heads("key", key), heads("value", value), mask)
            out = ops.einsum("bthd,hde->bte", o, w["output_kernel"])
            return out if "output_bias" not in w else out + w["output_bias"]

        def vjp(query: Any, key: Any, value: Any, mask: Any, cot: Any, *arrays: Any) -> Any:
            return keras3_vjp(self.backend, lambda *p: layer(*p[:3], mask, *p[3:]), [query, key, value, *arrays], cot)

        fn = self._compiled(("layer_vjp", inputs.causal, inputs.scale, names, dtype), vjp, dtype)
        m = None if inputs.mask is None else ops.convert_to_tensor(np.ascontiguousarray(inputs.mask[:, None]))
        x = [self._tensor(getattr(inputs, n), dtype, heads_axis=False) for n in ("query", "key", "value")]
        w = [self._tensor(a, dtype, heads_axis=False) for a in weights.arrays().values()]
        grads = fn(*x, m, self._tensor(cotangent, dtype, heads_axis=False), *w)
        return {n: self._numpy(g, dtype, heads_axis=False)
                for n, g in zip(("query", "key", "value", *names), grads, strict=True)}


class KerasOpsTensorflow(KerasOps, backend="tensorflow"):
    """On TensorFlow."""


class KerasOpsJax(KerasOps, backend="jax"):
    """On JAX."""


class KerasOpsTorch(KerasOps, backend="torch"):
    """On torch."""
