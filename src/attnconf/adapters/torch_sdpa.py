"""`torch.nn.functional.scaled_dot_product_attention`, the kernel, behind the contract.

The layouts match: q `(B, H, T, D_k)`, k `(B, H_kv, S, D_k)`, v `(B, H_kv, S, D_v)`, output
`(B, H, T, D_v)`. torch's boolean `attn_mask` has the spec's polarity (True = takes part in
attention) and broadcasts to `(B, H, T, S)`; a float `attn_mask` is added to the logits.
`is_causal` is top-left when T != S (torch docs, `torch.nn.attention.bias.CausalBias`). The docs
say `is_causal` with `attn_mask` is an error, so `causal_with_mask=False`; what torch does is
backend-dependent (the math backend raises, the CPU flash backend applies both; see
https://github.com/pytorch/pytorch/issues/187801), and the adapter passes both as given for the
audit to observe. Grouped-query heads go through
`enable_gqa=True` (query head `h` reads kv head `h // (H // H_kv)`, as `repeat_interleave`).

The layer (`multi_head_attention`) is the reference's projections around the kernel
(`KernelAdapterBase`); its gradients (`multi_head_attention_vjp`) run the same projections in
torch so that autograd sees the whole layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from attnconf.adapters import _torch
from attnconf.adapters.support import KernelAdapterBase
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities

Array = np.ndarray[Any, Any]


def _sdpa(q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: float | None) -> Any:
    """The torch call, on tensors `(B, H, T, D_k)`, `(B, H_kv, S, D_k)`, `(B, H_kv, S, D_v)`."""
    F = _torch.torch().nn.functional
    gqa = {"enable_gqa": True} if k.shape[1] != q.shape[1] else {}
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=bool(causal), scale=scale, **gqa)


def _mask(mask: Array | None, dtype: str) -> Any:
    """A NumPy mask as `attn_mask`: boolean stays boolean, float takes the query's dtype."""
    if mask is None:
        return None
    m = np.asarray(mask)
    return _torch.torch().from_numpy(np.ascontiguousarray(m)) if m.dtype == np.bool_ else _torch.tensor(m, dtype)


class TorchSDPA(KernelAdapterBase):
    """`F.scaled_dot_product_attention(q, k, v, attn_mask, is_causal=..., scale=..., enable_gqa=...)`."""

    name = "torch.nn.functional.scaled_dot_product_attention"
    framework = "torch"
    api = "torch.nn.functional.scaled_dot_product_attention"
    distributions = ("torch",)
    modules = ("torch",)
    process_group = "torch"
    #: the torch call on tensors (a variant swaps it: adapters/torch_sdpa_lower_right.py)
    _call: Callable[..., Any] = staticmethod(_sdpa)

    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="kernel", causal_alignment="top_left", causal_with_mask=False, returns_weights=False,
            gqa=True, kdim_vdim=True, value_dim=True, output_dim=True, bias_free=True, custom_scale=True,
            gradients=True, fused=True,
            notes="layer = reference projections around the kernel; is_causal with attn_mask is documented as an error",
        )

    def dot_product_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                              scale: float | None, dtype: str) -> Array:
        t = _torch.torch()
        with t.inference_mode():
            out = self._call(*(_torch.tensor(a, dtype) for a in (q, k, v)), _mask(mask, dtype), causal, scale)
        return _torch.to_numpy(out, dtype)

    def dot_product_attention_vjp(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                                  scale: float | None, dtype: str, cotangent: Array) -> dict[str, Array]:
        """Gradients of `sum(output * cotangent)` with respect to "q", "k", "v" (torch autograd)."""
        t = _torch.torch()
        leaves = [_torch.tensor(a, dtype, requires_grad=True) for a in (q, k, v)]
        out = self._call(*leaves, _mask(mask, dtype), causal, scale)
        grads = t.autograd.grad(out, leaves, _torch.tensor(cotangent, dtype))
        return {n: _torch.to_numpy(g, dtype) for n, g in zip(("q", "k", "v"), grads, strict=True)}

    def native_mask_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                              native_mask: Array) -> AttentionOutputs:
        """The layer with `native_mask` `(B, T, S)` handed to `attn_mask` as is, as `(B, 1, T, S)`."""
        return self.kernel_layer(inputs, weights, dtype, np.asarray(native_mask)[:, None])

    def multi_head_attention_vjp(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                                 cotangent: Array) -> dict[str, Array]:
        """Gradients of the layer (torch projections around the kernel) in the canonical layout."""
        t = _torch.torch()
        x = {n: _torch.tensor(getattr(inputs, n), dtype, requires_grad=True) for n in ("query", "key", "value")}
        w = {n: _torch.tensor(a, dtype, requires_grad=True) for n, a in weights.arrays().items()}

        def heads(n: str) -> Any:
            y = t.einsum("bne,ehd->bhnd", x[n], w[f"{n}_kernel"])
            return y if f"{n}_bias" not in w else y + w[f"{n}_bias"][None, :, None, :]

        mask = None if inputs.mask is None else t.from_numpy(np.ascontiguousarray(inputs.mask[:, None]))
        o = self._call(heads("query"), heads("key"), heads("value"), mask, inputs.causal, inputs.scale)
        out = t.einsum("bhtd,hde->bte", o, w["output_kernel"])
        if "output_bias" in w:
            out = out + w["output_bias"]
        leaves = {**x, **w}
        grads = t.autograd.grad(out, list(leaves.values()), _torch.tensor(cotangent, dtype))
        return {n: _torch.to_numpy(g, dtype) for n, g in zip(leaves, grads, strict=True)}
