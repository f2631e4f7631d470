"""Gradients through a fully masked row (issue 10): finite, zero, NaN, or inconsistent with the forward.

The cotangent is 1 on the fully masked output row and 0 elsewhere, so every gradient measures only
what flows back through that row. The output bias is left out of the classification (its gradient is
the cotangent itself). Layer adapters are asked for `multi_head_attention_vjp`, and its directional
derivative along a fixed random direction (every input and weight) is checked against a central finite
difference of the adapter's own `multi_head_attention`: a backward pass that recomputes the softmax
differently from the forward shows up there. Kernel adapters without it are asked for
`dot_product_attention_vjp` on the reference's projections.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from attnconf.audit.measure.common import MASKED_ROW, masked_row, seed
from attnconf.audit.observe import Context, InvalidOutput, Result, Unsupported
from attnconf.contract import AttentionInputs, AttentionWeights
from attnconf.reference import project_heads

Array = np.ndarray[Any, Any]
ZERO = 1e-30  # gradients at most this large count as zero
EPS = 3e-3  # finite-difference step along a unit-variance direction, float32
CONSISTENT = 0.05  # relative difference allowed between the VJP and the finite difference


def consistency(ctx: Context, x: AttentionInputs, w: AttentionWeights, dtype: str, cot: Array,
                grads: dict[str, Array]) -> dict[str, Any]:
    """<vjp, u> against (f(x + eps u) - f(x - eps u)) / 2 eps with f = sum(output * cot)."""
    rng = np.random.default_rng(seed("gradient-direction"))
    arrays = {"query": x.query, "key": x.key, "value": x.value, **w.arrays()}
    direction = {n: rng.standard_normal(np.shape(a)) for n, a in arrays.items()}
    missing = sorted(set(direction) - set(grads))
    if missing:
        return {"checked": False, "reason": f"no gradient for {', '.join(missing)}"}
    analytic = sum(float(np.sum(np.asarray(grads[n], dtype=np.float64) * u)) for n, u in direction.items())

    def f(sign: float) -> float:
        moved = {n: np.asarray(a, dtype=np.float64) + sign * EPS * direction[n] for n, a in arrays.items()}
        xi = dataclasses.replace(x, query=moved.pop("query"), key=moved.pop("key"), value=moved.pop("value"))
        out = ctx.call("multi_head_attention", xi.astype(dtype), AttentionWeights(**moved).astype(dtype), dtype)
        return float(np.sum(np.asarray(out.output, dtype=np.float64) * cot))

    numeric = (f(1.0) - f(-1.0)) / (2 * EPS)
    rel = abs(analytic - numeric) / max(abs(analytic), abs(numeric), 1e-6)
    return {"checked": True, "vjp_directional_derivative": analytic, "finite_difference": numeric,
            "relative_difference": rel, "eps": EPS, "consistent": bool(rel <= CONSISTENT)}


def grad_fully_masked_row(ctx: Context) -> Result:
    p = masked_row("float32")
    b, t = MASKED_ROW
    x, w = p.cast()
    if ctx.has("multi_head_attention_vjp"):
        cot = np.zeros((p.B, p.T, w.output_dim), dtype=np.float32)
        cot[b, t] = 1.0
        grads = ctx.call("multi_head_attention_vjp", x, w, p.dtype, cot)
        via = "multi_head_attention_vjp"
        if not isinstance(grads, dict) or not grads:
            raise InvalidOutput(f"{via} returned {type(grads).__name__}, expected a dict of gradients")
        check = consistency(ctx, x, w, p.dtype, cot, grads)
    elif ctx.capabilities.level == "kernel" and ctx.has("dot_product_attention_vjp"):
        q = project_heads(x.query, w.query_kernel, w.query_bias, p.dtype)
        k = project_heads(x.key, w.key_kernel, w.key_bias, p.dtype)
        v = project_heads(x.value, w.value_kernel, w.value_bias, p.dtype)
        mask = np.broadcast_to(np.asarray(x.mask)[:, None], (p.B, p.H, p.T, p.S)).copy()
        cot = np.zeros(v.shape[:2] + (p.T, v.shape[-1]), dtype=np.float32)
        cot[b, :, t] = 1.0
        grads = ctx.call("dot_product_attention_vjp", q, k, v, mask, False, None, p.dtype, cot)
        via = "dot_product_attention_vjp"
        check = {"checked": False, "reason": "kernel-level gradients are not checked against the forward"}
    else:
        raise Unsupported("the adapter has neither `multi_head_attention_vjp` nor `dot_product_attention_vjp` "
                          "(optional methods, attnconf.adapters.base.OptionalMethods)")
    if not isinstance(grads, dict) or not grads:
        raise InvalidOutput(f"{via} returned {type(grads).__name__}, expected a dict of gradients")
    stats: dict[str, dict[str, float]] = {}
    for name in sorted(grads):
        g = np.asarray(grads[name], dtype=np.float64)
        finite = np.isfinite(g)
        stats[name] = {"max_abs": float(np.max(np.abs(g[finite]), initial=0.0)), "nonfinite": int(g.size - finite.sum())}
    considered = {n: s for n, s in stats.items() if n != "output_bias"}
    nonfinite = [n for n, s in considered.items() if s["nonfinite"]]
    if nonfinite:
        outcome, why = "nan", f"non-finite gradients for {', '.join(nonfinite)}"
    elif check.get("checked") and not check["consistent"]:
        outcome, why = "inconsistent", (f"finite, but <vjp, u> = {check['vjp_directional_derivative']:.4g} where "
                                        f"the forward's finite difference is {check['finite_difference']:.4g}")
    elif all(s["max_abs"] <= ZERO for s in considered.values()):
        outcome, why = "zero", "every gradient is zero"
    else:
        big = max(considered, key=lambda n: considered[n]["max_abs"])
        outcome, why = "finite", f"finite; largest |gradient| {considered[big]['max_abs']:.3g} for {big}"
    return Result(outcome, f"cotangent on the fully masked row only ({via}): {why}",
                  {"via": via, "gradients": stats, "consistency": check})
