"""Helpers of the invariant chapters: build cases, run an adapter twice, compare it with itself.

An invariant relates two runs of the same adapter: run `a` on one input and run `b` on a
transformed input (a masked key changed, the sequence permuted, the heads sliced, ...). The
float64 reference gives the exact change between them (zero for a true invariance, up to the
rounding of transformed weights); the adapter's change must match it within the sum of the
agreement tolerances of both runs, element by element (`tolerances.derive_change`, with the
first-order error model of each run, `Checker.error_bounds`). Every run is also checked for NaN
or infinity where the reference is finite (or of another kind or sign), so an adapter cannot
satisfy an invariance by returning NaN twice, and for weight on a key the spec hides
(`Checker.masked_weights_zero`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from attnconf.conformance.cases import make_inputs, make_weights
from attnconf.conformance.check import Checker
from attnconf.conformance.strategies import Shape
from attnconf.conformance.tolerances import derive, derive_change, measure, ratios
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights
from attnconf.reference import project_heads

Array = np.ndarray[Any, Any]


def require(adapter: Any, **needs: bool) -> None:
    """Skip unless every named capability of `adapter` has the given value."""
    caps = adapter.capabilities
    for name, value in needs.items():
        if getattr(caps, name) != value:
            pytest.skip(f"{adapter.name} has capabilities.{name}={getattr(caps, name)}, this test needs {value}")


# -- cases -----------------------------------------------------------------------------------


def case(shape: Shape, seed: int, *, mask: Array | None = None, causal: bool = False, scale: float | None = None,
         self_attention: bool = False) -> tuple[AttentionInputs, AttentionWeights]:
    """Random float64 inputs and weights of `shape` (as in `cases`), with biases."""
    cfg = shape.config(self_attention=self_attention)
    rng = np.random.default_rng(seed)
    inputs = make_inputs(cfg, rng)
    return dataclasses.replace(inputs, mask=mask, causal=causal, scale=scale), make_weights(cfg, rng)


def logits(inputs: AttentionInputs, weights: AttentionWeights) -> Array:
    """The float64 logits `(B, H, T, S)` (scale applied, no mask) of a case."""
    q = project_heads(inputs.query, weights.query_kernel, weights.query_bias, "float64")
    k = project_heads(inputs.key, weights.key_kernel, weights.key_bias, "float64")
    k = np.repeat(k, weights.num_heads // weights.num_kv_heads, axis=1)
    scale = inputs.scale if inputs.scale is not None else 1.0 / np.sqrt(weights.key_head_dim)
    return np.einsum("bhtd,bhsd->bhts", q, k) * scale


def with_logit_magnitude(inputs: AttentionInputs, weights: AttentionWeights, magnitude: float) -> AttentionWeights:
    """Weights whose query projection is scaled so that the largest |logit| is `magnitude`."""
    factor = magnitude / float(np.max(np.abs(logits(inputs, weights))))
    qb = None if weights.query_bias is None else weights.query_bias * factor
    return dataclasses.replace(weights, query_kernel=weights.query_kernel * factor, query_bias=qb)


def pad(a: Array | None, axis: int, n: int) -> Array | None:
    """`a` with `n` zeros appended along `axis` (None stays None)."""
    if a is None or n == 0:
        return a
    shape = list(a.shape)
    shape[axis] = n
    return np.concatenate([a, np.zeros(shape, dtype=a.dtype)], axis=axis)


def perturb(x: Array, index: Any, rng: np.random.Generator, magnitude: float = 1.0) -> Array:
    """A copy of `x` with `x[index]` replaced by fresh N(0, magnitude^2) values."""
    y = np.array(x, dtype=np.float64)
    y[index] = rng.standard_normal(y[index].shape) * magnitude
    return y


# -- running ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One adapter run and the references on the same (rounded) inputs."""

    got: AttentionOutputs
    exact: AttentionOutputs
    same: AttentionOutputs
    label: str
    bound: AttentionOutputs | None = None  # first-order error model per element (None: the uniform rule)


def run(check: Checker, inputs: AttentionInputs, weights: AttentionWeights, label: str = "run") -> Run:
    """Run the adapter on `inputs` and `weights` rounded to the dtype; fail on unexpected NaN/inf."""
    __tracebackhide__ = True
    got = check.layer(inputs, weights)
    exact, same = check.references(inputs, weights)
    bound = check.error_bounds(inputs, weights)
    fields = [("output", got.output, exact.output)]
    if got.weights is not None:
        fields.append(("attention weights", got.weights, exact.weights))
    for what, g, e in fields:
        errs = measure(g, e)
        if errs.nan_mismatch is not None:
            i = errs.nan_mismatch
            fail(check, f"{what} of {label} is not finite where the float64 reference is, or of another kind or sign",
                 [f"at index {i}: expected {np.asarray(e)[i]!r}, got {np.asarray(g)[i]!r}"])
    if got.weights is not None:
        check.masked_weights_zero(inputs, got.weights, label=label)
    return Run(got, exact, same, label, bound)


def call(check: Checker, method: str, inputs: AttentionInputs, weights: AttentionWeights,
         *args: Any) -> AttentionOutputs:
    """Call an optional adapter method (e.g. `with_dropout`) on inputs rounded to the dtype."""
    x, w = inputs.astype(check.dtype), weights.astype(check.dtype)
    return check._validate(getattr(check.adapter, method)(x, w, check.dtype, *args), x, w)


# -- comparing -------------------------------------------------------------------------------


