"""`paddle.nn.MultiHeadAttention`, the layer, behind the contract.

Canonical -> paddle. paddle ties the widths like torch: E = E_q = E_out = H * D with
D = D_k = D_v, and has no kv heads (H_kv = H); `kdim`/`vdim` set E_k, E_v. Its `Linear` keeps
`weight (in, out)` and computes `x @ weight + bias`, and the layer splits the projected features
head-major (`reshape([0, 0, H, D])`): feature `h * D + d` is head `h`, component `d`. So every
kernel is only flattened, never transposed:

    q_proj.weight   (E_q, E)  = query_kernel  (E_q, H, D).reshape(E_q, E)
    k_proj.weight   (E_k, E)  = key_kernel    (E_k, H, D).reshape(E_k, E)
    v_proj.weight   (E_v, E)  = value_kernel  (E_v, H, D).reshape(E_v, E)
    out_proj.weight (E, E)    = output_kernel (H, D, E).reshape(E, E)
    q_proj.bias     (E,)      = query_bias (H, D).reshape(E)      (k, v alike)
    out_proj.bias   (E,)      = output_bias

paddle has one bias switch (`bias_attr=False` makes no biases at all): weights with some of the
four biases get the layer with biases and zeros in place of the absent ones (an absent bias is a
zero bias); `round_trip_weights` and `multi_head_attention_vjp` leave those out again.

Masks (the layer's docstring): a boolean `attn_mask` broadcastable to `(B, H, T, S)` with True =
takes part in attention, which the layer turns into an additive `(mask - 1) * 1e9`
(`_convert_attention_mask`); a float mask is added to the logits. The canonical `(B, T, S)` mask
goes in as `(B, 1, T, S)`. There is no causal flag and no scale argument (the query is scaled by
`head_dim ** -0.5`). `need_weights=True` makes the call return `(output, weights)`, weights
`(B, H, T, S)` after the softmax (and after dropout, which `eval()` switches off).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters import _paddle
from attnconf.adapters.support import BIASES, AdapterBase, present_biases
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.reference._checks import invalid

Array = np.ndarray[Any, Any]

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")

#: Parameter names in `to_native`'s order: the four weights, then the four biases.
WEIGHTS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight")
NATIVE_BIASES = ("q_proj.bias", "k_proj.bias", "v_proj.bias", "out_proj.bias")


def to_native(w: AttentionWeights) -> dict[str, Array]:
    """Canonical weights -> paddle parameters by name (shapes in the module docstring)."""
    E, H, D = w.query_dim, w.num_heads, w.key_head_dim
    checks = [
        ("key_kernel", "H_kv = H (paddle has no kv heads)", w.num_kv_heads, H),
        ("value_kernel", "D_v = D_k (paddle shares the head width)", w.value_head_dim, D),
        ("query_kernel", f"H * D_k = E_q = {E} (paddle sets D = embed_dim / H)", H * D, E),
        ("output_kernel", f"E_out = E_q = {E} (paddle's output width is embed_dim)", w.output_dim, E),
    ]
    for name, expected, got, want in checks:
        if got != want:
            raise invalid(name, f"{expected} for paddle.nn.MultiHeadAttention", got)
    out = {
        "q_proj.weight": w.query_kernel.reshape(-1, E),
        "k_proj.weight": w.key_kernel.reshape(-1, E),
        "v_proj.weight": w.value_kernel.reshape(-1, E),
        "out_proj.weight": w.output_kernel.reshape(E, E),
    }
    if present_biases(w):  # one bias switch: any bias makes all four, zeros for the absent
        for native, name in zip(NATIVE_BIASES, BIASES, strict=True):
            b = getattr(w, name)
            out[native] = np.zeros(E, w.query_kernel.dtype) if b is None else np.asarray(b).reshape(E)
    return out


def from_native(p: dict[str, Array], num_heads: int) -> AttentionWeights:
    """paddle parameters by name -> canonical weights (the inverse of `to_native`)."""
    E = p["out_proj.weight"].shape[1]
    H, D = num_heads, E // num_heads
    w = {
        "query_kernel": p["q_proj.weight"].reshape(-1, H, D),
        "key_kernel": p["k_proj.weight"].reshape(-1, H, D),
        "value_kernel": p["v_proj.weight"].reshape(-1, H, D),
        "output_kernel": p["out_proj.weight"].reshape(H, D, E),
    }
    if "q_proj.bias" in p:
        for native, name in zip(NATIVE_BIASES[:3], BIASES[:3], strict=True):
            w[name] = p[native].reshape(H, D)
        w["output_bias"] = p["out_proj.bias"]
    return AttentionWeights(**w)


def _given(w: AttentionWeights, arrays: dict[str, Array]) -> dict[str, Array]:
    """`arrays` less the biases that `w` does not have (the zeros `to_native` put in their place)."""
    return {n: a for n, a in arrays.items() if n not in BIASES or getattr(w, n) is not None}


class PaddleMHA(AdapterBase):
    """`paddle.nn.MultiHeadAttention(E, H, dropout, kdim, vdim, need_weights=True)` in eval mode."""

    name = "paddle.nn.MultiHeadAttention"
    framework = "paddle"
    api = "paddle.nn.MultiHeadAttention"
    distributions = ("paddlepaddle",)
    modules = ("paddle",)
    process_group = "paddle"

    @classmethod
    def _capabilities(cls) -> Capabilities:
        """From the installed release (package metadata; nothing is imported)."""
        limits = _paddle.half_limits()
        return Capabilities(
            level="layer",
            dtypes=frozenset(FLOAT_DTYPES) - {dt for dt, _ in limits},
            limits=limits,
            boolean_mask=True,
            causal=False,
            causal_alignment=None,
            causal_with_mask=False,
            returns_weights=True,
            gqa=False,
            kdim_vdim=True,
            value_dim=False,
            head_dim=False,
            output_dim=False,
            bias_free=True,
            custom_scale=False,
            weight_round_trip=True,
            gradients=True,
            notes="E_q = H * D_k; no causal flag, no scale argument; absent biases are zeros (one bias switch); "
            "a boolean mask becomes an additive (mask - 1) * 1e9",
        )

    def __init__(self) -> None:
        self._layers: dict[tuple[Any, ...], Any] = {}

    def _layer(self, w: AttentionWeights, dtype: str, dropout: float = 0.0) -> Any:
        """The layer for `w`'s shapes (cached, eval mode, `need_weights=True`) with `w` loaded into it."""
        p = _paddle.paddle()
        native = to_native(w)
        bias = "q_proj.bias" in native
        key = (w.query_dim, w.key_dim, w.value_dim, w.num_heads, bias, dtype, dropout)
        if key not in self._layers:
            layer = p.nn.MultiHeadAttention(
                w.query_dim,
                w.num_heads,
                dropout=dropout,
                kdim=w.key_dim,
                vdim=w.value_dim,
                need_weights=True,
                bias_attr=None if bias else False,
            )
            layer.to(dtype=dtype)
            layer.eval()  # returns None before paddle 3.1 (measured with 3.0.0), self after
            self._layers[key] = layer
        layer = self._layers[key]
        params = dict(layer.named_parameters())
        for name, array in native.items():
            if tuple(params[name].shape) != array.shape:
                raise invalid(name, f"shape {tuple(params[name].shape)} (the layer's)", array.shape)
            params[name].set_value(np.ascontiguousarray(array))
        return layer

    def _call(self, layer: Any, inputs: AttentionInputs, dtype: str, mask: Any, grad: bool = False) -> tuple[Any, ...]:
        """Run `layer` with `attn_mask=mask`; returns (output, weights, query, key, value tensors)."""
        if inputs.causal:
            raise invalid("causal", "False (paddle.nn.MultiHeadAttention has no causal flag)", inputs.causal)
        if inputs.scale is not None:
            raise invalid("scale", "None (paddle.nn.MultiHeadAttention has no scale argument)", inputs.scale)
        q = _paddle.tensor(inputs.query, dtype, requires_grad=grad)
        k = q if inputs.key is inputs.query and not grad else _paddle.tensor(inputs.key, dtype, requires_grad=grad)
        v = k if inputs.value is inputs.key and not grad else _paddle.tensor(inputs.value, dtype, requires_grad=grad)
        attn_mask = None if mask is None else _paddle.mask_tensor(mask, dtype)
        if grad:
            out, weights = layer(q, k, v, attn_mask=attn_mask)
        else:
            with _paddle.paddle().no_grad():
                out, weights = layer(q, k, v, attn_mask=attn_mask)
        return out, weights, q, k, v

    def _outputs(self, layer: Any, inputs: AttentionInputs, dtype: str, mask: Array | None) -> AttentionOutputs:
        out, weights, *_ = self._call(layer, inputs, dtype, mask)
        return AttentionOutputs(output=_paddle.to_numpy(out, dtype), weights=_paddle.to_numpy(weights, dtype))

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        mask = None if inputs.mask is None else inputs.mask[:, None]
        return self._outputs(self._layer(weights, dtype), inputs, dtype, mask)

    def native_mask_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, native_mask: Array
    ) -> AttentionOutputs:
        """The layer with `native_mask` `(B, T, S)` (boolean or float) handed to `attn_mask` as `(B, 1, T, S)`."""
        return self._outputs(self._layer(weights, dtype), inputs, dtype, np.asarray(native_mask)[:, None])

    def with_dropout(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, rate: float
    ) -> AttentionOutputs:
        """The layer built with `dropout=rate`, called in eval mode (paddle's documented inference)."""
        mask = None if inputs.mask is None else inputs.mask[:, None]
        return self._outputs(self._layer(weights, dtype, dropout=rate), inputs, dtype, mask)

    def round_trip_weights(self, weights: AttentionWeights, dtype: str) -> AttentionWeights:
        layer = self._layer(weights, dtype)
        params = dict(layer.named_parameters())
        back = from_native({n: _paddle.to_numpy(params[n], dtype) for n in to_native(weights)}, weights.num_heads)
        return AttentionWeights(**_given(weights, back.arrays()))

    def multi_head_attention_vjp(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, cotangent: Array
    ) -> dict[str, Array]:
        """Gradients of `sum(output * cotangent)` by paddle autograd (`paddle.grad`), in the canonical layout."""
        p = _paddle.paddle()
        layer = self._layer(weights, dtype)
        mask = None if inputs.mask is None else inputs.mask[:, None]
        out, _, q, k, v = self._call(layer, inputs, dtype, mask, grad=True)
        params = dict(layer.named_parameters())
        names = list(to_native(weights))
        grads = p.grad([out], [q, k, v, *(params[n] for n in names)], [_paddle.tensor(cotangent, dtype)])
        native = {n: _paddle.to_numpy(g, dtype) for n, g in zip(names, grads[3:], strict=True)}
        canonical = _given(weights, from_native(native, weights.num_heads).arrays())
        return {
            "query": _paddle.to_numpy(grads[0], dtype),
            "key": _paddle.to_numpy(grads[1], dtype),
            "value": _paddle.to_numpy(grads[2], dtype),
            **canonical,
        }
