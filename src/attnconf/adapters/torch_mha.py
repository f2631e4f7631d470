"""`torch.nn.MultiheadAttention` (batch_first=True): its general path and its fast path.

Canonical -> torch. torch ties the widths: E = E_q = E_out = H * D with D = D_k = D_v, and
has no kv heads (H_kv = H). Feature `h * D + d` of a projection is head `h`, component `d`.

    q_proj_weight  (E, E_q) = query_kernel  (E_q, H, D).reshape(E_q, E).T
    k_proj_weight  (E, E_k) = key_kernel    (E_k, H, D).reshape(E_k, E).T
    v_proj_weight  (E, E_v) = value_kernel  (E_v, H, D).reshape(E_v, E).T
    in_proj_weight (3E, E)  = [q_proj_weight; k_proj_weight; v_proj_weight]  (packed when E_k == E_v == E)
    in_proj_bias   (3E,)    = [query_bias; key_bias; value_bias], each (H, D).reshape(E)
    out_proj.weight (E, E)  = output_kernel (H, D, E).reshape(E, E).T
    out_proj.bias   (E,)    = output_bias

torch has one bias switch (`bias=True` makes in_proj_bias and out_proj.bias): weights with some
of the four biases get the layer with biases and zeros in place of the absent ones (an absent
bias is a zero bias); `from_native` then returns those zeros, which `round_trip_weights` and
`multi_head_attention_vjp` leave out again, so they answer for the biases they were given. Masks: the canonical `(B, T, S)` boolean mask (True = may attend)
becomes `attn_mask` `(B * H, T, S)` with True = not allowed, row `b * H + h`. Causal: torch's
`is_causal` is only a hint that `attn_mask` is the causal mask and requires it, so it is
passed with `attn_mask` = the top-left causal mask `(T, S)` that the hint denotes (the one
`scaled_dot_product_attention`'s `is_causal` applies); a mask given with causal must be a key
padding mask (equal for every query) and goes to `key_padding_mask` `(B, S)`, True = padding.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import numpy as np

from attnconf.adapters import _torch
from attnconf.adapters.support import BIASES, AdapterBase, present_biases
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.reference._checks import invalid
from attnconf.reference.masks import causal_mask

Array = np.ndarray[Any, Any]


def to_native(w: AttentionWeights) -> dict[str, Array]:
    """Canonical weights -> torch parameters by name (shapes in the module docstring)."""
    E, H, D = w.query_dim, w.num_heads, w.key_head_dim
    checks = [("key_kernel", "H_kv = H (torch has no kv heads)", w.num_kv_heads, H),
              ("value_kernel", "D_v = D_k (torch shares the head width)", w.value_head_dim, D),
              ("query_kernel", f"H * D_k = E_q = {E} (torch sets D = E / H)", H * D, E),
              ("output_kernel", f"E_out = E_q = {E} (torch's output width is embed_dim)", w.output_dim, E)]
    for name, expected, got, want in checks:
        if got != want:
            raise invalid(name, f"{expected} for torch.nn.MultiheadAttention", got)
    proj = {n[0]: getattr(w, f"{n}_kernel").reshape(-1, E).T for n in ("query", "key", "value")}
    out: dict[str, Array] = {"out_proj.weight": w.output_kernel.reshape(E, E).T}
    if w.key_dim == E and w.value_dim == E:
        out["in_proj_weight"] = np.concatenate([proj["q"], proj["k"], proj["v"]])
    else:
        out.update({f"{n}_proj_weight": proj[n] for n in ("q", "k", "v")})
    if present_biases(w):  # one bias switch: any bias makes all four, zeros for the absent
        q = w.query_kernel
        out["in_proj_bias"] = np.concatenate([_bias(w, b, E, q.dtype) for b in BIASES[:3]])
        out["out_proj.bias"] = _bias(w, "output_bias", E, q.dtype)
    return out


def _bias(w: AttentionWeights, name: str, E: int, dtype: Any) -> Array:
    """Bias `name` as `(E,)`; zeros where `w` has none."""
    b = getattr(w, name)
    return np.zeros(E, dtype) if b is None else np.asarray(b).reshape(E)


def _given(w: AttentionWeights, arrays: dict[str, Array]) -> dict[str, Array]:
    """`arrays` less the biases that `w` does not have (the zeros `to_native` put in their place)."""
    return {n: a for n, a in arrays.items() if n not in BIASES or getattr(w, n) is not None}


def from_native(p: dict[str, Array], num_heads: int) -> AttentionWeights:
    """torch parameters by name -> canonical weights (the inverse of `to_native`)."""
    E = p["out_proj.weight"].shape[0]
    H, D = num_heads, E // num_heads
    if "in_proj_weight" in p:
        q, k, v = np.split(p["in_proj_weight"], 3)
    else:
        q, k, v = p["q_proj_weight"], p["k_proj_weight"], p["v_proj_weight"]
    w: dict[str, Array] = {"query_kernel": q.T.reshape(-1, H, D), "key_kernel": k.T.reshape(-1, H, D),
                           "value_kernel": v.T.reshape(-1, H, D),
                           "output_kernel": p["out_proj.weight"].T.reshape(H, D, E)}
    if "in_proj_bias" in p:
        for name, b in zip(BIASES[:3], np.split(p["in_proj_bias"], 3), strict=True):
            w[name] = b.reshape(H, D)
        w["output_bias"] = p["out_proj.bias"]
    return AttentionWeights(**w)


def native_masks(inputs: AttentionInputs, num_heads: int) -> dict[str, Any]:
    """`attn_mask`, `key_padding_mask` and `is_causal` (NumPy, torch polarity) for `inputs`."""
    mask = inputs.mask
    if not inputs.causal:
        return {"attn_mask": None if mask is None else np.repeat(~mask, num_heads, axis=0)}
    T, S = inputs.query.shape[1], inputs.key.shape[1]
    masks = {"attn_mask": ~causal_mask(T, S, "top_left"), "is_causal": True}
    if mask is not None:
        if not (mask == mask[:, :1]).all():
            raise invalid("mask", "a key padding mask (equal for every query) together with causal=True: "
                          "torch's is_causal needs attn_mask to be the causal mask itself",
                          "a mask that differs between queries")
        masks["key_padding_mask"] = ~mask[:, 0]
    return masks


class TorchMHA(AdapterBase):
    """The general path: `need_weights=True, average_attn_weights=False`, per-head weights.

    Called in eval mode with grad mode on (the parameters require grad, as in training code),
    which keeps torch on `F.multi_head_attention_forward` (the fused path needs grad off) and
    makes the forward the one whose backward `multi_head_attention_vjp` takes.
    """

    name = "torch.nn.MultiheadAttention"
    framework = "torch"
    api = "torch.nn.MultiheadAttention"
    distributions = ("torch",)
    modules = ("torch",)
    process_group = "torch"
    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="layer", causal_alignment="top_left", returns_weights=True, gqa=False, kdim_vdim=True,
            value_dim=False, head_dim=False, output_dim=False, bias_free=True, custom_scale=False,
            weight_round_trip=True, gradients=True,
            notes="E_q = H * D_k; absent biases are zeros (one bias switch); causal with a key padding mask only",
        )
    need_weights: ClassVar[bool] = True

    def __init__(self) -> None:
        self._layers: dict[tuple[Any, ...], Any] = {}

    def _layer(self, w: AttentionWeights, dtype: str, dropout: float = 0.0) -> Any:
        """The module for `w`'s shapes (cached, eval mode) with `w` loaded into it."""
        t = _torch.torch()
        native = to_native(w)
        key = (w.query_dim, w.key_dim, w.value_dim, w.num_heads, "in_proj_bias" in native, dtype, dropout)
        if key not in self._layers:
            self._layers[key] = t.nn.utils.skip_init(
                t.nn.MultiheadAttention, w.query_dim, w.num_heads, dropout=dropout, bias=key[4],
                kdim=w.key_dim, vdim=w.value_dim, batch_first=True, dtype=_torch.torch_dtype(dtype)).eval()
        layer = self._layers[key]
        with t.no_grad():
            for name, array in native.items():
                layer.get_parameter(name).copy_(_torch.tensor(array, dtype))
        return layer

    def _grad_context(self) -> Any:
        return contextlib.nullcontext()

    def _call(self, layer: Any, inputs: AttentionInputs, dtype: str, masks: dict[str, Any],
              grad: bool = False) -> tuple[Any, ...]:
        """Run `layer`; returns (output, weights or None, query, key, value tensors)."""
        if inputs.scale is not None:
            raise invalid("scale", "None (torch.nn.MultiheadAttention has no scale argument)", inputs.scale)
        q = _torch.tensor(inputs.query, dtype, requires_grad=grad)
        k = q if inputs.key is inputs.query and not grad else _torch.tensor(inputs.key, dtype, requires_grad=grad)
        v = k if inputs.value is inputs.key and not grad else _torch.tensor(inputs.value, dtype, requires_grad=grad)
        kw = {n: m if m is None or isinstance(m, bool) else _as_mask(m, dtype) for n, m in masks.items()}
        with contextlib.nullcontext() if grad else self._grad_context():
            out, weights = layer(q, k, v, need_weights=self.need_weights, average_attn_weights=False, **kw)
        return out, weights, q, k, v

    def _run(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, masks: dict[str, Any],
             dropout: float = 0.0) -> AttentionOutputs:
        out, attn, *_ = self._call(self._layer(weights, dtype, dropout), inputs, dtype, masks)
        return AttentionOutputs(_torch.to_numpy(out, dtype), None if attn is None else _torch.to_numpy(attn, dtype))

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        return self._run(inputs, weights, dtype, native_masks(inputs, weights.num_heads))

    def with_dropout(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                     rate: float) -> AttentionOutputs:
        """The layer built with `dropout=rate`, in eval mode (`module.eval()`)."""
        return self._run(inputs, weights, dtype, native_masks(inputs, weights.num_heads), dropout=rate)

    def native_mask_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                              native_mask: Array) -> AttentionOutputs:
        """`native_mask` `(B, T, S)` handed to `attn_mask` as is (bool or float), as `(B * H, T, S)`."""
        if inputs.causal:
            raise invalid("causal", "False with a native mask (is_causal needs attn_mask to be the causal mask)", True)
        mask = np.repeat(np.asarray(native_mask), weights.num_heads, axis=0)
        return self._run(inputs, weights, dtype, {"attn_mask": mask})

    def round_trip_weights(self, weights: AttentionWeights, dtype: str) -> AttentionWeights:
        layer = self._layer(weights, dtype)
        names = to_native(weights)
        back = from_native({n: _torch.to_numpy(layer.get_parameter(n), dtype) for n in names}, weights.num_heads)
        return AttentionWeights(**_given(weights, back.arrays()))

    def multi_head_attention_vjp(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                                 cotangent: Array) -> dict[str, Array]:
        """Gradients of `sum(output * cotangent)` by torch autograd, in the canonical layout."""
        t = _torch.torch()
        layer = self._layer(weights, dtype)
        out, _, q, k, v = self._call(layer, inputs, dtype, native_masks(inputs, weights.num_heads), grad=True)
        names = list(to_native(weights))
        params = [layer.get_parameter(n) for n in names]
        grads = t.autograd.grad(out, [q, k, v, *params], _torch.tensor(cotangent, dtype))
        native = {n: _torch.to_numpy(g, dtype) for n, g in zip(names, grads[3:], strict=True)}
        canonical = _given(weights, from_native(native, weights.num_heads).arrays())
        return {"query": _torch.to_numpy(grads[0], dtype), "key": _torch.to_numpy(grads[1], dtype),
                "value": _torch.to_numpy(grads[2], dtype), **canonical}


