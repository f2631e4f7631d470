"""Outputs: returned weights, the default and a custom scale, dropout in inference mode, and the example."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from attnconf.audit import classify
from attnconf.audit.measure.common import TOL, base
from attnconf.audit.observe import AdapterRaised, Context, InvalidOutput, Result, Unsupported

Array = np.ndarray[Any, Any]


def example(ctx: Context) -> dict[str, Any]:
    """The heatmap example: effective weights of batch 0, head 0 on the base probe, and the error."""
    p = base()
    ref = p.reference()[0, 0]
    try:
        eff = ctx.effective(p)[0, 0]
    except (AdapterRaised, InvalidOutput, Unsupported) as err:
        return {"error": str(err)}
    return {"weights": eff, "abs_error": np.abs(eff - ref), "max_abs_error": classify.distance(eff, ref)}


def returned_weights(ctx: Context) -> Result:
    p = base()
    out = ctx.layer(p)
    if out.weights is None:
        return Result("none", "returns no attention weights", {"shape": None})
    w = np.asarray(out.weights, dtype=np.float64)
    ref = p.reference()
    mean = ref.mean(axis=1, keepdims=True)
    if w.ndim == 3:
        candidates = {"averaged": mean[:, 0]}
    else:
        candidates = {"per_head": ref, "averaged": np.broadcast_to(mean, ref.shape)}
    outcome, dists = classify.nearest(w, candidates, TOL["float32"])
    eff = ctx.effective(p, out)
    used = classify.distance(w, eff) if w.shape == eff.shape else None
    evidence = {"shape": list(w.shape), "distances": dists, "distance_to_effective_weights": used}
    note = "" if used is None or used <= TOL["float32"] else f"; they differ from the weights used by {used:.2g}"
    return Result(outcome or "other", f"returned weights of shape {tuple(w.shape)}: {outcome or 'other'}{note}",
                  evidence)


def _fit(ctx: Context, scale: float | None) -> tuple[float, float, dict[str, Any]]:
    p = base() if scale is None else base().with_inputs("custom_scale", scale=scale)
    eff = ctx.effective(p)
    s, residual = classify.fit_scale(eff, p.logits())
    return s, residual, {"fitted_scale": s, "fit_residual": residual, "D_k": p.S, "E": p.H * p.S}


def default_scale(ctx: Context) -> Result:
    s, residual, evidence = _fit(ctx, None)
    D, E = evidence["D_k"], evidence["E"]
    candidates = {"inv_sqrt_d_k": 1 / math.sqrt(D), "one": 1.0, "inv_d_k": 1 / D, "inv_sqrt_embed_dim": 1 / math.sqrt(E)}
    outcome, rel = classify.closest_value(s, candidates, 1e-3) if residual < 1e-2 else (None, {})
    evidence["relative_differences"] = rel
    return Result(outcome or "other", f"fitted logit scale {s:.6g} (1/sqrt(D_k) = {1 / math.sqrt(D):.6g})", evidence)


CUSTOM_SCALE = 0.3


def custom_scale(ctx: Context) -> Result:
    if not ctx.capabilities.custom_scale:
        raise Unsupported("capabilities.custom_scale=False: the adapter takes no scale argument")
    s, residual, evidence = _fit(ctx, CUSTOM_SCALE)
    candidates = {"honoured": CUSTOM_SCALE, "ignored": 1 / math.sqrt(evidence["D_k"])}
    outcome, rel = classify.closest_value(s, candidates, 1e-3) if residual < 1e-2 else (None, {})
    evidence["relative_differences"] = rel
    return Result(outcome or "other", f"scale={CUSTOM_SCALE} given; fitted logit scale {s:.6g}", evidence)


DROPOUT_RATE = 0.5


def dropout_inference(ctx: Context) -> Result:
    ctx.require("with_dropout")
    p = base()
    x, w = p.cast()
    dropped = ctx.check_outputs(ctx.call("with_dropout", x, w, p.dtype, DROPOUT_RATE), p)
    plain = ctx.layer(p)
    diff = classify.distance(dropped.output, plain.output)
    outcome = "inactive" if diff <= TOL["float32"] else "active"
    return Result(outcome, f"rate {DROPOUT_RATE} in inference mode: output differs from the dropout-free "
                  f"layer by {diff:.2g}", {"rate": DROPOUT_RATE, "max_abs_difference": diff})