def fail(check: Checker, claim: str, lines: list[str]) -> None:
    """Raise the chapter's failure: the claim, adapter and dtype, details, the reproduce line."""
    __tracebackhide__ = True
    head = f"{claim}\n  adapter {check.adapter.name!r} in {check.dtype}"
    raise AssertionError("\n".join([head, *(f"  {line}" for line in lines), f"  reproduce: {check.reproduce}"]))


def _field(out: AttentionOutputs, what: str) -> Array:
    arr = out.output if what == "output" else out.weights
    return np.asarray(arr, dtype=np.float64)


def _model(r: Run, what: str) -> Array | None:
    return None if r.bound is None else _field(r.bound, what)


def assert_change(check: Checker, a: Run, b: Run, claim: str, *, what: str = "output",
                  where: Array | None = None, map_a: Callable[[Array], Array] | None = None,
                  map_b: Callable[[Array], Array] | None = None) -> None:
    """Assert that the adapter's change from run `a` to run `b` is the exact change.

    Args:
        claim: the invariant, as the first line of a failure ("masking: ...").
        what: "output" or "weights" (the returned attention weights).
        where: boolean, broadcastable to the compared arrays: only these entries are compared.
        map_a: applied to run a's arrays before comparing (e.g. the permutation of the sequence).
        map_b: applied to run b's arrays before comparing (e.g. dropping padded features).
    """
    __tracebackhide__ = True
    fa: Callable[[Array], Array] = map_a or (lambda x: x)
    fb: Callable[[Array], Array] = map_b or (lambda x: x)
    ga, ea, sa = (fa(_field(r, what)) for r in (a.got, a.exact, a.same))
    gb, eb, sb = (fb(_field(r, what)) for r in (b.got, b.exact, b.same))
    ma, mb = _model(a, what), _model(b, what)
    ma, mb = (None if m is None else f(m) for m, f in ((ma, fa), (mb, fb)))
    sel = np.broadcast_to(True if where is None else where, gb.shape)
    if ma is None or mb is None:  # the uniform rule over the compared entries only
        ea, sa, eb, sb = (np.where(sel, x, 0.0) for x in (ea, sa, eb, sb))
    tol = derive_change(ea, sa, eb, sb, check.precision, ma, mb)
    exact_change = eb - ea
    dev = np.abs((gb - ga) - exact_change)
    dev = np.where(sel, np.where(np.isnan(dev), np.inf, dev), 0.0)
    ratio = ratios(dev, tol.bound)
    i = tuple(int(j) for j in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
    record(check, what, claim, tol.at(i), float(tol.a.reference_errors[i] + tol.b.reference_errors[i]),
           float(dev[i]), i, float(ratio[i]))
    if not ratio[i] <= 1:
        fail(check, claim, [
            f"{what} at index {i} changed by {gb[i] - ga[i]:.8g} from {a.label!r} to {b.label!r}; "
            f"the exact change is {exact_change[i]:.8g} (float64 reference)",
            f"expected {ga[i] + exact_change[i]:.8g}, got {gb[i]:.8g} ({a.label} gave {ga[i]:.8g}); "
            f"deviation {dev[i]:.3g} = {ratio[i]:.3g} x its bound; compared {int(sel.sum())} of {sel.size} entries",
            f"tolerance: {tol.explain(i)}",
        ])


def assert_close(check: Checker, got: Array, exact: Array, same: Array, claim: str, what: str,
                 where: Array | None = None, model: Array | None = None) -> None:
    """Assert `got` is within the derived tolerance of `exact` on the entries `where`.

    `model`: the first-order error bound per element (`Run.bound`); None: the uniform rule over
    the entries `where`."""
    __tracebackhide__ = True
    got, exact, same = (np.asarray(x, dtype=np.float64) for x in (got, exact, same))
    sel = np.broadcast_to(True if where is None else where, got.shape)
    if model is None:
        exact, same = np.where(sel, exact, 0.0), np.where(sel, same, 0.0)
    tol = derive(exact, same, check.precision, model)
    dev = np.where(sel, np.abs(got - exact), 0.0)
    dev = np.where(np.isnan(dev), np.inf, dev)
    ratio = ratios(dev, tol.bound)
    i = tuple(int(j) for j in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
    record(check, what, claim, tol.at(i), float(tol.reference_errors[i]), float(dev[i]), i, float(ratio[i]))
    if not ratio[i] <= 1:
        fail(check, claim, [f"{what} at index {i}: expected {exact[i]:.8g}, got {got[i]:.8g} "
                            f"(error {dev[i]:.3g} = {ratio[i]:.3g} x its bound)",
                            f"tolerance: {tol.explain(i)}"])


def record(check: Checker, what: str, claim: str, atol: float, reference_error: float, max_abs: float,
           index: tuple[int, ...], ratio: float | None = None) -> None:
    """Keep the worst measurement per (what, claim) of a test for the JSON results.

    `atol` is the bound at `index`, `ratio` the error there in units of it (max_abs / atol when None)."""
    if ratio is None:
        ratio = max_abs / atol if atol > 0 else (np.inf if max_abs > 0 else 0.0)
    rec = {"what": what, "case": claim, "dtype": check.dtype, "atol": atol, "reference_error": reference_error,
           "max_abs": max_abs, "index": list(index), "ratio": float(ratio)}
    for j, old in enumerate(check.records):
        if old["what"] == what and old["case"] == claim:
            if rec["ratio"] > old.get("ratio", 0.0):
                check.records[j] = rec
            return
    check.records.append(rec)
