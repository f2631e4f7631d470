"""Precision: which precision the softmax runs in for float16/bfloat16 inputs, and large-logit stability.

The softmax-precision probe has exact logits (integers / 4) and one-hot values, so the output *is*
the weights as the implementation rounded them. A softmax computed wider and rounded once to the
input precision is within 0.5 ulp of the float64 weights; one computed in the input precision
(exp, running sum and division each rounded) is off by more. The report gives all three errors:
the adapter's, the float64 weights rounded once, and a softmax emulated in the input precision.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from attnconf.audit import classify, probes
from attnconf.audit.measure.common import seed
from attnconf.audit.observe import Context, Result
from attnconf.conformance.tolerances import derive, measure
from attnconf.reference.precision import round_to

Array = np.ndarray[Any, Any]


@functools.cache
def precision_probe(dtype: str) -> probes.Probe:
    """Exact one-hot probe: B = H = 2, T = 4, S = D = 16 (scale exactly 1/4), no output bias."""
    return probes.onehot(f"precision.{dtype}", seed("precision"), S=16, dtype=dtype, exact=True, output_bias=0.0)


def softmax_in(logits: Array, dtype: str) -> Array:
    """A softmax evaluated in `dtype`: every operation rounded, the sum accumulated left to right."""
    def r(a: Array) -> Array:
        return np.asarray(round_to(np.asarray(a, dtype=np.float64), dtype), dtype=np.float64)

    x = r(logits)
    e = r(np.exp(r(x - x.max(axis=-1, keepdims=True))))
    total = e[..., :1]
    for j in range(1, e.shape[-1]):
        total = r(total + e[..., j:j + 1])
    return r(e / total)


def softmax_precision(dtype: str) -> Callable[[Context], Result]:
    def run(ctx: Context) -> Result:
        ctx.require_dtype(dtype)
        p = precision_probe(dtype)
        eff = ctx.effective(p)
        exact = p.reference()
        scaled = p.logits() / 4.0
        if not np.array_equal(round_to(scaled, dtype), scaled):
            raise AssertionError("the precision probe's logits must be exact in " + dtype)
        errors = {
            "adapter": classify.ulp_error(eff, exact, dtype),
            "rounded_once": classify.ulp_error(round_to(exact, dtype), exact, dtype),
            f"softmax_in_{dtype}": classify.ulp_error(softmax_in(scaled, dtype), exact, dtype),
            "attnconf_reference": classify.ulp_error(p.reference(dtype=dtype), exact, dtype),
        }
        outcome = classify.softmax_precision(errors["adapter"], errors[f"softmax_in_{dtype}"], dtype)
        evidence = {"max_error_ulps": errors, "S": p.S, "threshold_ulps": classify.ROUNDED_ONCE_ULPS}
        return Result(outcome, f"max error {errors['adapter']:.3g} ulp of {dtype} (rounded once: "
                      f"{errors['rounded_once']:.3g}; softmax in {dtype}: {errors[f'softmax_in_{dtype}']:.3g})",
                      evidence)
    return run


def large_logits(dtype: str, base: float) -> Callable[[Context], Result]:
    def run(ctx: Context) -> Result:
        ctx.require_dtype(dtype)
        p = probes.large_logits(f"large_logits.{dtype}", seed("large_logits"), dtype=dtype, base=base)
        eff = ctx.effective(p)
        exact = p.reference()
        tol = derive(exact, p.reference(dtype=dtype), dtype)
        err = measure(eff, exact)
        if not np.isfinite(eff).all():
            outcome = "overflow"
        else:
            outcome = "stable" if err.max_abs <= tol.atol else "inaccurate"
        evidence = {"logit_magnitude": base, "max_abs_error": err.max_abs, "atol": tol.atol,
                    "nonfinite_weights": int(np.size(eff) - np.isfinite(eff).sum())}
        return Result(outcome, f"logits near ±{base:g} in {dtype}: max error {err.max_abs:.2g} "
                      f"(tolerance {tol.atol:.2g})", evidence)
    return run
