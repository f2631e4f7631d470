"""The backward pass of attention: the specification of its gradients.

Each function is the vector-Jacobian product of its forward counterpart in `attention.py`: for
an output cotangent ``dO`` (the gradient of a scalar loss with respect to the output), the
gradients of ``sum(output * dO)`` with respect to every input. Shapes use the names of
`attention.py`: B batch, H query heads, H_kv key/value heads (``G = H // H_kv`` query heads per
group), T queries, S keys, D_k key width, D_v value width, E_q/E_k/E_v input widths, E_out.

Scaled dot-product attention, per batch element and query head ``h`` reading kv head
``g = h // G``::

    L  = scale * q_h @ k_g^T + bias                   (T, S)    logits
    P  = softmax(L, where=visible)                    (T, S)    0 where a key is not visible
    O  = P @ v_g                                      (T, D_v)

    dP = dO @ v_g^T                                   (T, S)
    dL = P * (dP - rowsum(P * dP))                    (T, S)    the softmax Jacobian
    dq_h = scale * dL @ k_g                           (T, D_k)
    dk_g = sum over the G heads h of group g of  scale * dL^T @ q_h      (S, D_k)
    dv_g = sum over the G heads h of group g of  P^T @ dO                (S, D_v)

A key that is not visible has ``P = 0``, hence ``dL = 0``: no gradient reaches it. A query row
with no visible key follows the `fully_masked` policy of the forward: ``"zeros"`` (P = 0, so
every gradient through the row is 0), ``"nan"`` (NaN propagates) or ``"uniform"`` (P = 1/S does
not depend on the logits: ``dL = 0`` and ``dv += P^T @ dO``).

`dtype` evaluates the same steps in another precision the way the forward does
(`attnconf.reference.precision`): each step computed in the compute dtype, its result rounded.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from attnconf.contract import AttentionInputs, AttentionWeights
from attnconf.reference._checks import as_float_array, check_choice, check_dtype_name, invalid
from attnconf.reference.attention import (
    _as_bias4,
    _as_mask4,
    project_heads,
    scaled_dot_product_attention,
)
from attnconf.reference.masks import Alignment, causal_mask
from attnconf.reference.precision import in_compute, round_to
from attnconf.reference.softmax import FULLY_MASKED_POLICIES, FullyMaskedPolicy

Array = np.ndarray[Any, Any]


def _step(subscripts: str, a: Array, b: Array, precision: str, factor: float = 1.0) -> Array:
    """One product ``factor * einsum(subscripts, a, b)`` computed and rounded in `precision`."""
    y = np.einsum(subscripts, in_compute(a, precision), in_compute(b, precision))
    if factor != 1.0:
        y = y * np.asarray(factor, dtype=y.dtype)
    return round_to(y, precision)


def _group_sum(x: Array, H_kv: int, precision: str) -> Array:
    """`(B, H, N, D)` -> `(B, H_kv, N, D)`: the sum over the query heads of each kv group."""
    B, H, N, D = x.shape
    if H == H_kv:
        return x
    return round_to(in_compute(x, precision).reshape(B, H_kv, H // H_kv, N, D).sum(axis=2), precision)


def _visible(
    target: tuple[int, int, int, int], mask: Array | None, bias: Array | None, causal: bool, alignment: Alignment
) -> Array:
    """`(B, H, T, S)` (or broadcastable): where a key takes part in the softmax."""
    visible = np.ones((1, 1, target[2], target[3]), dtype=bool)
    if mask is not None:
        visible = visible & _as_mask4(mask, target)
    if bias is not None:
        visible = visible & ~np.isneginf(_as_bias4(bias, target))
    if causal:
        visible = visible & causal_mask(target[2], target[3], alignment)[None, None]
    return visible


def _sdpa_vjp(
    q: Array, k: Array, v: Array, cotangent: Array, mask: Array | None, bias: Array | None,
    causal: bool, alignment: Alignment, scale: float | None, fully_masked: FullyMaskedPolicy,
    precision: str,
) -> tuple[dict[str, Array], Array]:
    """The gradients and the forward output `(B, H, T, D_v)` (which the layer's backward reuses)."""
    out, P = scaled_dot_product_attention(
        q, k, v, mask=mask, bias=bias, causal=causal, alignment=alignment, scale=scale,
        return_weights=True, fully_masked=fully_masked, dtype=precision,
    )
    B, H, T, D_k = q.shape
    H_kv, S, D_v = v.shape[1], v.shape[2], v.shape[3]
    dO = as_float_array("cotangent", cotangent, 4)
    if dO.shape != (B, H, T, D_v):
        raise invalid("cotangent", f"shape of the output (B, H, T, D_v)={(B, H, T, D_v)}", dO.shape)
    if scale is None:
        scale = 1.0 / math.sqrt(D_k)
    group = H // H_kv
    k_full = np.repeat(in_compute(k, precision), group, axis=1)  # (B, H, S, D_k)
    v_full = np.repeat(in_compute(v, precision), group, axis=1)  # (B, H, S, D_v)

    dP = _step("bhtd,bhsd->bhts", dO, v_full, precision)  # (B, H, T, S)
    dv = _step("bhts,bhtd->bhsd", P, dO, precision)  # (B, H, S, D_v)
    Pc = in_compute(P, precision)
    row = round_to(np.sum(Pc * in_compute(dP, precision), axis=-1, keepdims=True), precision)  # (B, H, T, 1)
    dL = round_to(Pc * (in_compute(dP, precision) - in_compute(row, precision)), precision)
    if fully_masked != "nan":
        # A row without a visible key: its weights do not depend on the logits.
        visible = np.broadcast_to(_visible((B, H, T, S), mask, bias, causal, alignment), (B, H, T, S))
        empty: Array = ~np.any(visible, axis=-1, keepdims=True)  # (B, H, T, 1)
        dL = np.where(empty, 0, dL).astype(dL.dtype)
    dq = _step("bhts,bhsd->bhtd", dL, k_full, precision, scale)  # (B, H, T, D_k)
    dk = _step("bhts,bhtd->bhsd", dL, q, precision, scale)  # (B, H, S, D_k)
    grads = {"q": dq, "k": _group_sum(dk, H_kv, precision), "v": _group_sum(dv, H_kv, precision)}
    return grads, out


def scaled_dot_product_attention_vjp(
    q: Array,
    k: Array,
    v: Array,
    cotangent: Array,
    mask: Array | None = None,
    bias: Array | None = None,
    causal: bool = False,
    alignment: Alignment = "top_left",
    scale: float | None = None,
    fully_masked: FullyMaskedPolicy = "zeros",
    dtype: str | None = None,
) -> dict[str, Array]:
    """Gradients of ``sum(scaled_dot_product_attention(q, k, v, ...) * cotangent)``.

    Args:
        q: queries `(B, H, T, D_k)`.
        k: keys `(B, H_kv, S, D_k)`; query head `h` reads kv head `h // (H // H_kv)`.
        v: values `(B, H_kv, S, D_v)`.
        cotangent: the gradient with respect to the output, `(B, H, T, D_v)`.
        mask, bias, causal, alignment, scale, fully_masked: as in `scaled_dot_product_attention`.
        dtype: precision to evaluate in; None keeps the dtype of `q`.

    Returns:
        ``{"q": (B, H, T, D_k), "k": (B, H_kv, S, D_k), "v": (B, H_kv, S, D_v)}``; the kv
        gradients are summed over the query heads of each group.
    """
    check_choice("fully_masked", fully_masked, FULLY_MASKED_POLICIES)
    q = as_float_array("q", q, 4)
    precision = check_dtype_name("dtype", dtype) if dtype is not None else str(q.dtype)
    grads, _ = _sdpa_vjp(q, k, v, cotangent, mask, bias, causal, alignment, scale, fully_masked, precision)
    return grads


def multi_head_attention_vjp(
    inputs: AttentionInputs,
    weights: AttentionWeights,
    cotangent: Array,
    *,
    alignment: Alignment = "top_left",
    fully_masked: FullyMaskedPolicy = "zeros",
    dtype: str | None = None,
) -> dict[str, Array]:
    """Gradients of ``sum(multi_head_attention(inputs, weights).output * cotangent)``.

    With ``q = query @ Wq + bq`` `(B, H, T, D_k)` (likewise k, v), the heads ``o`` `(B, H, T, D_v)`
    and ``output = sum_h o_h @ Wo_h + bo``, for ``dY = cotangent`` `(B, T, E_out)`::

        d output_bias = sum_{b,t} dY                  (E_out,)
        d output_kernel = sum_{b,t} o ⊗ dY            (H, D_v, E_out)
        do = dY @ Wo^T                                (B, H, T, D_v)
        dq, dk, dv = scaled_dot_product_attention_vjp(q, k, v, do, ...)
        d query = dq @ Wq^T    d query_kernel = query^T @ dq    d query_bias = sum_{b,t} dq

    and likewise for key and value. In self-attention (``inputs.key is inputs.query``) the three
    input gradients are still reported separately: they are the partial derivatives with
    respect to the query, key and value arguments; their sum is the total derivative with
    respect to the shared array.

    Args:
        inputs: query `(B, T, E_q)`, key `(B, S, E_k)`, value `(B, S, E_v)`, mask `(B, T, S)` or
            None, causal, scale.
        weights: canonical kernels and optional biases.
        cotangent: the gradient with respect to the output, `(B, T, E_out)`.
        alignment: the causal alignment that `inputs.causal` means.
        fully_masked: outcome for a query row with no visible key.
        dtype: precision to evaluate in; None keeps the dtype of the query.

    Returns:
        ``"query"`` `(B, T, E_q)`, ``"key"`` `(B, S, E_k)`, ``"value"`` `(B, S, E_v)` and one
        entry per present weight, by canonical name and in canonical shape.
    """
    for name, x, width, kernel in (("query", inputs.query, weights.query_dim, "query_kernel"),
                                   ("key", inputs.key, weights.key_dim, "key_kernel"),
                                   ("value", inputs.value, weights.value_dim, "value_kernel")):
        if x.shape[-1] != width:
            raise invalid(name, f"last axis of size {width} as in {kernel}", x.shape)
    check_choice("fully_masked", fully_masked, FULLY_MASKED_POLICIES)
    precision = check_dtype_name("dtype", dtype) if dtype is not None else str(inputs.query.dtype)
    B, T = inputs.query.shape[:2]
    dY = as_float_array("cotangent", cotangent, 3)
    if dY.shape != (B, T, weights.output_dim):
        raise invalid("cotangent", f"shape of the output (B, T, E_out)={(B, T, weights.output_dim)}", dY.shape)

    q = project_heads(inputs.query, weights.query_kernel, weights.query_bias, precision)
    k = project_heads(inputs.key, weights.key_kernel, weights.key_bias, precision)
    v = project_heads(inputs.value, weights.value_kernel, weights.value_bias, precision)
    d_heads = _step("bte,hde->bhtd", dY, weights.output_kernel, precision)  # (B, H, T, D_v)
    mask = None if inputs.mask is None else inputs.mask[:, None]
    g, heads = _sdpa_vjp(q, k, v, d_heads, mask, None, inputs.causal, alignment, inputs.scale,
                         fully_masked, precision)

    grads: dict[str, Array] = {}
    projections = (("query", inputs.query, g["q"]), ("key", inputs.key, g["k"]), ("value", inputs.value, g["v"]))
    for name, _, d in projections:
        grads[name] = _step("bhnd,ehd->bne", d, getattr(weights, f"{name}_kernel"), precision)
    for name, x, d in projections:
        grads[f"{name}_kernel"] = _step("bne,bhnd->ehd", x, d, precision)
    grads["output_kernel"] = _step("bhtd,bte->hde", heads, dY, precision)
    for name, _, d in projections:
        if getattr(weights, f"{name}_bias") is not None:
            grads[f"{name}_bias"] = round_to(in_compute(d, precision).sum(axis=(0, 2)), precision)
    if weights.output_bias is not None:
        grads["output_bias"] = round_to(in_compute(dY, precision).sum(axis=(0, 1)), precision)
    return grads
