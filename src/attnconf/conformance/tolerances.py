"""The tolerance policy, in one place. Tolerances are derived, never guessed.

For an implementation's result `got` in precision `p` on inputs already rounded to `p`:

* `exact` is the reference evaluated on those same rounded inputs in NumPy's extended precision
  (`longdouble`, 64-bit significand on x86) when `p` is float64, and in float64 otherwise (its
  error is some 1e-9 of the smallest tolerance a float32, float16 or bfloat16 test can have;
  `check.exact_precision`);
* `same` is the reference evaluated in precision `p` (`attnconf.reference.precision`) on them;
* `reference_error_i = |same_i - exact_i|` is what an honest evaluation in `p` costs on this
  input at element `i` (measured against the extended-precision result, not assumed).

Every element has its own bound (docs/tolerances.md derives it):

* Where the caller gives the first-order error model `model_i` of an honest evaluation in `p`
  (`attnconf.reference.multi_head_attention_error_bound`: the running-error analysis of the
  layer, each rounding at its worst, the logits' errors weighted by the spread of the values),
  ``bound_i = FACTOR_MODEL * max(model_i, reference_error_i)``, FACTOR_MODEL = 1: the model is
  already an upper bound of every honest evaluation's error to first order (each rounding at its
  worst, all of the same sign; the second-order terms are O(u^2), 1.5e-5 relative in bfloat16),
  where real errors add up like a random walk: honest implementations use a fraction of it
  (docs/tolerances.md: at most 0.4 measured on the real adapters in float16 and bfloat16). An element the
  spec makes exactly zero in every honest evaluation (a masked key's weight) has bound 0.
* Otherwise (gradients, row sums, the audit's probes) the uniform rule applies to every element:
  ``bound = FACTOR * max(max_i reference_error_i, floor)``, with
  ``floor = FLOOR_ULPS * u_p * max(1, max |exact|)`` and `u_p` the unit roundoff of `p`.

Why the uniform rule's numbers:

* FACTOR = 8: implementations legitimately sum in another order, fuse the scale into the query,
  or keep the softmax in a wider type; their error is the same order as the reference's own,
  and 8 leaves room for those reorderings (a random-walk bound for sums of length 64 gives a
  factor of about sqrt(64) = 8 over a single rounding) while every bug in the faulty-adapter
  catalog (tests/faulty.py) is caught with a margin of orders of magnitude.
* FLOOR_ULPS = 2: the floor only matters when the reference's own error is by chance smaller
  than the rounding of the result itself; two unit roundoffs of the result's magnitude are the
  last two roundings (the weighted sum and the output projection) any implementation makes.

Where `exact` is only available in float64 (e.g. a chapter that evaluates the reference in
float64), a float64 `same` computed by the same code is `exact` itself and its error would read 0;
such a chapter must give a float64 `same` that sums in another order (the long chapter does), or
the floor alone applies, which is too tight for long sums (it failed honest float64 layers over
4,096 keys at 1.2-2.7 times it).

A pass means ``|got_i - exact_i| <= bound_i`` at every finite element; the ratio
``max_i |got_i - exact_i| / bound_i`` (`Errors.ratio`) is the error in units of the derived
tolerance. Non-finite values must match in kind and sign: NaN where `exact` is NaN, +inf where
it is +inf; NaN against inf, or +inf against -inf, is a mismatch, as is a non-finite value where
`exact` is finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from attnconf.reference.precision import UNIT_ROUNDOFF

Array = np.ndarray[Any, Any]

#: The uniform rule (no error model given): its factor and floor, in unit roundoffs.
FACTOR = 8.0
FLOOR_ULPS = 2.0
#: The factor over the first-order error model of an honest evaluation (docs/tolerances.md).
FACTOR_MODEL = 1.0

Index = tuple[int, ...]


def _at(a: Array, index: Index) -> float:
    return float(a[index]) if a.ndim else float(a)


def _argmax(a: Array) -> Index:
    if not a.size:
        return ()
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(a)), a.shape))


class _PerElement:
    """What every per-element bound offers: the largest bound, and the bound at an index."""

    bound: Array

    @property
    def atol(self) -> float:
        """The largest bound (under the uniform rule: the bound of every element)."""
        return float(np.max(self.bound, initial=0.0))

    def at(self, index: Index) -> float:
        """The bound of element `index`."""
        return _at(self.bound, index)


@dataclass(frozen=True)
class Tolerance(_PerElement):
    """A bound per element of `exact` and how it was derived.

    `bound`, `reference_errors` and `model` (None under the uniform rule) have the shape of
    `exact`; `reference_error` is the largest reference error; `floor` the uniform rule's floor
    (0 under the model)."""

    bound: Array
    reference_errors: Array
    model: Array | None
    reference_error: float
    floor: float
    dtype: str

    def explain(self, index: Index | None = None) -> str:
        """How the bound at `index` (the largest one if None) was derived, starting "atol"."""
        if index is None:
            index = _argmax(self.bound)
        where = f" at index {index}" if index else ""
        if self.model is None:
            return (f"atol {self.at(index):.3g}{where} = {FACTOR:g} x max(reference error in {self.dtype} "
                    f"{self.reference_error:.3g}, floor {self.floor:.3g} = {FLOOR_ULPS:g} x u_{self.dtype} "
                    f"x max(1, max|expected|)), one bound for every element")
        if self.at(index) == 0:
            return (f"atol 0{where}: the spec's value is exactly 0 there in every honest evaluation in "
                    f"{self.dtype} (e.g. the weight of a key the mask or the causal flag hides)")
        return (f"atol {self.at(index):.3g}{where} = {FACTOR_MODEL:g} x max(first-order error bound "
                f"{_at(self.model, index):.3g} of an honest evaluation in {self.dtype} (the roundings at this "
                f"element's magnitudes, the accumulation, the logits' errors times the values' spread: "
                f"attnconf.reference.multi_head_attention_error_bound), reference error in {self.dtype} there "
                f"{_at(self.reference_errors, index):.3g})")


def derive(exact: Array, same_precision: Array, dtype: str, model: Array | None = None) -> Tolerance:
    """The per-element tolerance for comparing an implementation in `dtype` against `exact`.

    Args:
        exact: the reference in extended precision (or float64), any shape.
        same_precision: the reference evaluated in `dtype`, the shape of `exact`.
        dtype: the precision of the implementation compared.
        model: the first-order error bound of an honest evaluation in `dtype`, the shape of
            `exact` (e.g. `multi_head_attention_error_bound(...).output`); None: the uniform rule.
    """
    exact = np.asarray(exact, dtype=np.float64)
    same = np.asarray(same_precision, dtype=np.float64)
    finite = np.isfinite(exact)
    with np.errstate(invalid="ignore"):
        diff = np.where(finite, np.abs(same - exact), 0.0)
    diff = np.where(np.isnan(diff), np.inf, diff)
    reference_error = float(np.max(diff, initial=0.0))
    if model is None:
        magnitude = float(np.max(np.abs(exact[finite]), initial=0.0))
        floor = FLOOR_ULPS * UNIT_ROUNDOFF[dtype] * max(1.0, magnitude)
        bound = np.full(exact.shape, FACTOR * max(reference_error, floor))
        return Tolerance(bound, diff, None, reference_error, floor, dtype)
    model = np.asarray(model, dtype=np.float64)
    if model.shape != exact.shape:
        raise ValueError(f"the error model has shape {model.shape}, expected the shape of exact {exact.shape}")
    bound = FACTOR_MODEL * np.maximum(model, diff)
    return Tolerance(bound, diff, model, reference_error, 0.0, dtype)


@dataclass(frozen=True)
class Errors:
    """Measured errors of `got` against `exact` (and, if a tolerance was given, against its bounds)."""

    max_abs: float
    max_rel: float  # max |got - exact| / max |exact|
    index: Index  # where the error is largest in units of the bound (or in absolute value, no tolerance)
    expected: float
    got: float
    nan_mismatch: Index | None  # first index where the non-finite values differ in kind or sign
    max_expected: float  # max |exact| over the finite values: the scale of max_rel
    ratio: float | None = None  # max_i |got_i - exact_i| / bound_i (inf: a nonzero error where the bound is 0)
    atol: float | None = None  # the bound at `index`

    def as_dict(self) -> dict[str, Any]:
        d = {"max_abs": self.max_abs, "max_rel": self.max_rel, "max_expected": self.max_expected,
             "index": list(self.index), "nan_mismatch": None if self.nan_mismatch is None else list(self.nan_mismatch)}
        if self.ratio is not None:
            d["ratio"] = self.ratio
        return d


def nonfinite_mismatch(got: Array, exact: Array) -> Array:
    """Boolean: where `got` and `exact` are not both finite and not the same NaN or infinity."""
    got = np.asarray(got, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    finite = np.isfinite(got) & np.isfinite(exact)
    same = (np.isnan(got) & np.isnan(exact)) | (np.isinf(exact) & (got == exact))
    return np.asarray(~finite & ~same)


def ratios(diff: Array, bound: Array) -> Array:
    """`diff / bound` elementwise, with 0/0 = 0 and x/0 = inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(bound > 0, diff / np.where(bound > 0, bound, 1.0), np.where(diff > 0, np.inf, 0.0))
    return np.asarray(r)