def _as_mask(m: Array, dtype: str) -> Any:
    """A NumPy mask as a tensor: boolean stays boolean, float takes the layer's dtype."""
    t = _torch.torch()
    return t.from_numpy(np.ascontiguousarray(m)) if m.dtype == np.bool_ else _torch.tensor(m, dtype)


class TorchMHAFast(TorchMHA):
    """The fast path: `need_weights=False`, eval mode, under `torch.inference_mode()`.

    torch takes its fused kernel (`torch._native_multi_head_attention`) only when all of these
    hold (torch/nn/modules/activation.py, `why_not_fast_path`): self-attention with one tensor
    for query, key and value; batched input with batch_first; eval mode; grad off or nothing
    requiring grad; packed in_proj_weight (E_k == E_v == E) *and* biases (bias=True); an even
    number of heads; no float mask; no bias_k/bias_v/add_zero_attn; no autocast; fast path
    enabled (`torch.backends.mha.get_fastpath_enabled()`). Otherwise torch runs
    `F.multi_head_attention_forward` with need_weights=False, i.e. `scaled_dot_product_attention`,
    which takes `is_causal` natively when there is no key padding mask. Returns no weights.
    Gradients come from that second path: the fused kernel never runs under autograd.
    """

    name = "torch.nn.MultiheadAttention[fast]"
    api = "torch.nn.MultiheadAttention(need_weights=False)"
    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="layer", causal_alignment="top_left", returns_weights=False, gqa=False, kdim_vdim=True,
            value_dim=False, head_dim=False, output_dim=False, bias_free=True, custom_scale=False,
            weight_round_trip=True, gradients=True, fused=True,
            notes="fused kernel for self-attention with biases and an even H; "
            "E_q = H * D_k; absent biases are zeros (one bias switch); causal with a key padding mask only",
        )
    need_weights = False

    def _grad_context(self) -> Any:
        return _torch.torch().inference_mode()
