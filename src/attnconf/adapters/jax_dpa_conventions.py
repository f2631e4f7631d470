"""The conventions of current models through `jax.nn.dot_product_attention`'s own arguments.

`JaxConventions` gives `JaxDPA` (adapters/jax_dpa.py) its `convention_attention`; each convention
goes to the argument jax documents for it, never to a mask the adapter computes:

    window (left, right)      -> local_window_size=(left, right)
                                 jax: query i sees key j when ``i - left <= j <= i + right``
                                 (jax/_src/nn/functions.py, _get_window_mask), positions top-left
                                 as `is_causal`: the spec's inclusive window, top-left alignment.
                                 jax takes ints only: an unbounded side (None) becomes T + S,
                                 wider than any distance between a query and a key.
    query_lengths (B,)        -> query_seq_lengths (int32)
    key_lengths (B,)          -> key_value_seq_lengths (int32)
    alibi_slopes (H,)         -> bias (1, N, T, S) = ``-slope * (p_q - p_k)``, computed in jax in
                                 the input precision from the slopes and the top-left positions.
                                 jax has no ALiBi argument: an additive `bias` is how its users
                                 (and the ALiBi paper) add it, so this translates the convention
                                 into the framework's documented argument; the slopes are the
                                 caller's (the spec's), not computed here.

jax has no logit soft cap (`jax.nn.dot_product_attention` adds `bias` to the scaled logits and
applies the masks; nothing caps), so "softcap" is not declared. Padded query rows come back as
zeros (jax multiplies them out); the spec leaves rows without a visible key uncompared.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters._jax_common import JitCache, jax, jnp, to_jax
from attnconf.reference._checks import invalid

Array = np.ndarray[Any, Any]

#: The convention each of jax's arguments carries (`alibi` rides on `bias`, always there).
_ARGUMENTS = {"window": "local_window_size", "lengths": "query_seq_lengths", "alibi": "bias"}


def jax_dpa_conventions() -> frozenset[str]:
    """The conventions the installed `jax.nn.dot_product_attention` takes: those whose argument its
    signature has (`inspect.signature`; imports jax). Older releases lack `local_window_size`; no jax
    installed: none."""
    import importlib.util
    import inspect

    if importlib.util.find_spec("jax") is None:
        return frozenset()
    params = inspect.signature(jax().nn.dot_product_attention).parameters
    return frozenset(c for c, arg in _ARGUMENTS.items() if arg in params)


def native_window(window: tuple[int | None, int | None] | None, T: int, S: int) -> tuple[int, int] | None:
    """The spec's window ``(left, right)`` (None: unbounded side) as jax's `local_window_size` ints."""
    if window is None:
        return None
    if not (isinstance(window, tuple) and len(window) == 2):
        raise invalid("window", "a pair (left, right) of non-negative ints or None", repr(window))
    unbounded = T + S
    left, right = (unbounded if w is None else int(w) for w in window)
    return left, right


def alibi_bias_native(slopes: Any, T: int, S: int) -> Any:
    """``-slope * (p_q - p_k)`` `(1, N, T, S)` in jax, top-left positions, in `slopes`' dtype."""
    j = jnp()
    distance = (j.arange(T)[:, None] - j.arange(S)[None, :]).astype(slopes.dtype)
    return (-slopes[:, None, None] * distance[None])[None]


class JaxConventions:
    """`convention_attention` for `jax.nn.dot_product_attention` (mixed into `JaxDPA`)."""

    def _conventions_forward(
        self, causal: bool, scale: float | None, window: tuple[int, int] | None, alibi: bool
    ) -> Any:
        def forward(q: Any, k: Any, v: Any, mask: Any, slopes: Any, q_lens: Any, k_lens: Any) -> Any:
            T, S = q.shape[1], k.shape[1]
            bias = alibi_bias_native(slopes, T, S) if alibi else None
            return jax().nn.dot_product_attention(
                q,
                k,
                v,
                bias=bias,
                mask=mask,
                scale=scale,
                is_causal=causal,
                query_seq_lengths=q_lens,
                key_value_seq_lengths=k_lens,
                local_window_size=window,
                implementation=None,
            )

        return forward

    def convention_attention(
        self,
        q: Array,
        k: Array,
        v: Array,
        mask: Array | None,
        causal: bool,
        scale: float | None,
        dtype: str,
        *,
        window: tuple[int | None, int | None] | None = None,
        logit_softcap: float | None = None,
        alibi_slopes: Array | None = None,
        query_lengths: Array | None = None,
        key_lengths: Array | None = None,
    ) -> Array:
        """q `(B, H, T, D)`, k and v `(B, H_kv, S, D)`, mask `(B, H, T, S)` or None -> `(B, H, T, D)`.

        `window` ``(left, right)`` inclusive, top-left; `alibi_slopes` `(H,)`; `query_lengths`
        and `key_lengths` `(B,)` ints. `logit_softcap` is not a capability: it raises.
        """
        if logit_softcap is not None:
            raise invalid(
                "logit_softcap", "None (jax.nn.dot_product_attention has no logit soft cap)", repr(logit_softcap)
            )
        from attnconf.adapters.jax_dpa import _from_native, _to_native

        self._check(k, v)  # type: ignore[attr-defined]
        T, S = np.shape(q)[2], np.shape(k)[2]
        if not hasattr(self, "_conventions"):
            self._conventions = JitCache(self._conventions_forward)
        fn = self._conventions(bool(causal), scale, native_window(window, T, S), alibi_slopes is not None)
        slopes = None if alibi_slopes is None else to_jax(np.asarray(alibi_slopes, dtype=np.float64), dtype)
        q_lens = None if query_lengths is None else np.asarray(query_lengths, dtype=np.int32)
        k_lens = None if key_lengths is None else np.asarray(key_lengths, dtype=np.int32)
        out = fn(
            _to_native(q, dtype),
            _to_native(k, dtype),
            _to_native(v, dtype),
            None if mask is None else np.asarray(mask),
            slopes,
            q_lens,
            k_lens,
        )
        return _from_native(out, dtype)


__all__ = ["jax_dpa_conventions", "JaxConventions", "alibi_bias_native", "native_window"]
