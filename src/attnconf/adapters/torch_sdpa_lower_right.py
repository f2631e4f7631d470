"""torch SDPA with `torch.nn.attention.bias.causal_lower_right`: bottom-right causal attention and
a decode step against a KV cache, the way torch documents them.

`F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(T, S))` is torch's causal
attention with the diagonal in the bottom-right corner (``j <= i + S - T``: the last query sees
every key), the alignment of a decode step (torch docs, `torch.nn.attention.bias.CausalBias`).
The `CausalBias` is the whole `attn_mask`: it takes no other mask (``causal_with_mask=False``) and
forbids ``is_causal=True``. Layouts as `TorchSDPA` (adapters/torch_sdpa.py): q `(B, H, T, D_k)`,
k `(B, H_kv, S, D_k)`, v `(B, H_kv, S, D_v)`; grouped heads through ``enable_gqa=True``.

`decode_step`: the new queries against ``torch.cat([cache, new], dim=2)`` with
``causal_lower_right(T_new, S_past + T_new)``, so new token `t` sees the whole cache and the new
tokens up to itself. A padded cache (`cache_lengths`) is beyond `CausalBias` (one triangle for the
batch); there the step adds torch's other documented form, a boolean `attn_mask` over the keys
(True = take part) that hides each element's padding, and the causal triangle of the new tokens,
`causal_lower_right(...)._materialize()` (the bias's own boolean form), combined with `&`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from attnconf.adapters import _torch
from attnconf.adapters.torch_sdpa import TorchSDPA
from attnconf.contract import Capabilities
from attnconf.reference._checks import invalid

Array = np.ndarray[Any, Any]
API = "torch.nn.functional.scaled_dot_product_attention"


def _lower_right(T: int, S: int) -> Any:
    """`torch.nn.attention.bias.causal_lower_right(T, S)`."""
    _torch.torch()
    from torch.nn.attention.bias import causal_lower_right

    return causal_lower_right(T, S)


def _sdpa_lower_right(q: Any, k: Any, v: Any, mask: Any, causal: bool, scale: float | None) -> Any:
    """SDPA with `attn_mask=causal_lower_right(T, S)` when `causal` (then `mask` must be None)."""
    F = _torch.torch().nn.functional
    gqa = {"enable_gqa": True} if k.shape[1] != q.shape[1] else {}
    if causal:
        if mask is not None:
            raise invalid(
                "mask", f"None with causal=True (causal_lower_right is the whole attn_mask of {API})", "a mask"
            )
        mask = _lower_right(q.shape[2], k.shape[2])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, **gqa)


class TorchSDPALowerRight(TorchSDPA):
    """`F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(T, S), ...)`; `decode_step`."""

    name = f"{API}[causal_lower_right]"
    api = f"{API} + torch.nn.attention.bias.causal_lower_right"
    first_release = (
        "torch",
        "2.2",
        "lacks torch.nn.attention.bias.causal_lower_right (its docs start with torch 2.2, Dec 2023)",
    )
    _call: Callable[..., Any] = staticmethod(_sdpa_lower_right)

    @classmethod
    def _capabilities(cls) -> Capabilities:
        return Capabilities(
            level="kernel",
            causal_alignment="bottom_right",
            causal_with_mask=False,
            returns_weights=False,
            gqa=True,
            kdim_vdim=True,
            value_dim=True,
            output_dim=True,
            bias_free=True,
            custom_scale=True,
            gradients=True,
            fused=True,
            kv_cache=True,
            notes="causal = attn_mask=causal_lower_right(T, S) (no other mask with it); decode_step against "
            "cat(cache, new); layer = reference projections around the kernel",
        )

    def decode_step(
        self,
        q_new: Array,
        k_cache: Array,
        v_cache: Array,
        k_new: Array,
        v_new: Array,
        dtype: str,
        *,
        scale: float | None = None,
        cache_lengths: Array | None = None,
    ) -> Array:
        """q_new `(B, H, T_new, D_k)` against ``cat(k_cache, k_new)`` `(B, H_kv, S_past + T_new, D_k)`
        (values alike) with `causal_lower_right(T_new, S_past + T_new)` -> `(B, H, T_new, D_v)`."""
        t = _torch.torch()
        with t.inference_mode():
            q, kc, vc, kn, vn = (_torch.tensor(a, dtype) for a in (q_new, k_cache, v_cache, k_new, v_new))
            k, v = t.cat([kc, kn], dim=2), t.cat([vc, vn], dim=2)
            T_new, S = q.shape[2], k.shape[2]
            if cache_lengths is None:
                out = _sdpa_lower_right(q, k, v, None, True, scale)
            else:
                lens = t.from_numpy(np.asarray(cache_lengths, dtype=np.int64))
                S_past = S - T_new
                keys = t.arange(S)
                valid = (keys[None, :] < lens[:, None]) | (keys[None, :] >= S_past)  # (B, S): padding hidden
                triangle = _lower_right(T_new, S)._materialize(q.device)  # (T_new, S)
                out = _sdpa_lower_right(q, k, v, valid[:, None, None, :] & triangle[None, None], False, scale)
        return _torch.to_numpy(out, dtype)
