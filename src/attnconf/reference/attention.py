"""Scaled dot-product attention and multi-head attention: the specification.

Shapes use B batch, H query heads, H_kv key/value heads (H_kv divides H), T queries, S keys,
D_k key width, D_v value width, E_q/E_k/E_v input widths and E_out output width.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights
from attnconf.reference._checks import (
    as_bool_array,
    as_float_array,
    check_broadcast,
    check_choice,
    check_dtype_name,
    check_finite,
    expect_dim,
    invalid,
    precision_of,
)
from attnconf.reference.alibi import alibi_bias
from attnconf.reference.masks import ALIGNMENTS, Alignment, Window, aligned_positions, causal_mask, window_mask
from attnconf.reference.precision import in_compute, round_to
from attnconf.reference.rotary import Rotary, rotary_embedding
from attnconf.reference.softcap import check_cap, softcap
from attnconf.reference.softmax import FULLY_MASKED_POLICIES, FullyMaskedPolicy, softmax

if TYPE_CHECKING:
    from typing import Literal

Array = np.ndarray[Any, Any]


def _as_mask4(mask: object, target: tuple[int, int, int, int]) -> Array:
    m = as_bool_array("mask", mask, (2, 4))
    if m.ndim == 2:
        m = m[None, None]
    check_broadcast("mask", m, target, "(B, H, T, S)")
    return m


def _as_bias4(bias: object, target: tuple[int, int, int, int]) -> Array:
    b = as_float_array("bias", bias, (2, 4))
    if b.ndim == 2:
        b = b[None, None]
    check_broadcast("bias", b, target, "(B, H, T, S)")
    return b


def check_attention_args(
    q: object, k: object, v: object, alignment: str, fully_masked: str, scale: float | None, dtype: str | None
) -> tuple[Array, Array, Array, float, str]:
    """Validate the arguments shared by the attention functions of the spec.

    Returns `(q, k, v, scale, precision)`: the arrays as checked NumPy arrays, the scale with its
    default `1/sqrt(D_k)` applied, and the precision name (`dtype`, or the dtype of `q`:
    ``"bfloat16"`` for an ml_dtypes bfloat16 `q`, whose arrays are returned as exact float32).
    """
    q_precision = precision_of(q)
    q = as_float_array("q", q, 4)
    k = as_float_array("k", k, 4)
    v = as_float_array("v", v, 4)
    B, H, _, D_k = q.shape
    H_kv, S = k.shape[1], k.shape[2]
    expect_dim("k", k, 0, B, "batch, as in q")
    expect_dim("k", k, 3, D_k, "key width D_k, as in q")
    expect_dim("v", v, 0, B, "batch, as in q")
    expect_dim("v", v, 1, H_kv, "kv heads H_kv, as in k")
    expect_dim("v", v, 2, S, "keys S, as in k")
    if H % H_kv:
        raise invalid("k", f"a number of kv heads that divides the {H} query heads", H_kv)
    check_choice("alignment", alignment, ALIGNMENTS)
    check_choice("fully_masked", fully_masked, FULLY_MASKED_POLICIES)
    if scale is None:
        scale = 1.0 / math.sqrt(D_k)
    elif not (isinstance(scale, (int, float)) and math.isfinite(scale)) or isinstance(scale, bool):
        raise invalid("scale", "a finite float or None", repr(scale))
    precision = check_dtype_name("dtype", dtype) if dtype is not None else check_dtype_name("q", q_precision)
    return q, k, v, float(scale), precision


@overload
def scaled_dot_product_attention(
    q: Array, k: Array, v: Array, mask: Array | None = ..., bias: Array | None = ...,
    causal: bool = ..., alignment: Alignment = ..., scale: float | None = ...,
    return_weights: Literal[False] = ..., fully_masked: FullyMaskedPolicy = ...,
    dtype: str | None = ..., *, rotary: Rotary | None = ..., alibi_slopes: Array | None = ...,
    window: Window | None = ..., logit_softcap: float | None = ...,
) -> Array: ...


@overload
def scaled_dot_product_attention(
    q: Array, k: Array, v: Array, mask: Array | None = ..., bias: Array | None = ...,
    causal: bool = ..., alignment: Alignment = ..., scale: float | None = ...,
    *, return_weights: Literal[True], fully_masked: FullyMaskedPolicy = ...,
    dtype: str | None = ..., rotary: Rotary | None = ..., alibi_slopes: Array | None = ...,
    window: Window | None = ..., logit_softcap: float | None = ...,
) -> tuple[Array, Array]: ...


def scaled_dot_product_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    bias: Array | None = None,
    causal: bool = False,
    alignment: Alignment = "top_left",
    scale: float | None = None,
    return_weights: bool = False,
    fully_masked: FullyMaskedPolicy = "zeros",
    dtype: str | None = None,
    *,
    rotary: Rotary | None = None,
    alibi_slopes: Array | None = None,
    window: Window | None = None,
    logit_softcap: float | None = None,
) -> Array | tuple[Array, Array]:
    """``softmax(q @ k^T * scale + bias, where=mask & causal) @ v``, per head.

    Args:
        q: queries `(B, H, T, D_k)`.
        k: keys `(B, H_kv, S, D_k)`; query head `h` reads kv head `h // (H // H_kv)`.
        v: values `(B, H_kv, S, D_v)`.
        mask: boolean, True = may attend; `(T, S)` or rank 4 broadcastable to `(B, H, T, S)`.
        bias: additive float bias, same shapes as `mask`; `-inf` entries are masked out.
        causal: apply the causal mask with the named `alignment`.
        alignment: ``"top_left"`` (`j <= i`) or ``"bottom_right"`` (`j <= i + S - T`).
        scale: logit scale; `1/sqrt(D_k)` when None.
        return_weights: also return the attention weights `(B, H, T, S)`.
        fully_masked: outcome for a query row with no visible key (see `softmax`).
        dtype: precision to evaluate in (`attnconf.reference.precision`); None keeps the
            dtype of `q` (float64 for float64 inputs).
        rotary: rotate `q` and `k` (`attnconf.reference.rotary.rotary_embedding`) at the positions
            of `alignment` (keys at ``0 .. S-1``, queries at ``0 .. T-1`` or ``S-T .. S-1``).
        alibi_slopes: `(H,)` ALiBi slopes; adds `alibi_bias(H, T, S, alignment, slopes)` rounded
            to the precision, after `bias`.
        window: ``(left, right)`` sliding window (`window_mask`, bounds inclusive, None =
            unbounded side) in the positions of `alignment`; combines with `mask` and `causal`.
        logit_softcap: `c`: the scaled logits become ``c * tanh(logits / c)`` (`softcap`) before
            `bias` and ALiBi are added and the masks applied (scale, cap, bias, mask, softmax).

    Returns:
        The output `(B, H, T, D_v)`, and the weights `(B, H, T, S)` if `return_weights`.
    """
    q, k, v, scale, precision = check_attention_args(q, k, v, alignment, fully_masked, scale, dtype)
    B, H, T, _ = q.shape
    H_kv, S = k.shape[1], k.shape[2]

    target = (B, H, T, S)
    visible = np.ones((1, 1, T, S), dtype=bool)
    if mask is not None:
        visible = visible & _as_mask4(mask, target)
    if causal:
        visible = visible & causal_mask(T, S, alignment)[None, None]
    if window is not None:
        if not (isinstance(window, tuple) and len(window) == 2):
            raise invalid("window", "a pair (left, right) of non-negative integers or None", repr(window))
        visible = visible & window_mask(T, S, left=window[0], right=window[1], alignment=alignment)[None, None]
    if alibi_slopes is not None:
        slopes = as_float_array("alibi_slopes", alibi_slopes, 1)
        expect_dim("alibi_slopes", slopes, 0, H, "one slope per query head")
        alibi = round_to(alibi_bias(H, T, S, alignment=alignment, slopes=slopes)[None], precision)
    if logit_softcap is not None:
        check_cap("logit_softcap", logit_softcap)
    if rotary is not None:
        if not isinstance(rotary, Rotary):
            raise invalid("rotary", "an attnconf.reference.rotary.Rotary or None", repr(rotary))
        pos_q, pos_k = aligned_positions(T, S, alignment)
        q = rotary_embedding(q, pos_q, layout=rotary.layout, rotary_dim=rotary.rotary_dim, theta=rotary.theta,
                             dtype=precision)
        k = rotary_embedding(k, pos_k, layout=rotary.layout, rotary_dim=rotary.rotary_dim, theta=rotary.theta,
                             dtype=precision)

    group = H // H_kv
    k_full = np.repeat(in_compute(k, precision), group, axis=1)
    v_full = np.repeat(in_compute(v, precision), group, axis=1)
    logits = np.einsum("bhtd,bhsd->bhts", in_compute(q, precision), k_full)
    logits = round_to(logits * np.asarray(scale, dtype=logits.dtype), precision)
    if logit_softcap is not None:
        logits = softcap(logits, logit_softcap, dtype=precision)
    if bias is not None:
        logits = round_to(logits + in_compute(_as_bias4(bias, target), precision), precision)
    if alibi_slopes is not None:
        logits = round_to(in_compute(logits, precision) + in_compute(alibi, precision), precision)
    weights = round_to(
        softmax(in_compute(logits, precision), where=visible, fully_masked=fully_masked),
        precision,
    )
    out = round_to(np.einsum("bhts,bhsd->bhtd", in_compute(weights, precision), v_full), precision)
    if return_weights:
        return out, np.broadcast_to(weights, target).copy()
    return out


def project_heads(x: Array, kernel: Array, bias: Array | None, precision: str) -> Array:
    """`(B, N, E) @ (E, H, D) + (H, D)` -> `(B, H, N, D)`, in the given precision."""
    y = np.einsum("bne,ehd->bhnd", in_compute(x, precision), in_compute(kernel, precision))
    y = round_to(y, precision)
    if bias is not None:
        y = round_to(in_compute(y, precision) + in_compute(bias, precision)[None, :, None, :], precision)
    return y


def output_projection(heads: Array, kernel: Array, bias: Array | None, precision: str) -> Array:
    """`sum_h (B, H, T, D_v) @ (H, D_v, E_out) + (E_out,)` -> `(B, T, E_out)`, in the given precision.

    The sum over heads and head width is one einsum in the compute type of `precision`, rounded
    to `precision`; the bias is added in the compute type and the sum rounded again. Every layer
    built on a kernel (the reference's, `KernelAdapterBase`'s) merges its heads with this.
    """
    out = round_to(np.einsum("bhtd,hde->bte", in_compute(heads, precision), in_compute(kernel, precision)), precision)
    if bias is not None:
        out = round_to(in_compute(out, precision) + in_compute(bias, precision), precision)
    return out


def multi_head_attention(
    inputs: AttentionInputs,
    weights: AttentionWeights,
    *,
    alignment: Alignment = "top_left",
    fully_masked: FullyMaskedPolicy = "zeros",
    dtype: str | None = None,
    check_weights: bool = False,
    rotary: Rotary | None = None,
    alibi_slopes: Array | None = None,
    window: Window | None = None,
    logit_softcap: float | None = None,
) -> AttentionOutputs:
    """Multi-head attention on the canonical (einsum-layout) weights (docs/writing-an-adapter.md).

    ``q = query @ Wq + bq``, ``k = key @ Wk + bk``, ``v = value @ Wv + bv`` per head,
    ``o = scaled_dot_product_attention(q, k, v, mask[:, None], causal)`` and
    ``output = sum_h o_h @ Wo_h + bo``.

    Args:
        inputs: query `(B, T, E_q)`, key `(B, S, E_k)`, value `(B, S, E_v)`, mask `(B, T, S)`
            or None, causal, scale.
        weights: canonical kernels and optional biases.
        alignment: the causal alignment that `inputs.causal` means.
        fully_masked: outcome for a query row with no visible key.
        dtype: precision to evaluate in; None keeps the dtype of the query.
        check_weights: raise `ValueError` if any weight is NaN or infinite.
        rotary, alibi_slopes, window, logit_softcap: as in `scaled_dot_product_attention`, on the
            projected heads (rotary rotates the projected queries and keys).

    Returns:
        `AttentionOutputs` with output `(B, T, E_out)` and weights `(B, H, T, S)`.
    """
    if check_weights:
        for name, array in weights.arrays().items():
            check_finite(name, array)
    if inputs.query.shape[-1] != weights.query_dim:
        raise invalid("query", f"last axis E_q={weights.query_dim} as in query_kernel", inputs.query.shape)
    if inputs.key.shape[-1] != weights.key_dim:
        raise invalid("key", f"last axis E_k={weights.key_dim} as in key_kernel", inputs.key.shape)
    if inputs.value.shape[-1] != weights.value_dim:
        raise invalid("value", f"last axis E_v={weights.value_dim} as in value_kernel", inputs.value.shape)
    precision = dtype if dtype is not None else precision_of(inputs.query)
    q = project_heads(inputs.query, weights.query_kernel, weights.query_bias, precision)
    k = project_heads(inputs.key, weights.key_kernel, weights.key_bias, precision)
    v = project_heads(inputs.value, weights.value_kernel, weights.value_bias, precision)
    mask = None if inputs.mask is None else inputs.mask[:, None]
    heads, attn = scaled_dot_product_attention(
        q, k, v, mask=mask, causal=inputs.causal, alignment=alignment, scale=inputs.scale,
        return_weights=True, fully_masked=fully_masked, dtype=precision,
        rotary=rotary, alibi_slopes=alibi_slopes, window=window, logit_softcap=logit_softcap,
    )
    out = output_projection(heads, weights.output_kernel, weights.output_bias, precision)
    return AttentionOutputs(output=out, weights=attn)
