"""First-order rounding-error bounds of multi-head attention, element by element.

`multi_head_attention_error_bound(inputs, weights, dtype=p)` returns, for every element of the
output `(B, T, E_out)` and of the attention weights `(B, H, T, S)`, a bound on the error that an
honest evaluation in precision `p` makes on these (already rounded) inputs, to first order in
the unit roundoff. "Honest" means: every primitive step (a projection, the logits, the softmax,
the weighted sum, the output projection) is evaluated in `p` or wider, sums are accumulated in
the compute type (float32 for float16 and bfloat16) in any order, and each step's result may be
rounded to `p`. Skipping a rounding, fusing the scale into the query, keeping the softmax in a
wider type, or computing ``exp(l - m) @ V / sum`` instead of ``softmax(l) @ V`` all stay within
it. The bound is the same computation done on magnitudes (a running-error analysis):

* each rounding to `p` of a value `y` costs ``u |y|`` (u: unit roundoff of `p`);
* a sum of `n` products accumulated in the compute type costs ``n w sum |a| |b|`` (w: unit
  roundoff of the compute type; this is the worst case of any summation order);
* an error `e_x` of an operand reaches a product's result as ``sum |e_x| |y|``;
* an error `e_l` of the logits of a row reaches the softmax weights as
  ``delta p_s = p_s (delta l_s - sum_r p_r delta l_r)``, and so a head's output as
  ``sum_s p_s delta l_s (v_s - o)``: the logits' errors are weighted by the spread of the values
  around the output, not by their size (equal values make the logits' errors harmless).

The bound is exactly 0 where the spec's result is exactly 0 in every honest evaluation: the
weight of a key the mask or the causal flag hides, a product with an all-zero kernel. Where it
is positive, the smallest normal number of `p` is added (flush-to-zero of an underflowing
result is honest). See docs/tolerances.md for the derivation of each term.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights
from attnconf.reference._checks import check_dtype_name, invalid
from attnconf.reference.masks import Alignment, causal_mask
from attnconf.reference.precision import UNIT_ROUNDOFF, compute_dtype

Array = np.ndarray[Any, Any]

#: Roundings a scale computed in a lower precision may carry: the scale itself, a square root
#: and a product (``fl(sqrt(fl(s)))^2`` scaling both the query and the key).
SCALE_ROUNDINGS = 3

#: The smallest normal number of each precision: the error flush-to-zero may make.
TINY = {
    "float64": float(np.finfo(np.float64).tiny),
    "float32": float(np.finfo(np.float32).tiny),
    "float16": float(np.finfo(np.float16).tiny),
    "bfloat16": float(np.finfo(np.float32).tiny),
}


def _compute_roundoff(dtype: str) -> float:
    """Unit roundoff of the type sums are accumulated in for precision `dtype`."""
    return UNIT_ROUNDOFF[str(compute_dtype(dtype))]


class _Bounds:
    """The per-step error terms for precision `dtype` (u: storage, w: compute roundoff)."""

    def __init__(self, dtype: str) -> None:
        if check_dtype_name("dtype", dtype) == "longdouble":
            raise invalid("dtype", "one of float64, float32, float16, bfloat16", repr(dtype))
        self.u = UNIT_ROUNDOFF[dtype]
        self.w = _compute_roundoff(dtype)

    def gamma(self, n: int) -> float:
        """Worst-case relative error of a sum of `n` terms accumulated in the compute type."""
        return n * self.w

    def projection(self, x: Array, kernel: Array, bias: Array | None) -> tuple[Array, Array]:
        """`(y, e_y)`: `(B, N, E) @ (E, H, D) + (H, D)` -> `(B, H, N, D)` and its error bound.

        Terms: the accumulation over E, the rounding of ``x @ W``, the rounding after the bias."""
        y0 = np.einsum("bne,ehd->bhnd", x, kernel)
        a = np.einsum("bne,ehd->bhnd", np.abs(x), np.abs(kernel))
        err = self.gamma(x.shape[-1]) * a + self.u * np.abs(y0)
        y = y0
        if bias is not None:
            y = y0 + bias[None, :, None, :]
            err = err + self.u * np.abs(y)
        return y, err


def _visible(inputs: AttentionInputs, T: int, S: int, alignment: Alignment) -> Array:
    """`(B or 1, 1, T, S)`: True where query t may attend key s."""
    vis = np.ones((1, 1, T, S), dtype=bool)
    if inputs.mask is not None:
        vis = vis & np.asarray(inputs.mask, dtype=bool)[:, None]
    if inputs.causal:
        vis = vis & causal_mask(T, S, alignment)[None, None]
    return vis


def multi_head_attention_error_bound(
    inputs: AttentionInputs,
    weights: AttentionWeights,
    *,
    dtype: str,
    alignment: Alignment = "top_left",
    scale_dtype: str | None = None,
) -> AttentionOutputs:
    """First-order error bounds of an honest evaluation of `multi_head_attention` in `dtype`.

    Args:
        inputs: query `(B, T, E_q)`, key `(B, S, E_k)`, value `(B, S, E_v)`, mask `(B, T, S)` or
            None, causal, scale; already rounded to `dtype` (values are used as they are).
        weights: canonical kernels and optional biases, already rounded to `dtype`.
        dtype: the precision of the evaluation bounded (float64, float32, float16, bfloat16).
        alignment: the causal alignment `inputs.causal` means.
        scale_dtype: the precision the logit scale is computed in, when it is lower than `dtype`
            (a framework that rounds the scale, or its square root, to float32 in a float64
            evaluation): each logit then carries ``SCALE_ROUNDINGS * u_scale |l|`` more, which
            reaches the weights and outputs like every logit error. None: `dtype`.

    Returns:
        `AttentionOutputs` whose `output` `(B, T, E_out)` and `weights` `(B, H, T, S)` hold the
        bounds, float64, non-negative; rows with no visible key get weight bounds 0 and output
        bounds for an all-zero head output.
    """
    bounds = _Bounds(dtype)
    u = bounds.u

    def f64(a: Array | None) -> Array | None:
        return None if a is None else np.asarray(a, dtype=np.float64)

    x_q, x_k, x_v = (np.asarray(a, dtype=np.float64) for a in (inputs.query, inputs.key, inputs.value))
    q, e_q = bounds.projection(x_q, np.asarray(weights.query_kernel, np.float64), f64(weights.query_bias))
    k, e_k = bounds.projection(x_k, np.asarray(weights.key_kernel, np.float64), f64(weights.key_bias))
    v, e_v = bounds.projection(x_v, np.asarray(weights.value_kernel, np.float64), f64(weights.value_bias))
    group = q.shape[1] // k.shape[1]
    k, e_k, v, e_v = (np.repeat(a, group, axis=1) for a in (k, e_k, v, e_v))
    B, H, T, D_k = q.shape
    S = k.shape[2]
    scale = inputs.scale if inputs.scale is not None else 1.0 / math.sqrt(D_k)
    s = abs(float(scale))

    # Logits (B, H, T, S): the operands' errors, the accumulation over D_k, the rounding of the
    # scaled query (a fused scale), of the unscaled logit, of the scale itself and of the result,
    # and the rounding of l - max in the softmax.
    logits = np.einsum("bhtd,bhsd->bhts", q, k) * float(scale)
    abs_qk = s * np.einsum("bhtd,bhsd->bhts", np.abs(q), np.abs(k))
    e_l = s * (np.einsum("bhtd,bhsd->bhts", e_q, np.abs(k)) + np.einsum("bhtd,bhsd->bhts", np.abs(q), e_k))
    e_l = e_l + (bounds.gamma(D_k) + u) * abs_qk + 3 * u * np.abs(logits)
    if scale_dtype is not None and check_dtype_name("scale_dtype", scale_dtype) != dtype:
        if UNIT_ROUNDOFF[scale_dtype] <= u:
            raise invalid("scale_dtype", f"a precision lower than dtype {dtype!r}", repr(scale_dtype))
        e_l = e_l + SCALE_ROUNDINGS * UNIT_ROUNDOFF[scale_dtype] * np.abs(logits)
    visible = np.broadcast_to(_visible(inputs, T, S, alignment), logits.shape)
    row_max = np.max(np.where(visible, logits, -np.inf), axis=-1, keepdims=True)
    any_visible = np.isfinite(row_max)
    row_max = np.where(any_visible, row_max, 0.0)
    e_l = np.where(visible, e_l + u * np.abs(logits - row_max), 0.0)

    # Softmax weights (B, H, T, S): p_s (e_l_s + sum_r p_r e_l_r) from the logits, and the
    # roundings of exp, of the division and of the result (3u) and the accumulated sum.
    ex = np.where(visible, np.exp(np.where(visible, logits - row_max, 0.0)), 0.0)
    total = ex.sum(axis=-1, keepdims=True)
    p = ex / np.where(total > 0, total, 1.0)
    mean_e_l = np.sum(p * e_l, axis=-1, keepdims=True)
    own = 3 * u + bounds.gamma(S)
    e_p = p * (e_l + mean_e_l + own)

    # Head outputs (B, H, T, D_v): the logits' errors weighted by the values' spread around the
    # output, the weights' own roundings, the values' errors, the accumulation over S (the sum
    # and the normalising sum) and the rounding of the result.
    o = np.einsum("bhts,bhsd->bhtd", p, v)
    pe_l = p * e_l
    spread_term = np.empty_like(o)
    for h in range(H):  # one head at a time: the spread |v_s - o_t| is (B, T, S, D_v)
        spread = np.abs(v[:, h, None, :, :] - o[:, h, :, None, :])
        spread_term[:, h] = np.einsum("bts,btsd->btd", pe_l[:, h], spread)
    pv_abs = np.einsum("bhts,bhsd->bhtd", p, np.abs(v))
    e_o = spread_term + (own + bounds.gamma(S)) * pv_abs + np.einsum("bhts,bhsd->bhtd", p, e_v) + u * np.abs(o)

    # Output (B, T, E_out): the heads' errors, the accumulation over H * D_v, the rounding of
    # the product and of the sum with the bias.
    wo = np.asarray(weights.output_kernel, dtype=np.float64)
    out0 = np.einsum("bhtd,hde->bte", o, wo)
    e_out = (
        np.einsum("bhtd,hde->bte", e_o, np.abs(wo))
        + bounds.gamma(H * wo.shape[1]) * np.einsum("bhtd,hde->bte", np.abs(o), np.abs(wo))
        + u * np.abs(out0)
    )
    if weights.output_bias is not None:
        e_out = e_out + u * np.abs(out0 + np.asarray(weights.output_bias, dtype=np.float64))

    tiny = TINY[dtype]
    e_out = np.where(e_out > 0, e_out + tiny, 0.0)
    e_p = np.where(visible, e_p + tiny, 0.0)
    return AttentionOutputs(output=e_out, weights=e_p)