def measure(got: Array, exact: Array, tol: Tolerance | ChangeTolerance | None = None) -> Errors:
    """Max absolute and relative error, the worst element, and any NaN/inf disagreement.

    With `tol`, the worst element is the one with the largest error in units of its bound
    (`Errors.ratio`, `Errors.atol`); without, the one with the largest absolute error."""
    got = np.asarray(got, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    bad = nonfinite_mismatch(got, exact)
    nan_mismatch = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else None
    with np.errstate(invalid="ignore"):
        diff = np.where(np.isfinite(exact) & np.isfinite(got), np.abs(got - exact), np.where(bad, np.inf, 0.0))
    scale = float(np.max(np.abs(exact[np.isfinite(exact)]), initial=0.0))
    if not diff.size:
        return Errors(0.0, 0.0, (), 0.0, 0.0, nan_mismatch, scale,
                      None if tol is None else 0.0, None if tol is None else 0.0)
    max_abs = float(np.max(diff))
    max_rel = max_abs / scale if scale > 0 else max_abs
    ratio = atol = None
    if tol is None:
        flat = int(np.argmax(diff))
    else:
        r = ratios(diff, np.broadcast_to(tol.bound, diff.shape))
        flat = int(np.argmax(r))
        ratio = float(r.flat[flat])
    index = tuple(int(i) for i in np.unravel_index(flat, diff.shape))
    if tol is not None:
        atol = float(np.broadcast_to(tol.bound, diff.shape)[index])
    return Errors(max_abs, max_rel, index, float(exact[index]), float(got[index]), nan_mismatch, scale, ratio, atol)


@dataclass(frozen=True)
class ChangeTolerance(_PerElement):
    """The bound on an implementation's change between two runs `a` and `b` (invariant chapters).

    An invariant says how the output changes from input `a` to input `b` (usually: not at all).
    The float64 reference gives the exact change; the implementation's change may differ from it
    by what agreement would allow on each input, element by element, so
    ``bound_i = bound_a_i + bound_b_i``, each derived as in `derive`. An implementation that
    agrees with the reference on both inputs therefore always satisfies the invariant; one whose
    change exceeds this breaks the invariant itself.
    """

    a: Tolerance
    b: Tolerance

    @property
    def bound(self) -> Array:  # type: ignore[override]  # the sum of both runs' bounds
        return np.asarray(self.a.bound + self.b.bound)

    def explain(self, index: Index | None = None) -> str:
        if index is None:
            index = _argmax(self.bound)
        where = f" at index {index}" if index else ""
        return (f"atol {self.at(index):.3g}{where} = {self.a.at(index):.3g} + {self.b.at(index):.3g}, the agreement "
                f"tolerances of both runs there: run a's {self.a.explain(index)}; run b's {self.b.explain(index)}")


def derive_change(exact_a: Array, same_a: Array, exact_b: Array, same_b: Array, dtype: str,
                  model_a: Array | None = None, model_b: Array | None = None) -> ChangeTolerance:
    """The per-element tolerance on ``(got_b - got_a) - (exact_b - exact_a)`` for two runs in `dtype`."""
    return ChangeTolerance(derive(exact_a, same_a, dtype, model_a), derive(exact_b, same_b, dtype, model_b))
