"""The tolerance policy, in one place. Tolerances are derived, never guessed.

For an implementation's result `got` in precision `p` on inputs already rounded to `p`:

* `exact` is the reference evaluated on those same rounded inputs in NumPy's extended precision
  (`longdouble`, 64-bit significand on x86) when `p` is float64, and in float64 otherwise (its
  error is some 1e-9 of the smallest tolerance a float32, float16 or bfloat16 test can have;
  `check.exact_precision`);
* `same` is the reference evaluated in precision `p` (`attnconf.reference.precision`) on them;
* `reference_error = max |same - exact|` is what an honest evaluation in `p` costs on this input,
  float64 included (measured against the extended-precision result, not assumed).

The implementation passes when ``max |got - exact| <= FACTOR * max(reference_error, floor)``,
with ``floor = FLOOR_ULPS * u_p * max(1, max |exact|)`` and `u_p` the unit roundoff of `p`.

Why these numbers:

* FACTOR = 8: implementations legitimately sum in another order, fuse the scale into the query,
  or keep the softmax in a wider type; their error is the same order as the reference's own,
  and 8 leaves room for those reorderings (a random-walk bound for sums of length 64 gives a
  factor of about sqrt(64) = 8 over a single rounding) while every bug in the faulty-adapter
  catalog (tests/faulty.py) is caught with a margin of orders of magnitude.
* FLOOR_ULPS = 2: the floor only matters when the reference's own error is by chance smaller
  than the rounding of the result itself; two unit roundoffs of the result's magnitude are the
  last two roundings (the weighted sum and the output projection) any implementation makes.
  It is deliberately small so that, in float16 and bfloat16, the measured reference error and
  not the floor sets the bound.

Where `exact` is only available in float64 (e.g. a chapter that evaluates the reference in
float64), `reference_error` is 0 for float64 and the floor applies.

NaN is never zeroed out: a NaN in `got` where `exact` is finite is a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from attnconf.reference.precision import UNIT_ROUNDOFF

Array = np.ndarray[Any, Any]

FACTOR = 8.0
FLOOR_ULPS = 2.0


@dataclass(frozen=True)
class Tolerance:
    """An absolute bound and how it was derived."""

    atol: float
    reference_error: float
    floor: float
    dtype: str

    def explain(self) -> str:
        return (
            f"atol {self.atol:.3g} = {FACTOR:g} x max(reference error in {self.dtype} "
            f"{self.reference_error:.3g}, floor {self.floor:.3g} = {FLOOR_ULPS:g} x u_{self.dtype} "
            f"x max(1, max|expected|))"
        )


def derive(exact: Array, same_precision: Array, dtype: str) -> Tolerance:
    """The tolerance for comparing an implementation in `dtype` against `exact`."""
    exact = np.asarray(exact, dtype=np.float64)
    same = np.asarray(same_precision, dtype=np.float64)
    finite = np.isfinite(exact)
    magnitude = float(np.max(np.abs(exact[finite]), initial=0.0))
    diff = np.abs(same - exact)[finite]
    reference_error = float(np.max(diff, initial=0.0)) if np.isfinite(diff).all() else float("inf")
    floor = FLOOR_ULPS * UNIT_ROUNDOFF[dtype] * max(1.0, magnitude)
    return Tolerance(FACTOR * max(reference_error, floor), reference_error, floor, dtype)


@dataclass(frozen=True)
class Errors:
    """Measured errors of `got` against `exact`."""

    max_abs: float
    max_rel: float  # max |got - exact| / max |exact|
    index: tuple[int, ...]
    expected: float
    got: float
    nan_mismatch: tuple[int, ...] | None  # first index where NaN-ness differs
    max_expected: float  # max |exact| over the finite values: the scale of max_rel

    def as_dict(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "max_expected": self.max_expected,
                "index": list(self.index), "nan_mismatch": None if self.nan_mismatch is None else list(self.nan_mismatch)}


def measure(got: Array, exact: Array) -> Errors:
    """Max absolute and relative error, where it occurs, and any NaN/inf disagreement."""
    got = np.asarray(got, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    bad = np.isfinite(got) != np.isfinite(exact)
    nan_mismatch = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else None
    diff = np.abs(got - exact)
    diff = np.where(np.isfinite(exact) & np.isfinite(got), diff, np.where(bad, np.inf, 0.0))
    flat = int(np.argmax(diff)) if diff.size else 0
    index = tuple(int(i) for i in np.unravel_index(flat, diff.shape)) if diff.size else ()
    max_abs = float(diff.flat[flat]) if diff.size else 0.0
    scale = float(np.max(np.abs(exact[np.isfinite(exact)]), initial=0.0))
    max_rel = max_abs / scale if scale > 0 else max_abs
    return Errors(max_abs, max_rel, index,
                  float(exact[index]) if diff.size else 0.0, float(got[index]) if diff.size else 0.0,
                  nan_mismatch, scale)


@dataclass(frozen=True)
class ChangeTolerance:
    """The bound on an implementation's change between two runs `a` and `b` (invariant chapters).

    An invariant says how the output changes from input `a` to input `b` (usually: not at all).
    The float64 reference gives the exact change; the implementation's change may differ from it
    by what agreement would allow on each input, so ``atol = atol_a + atol_b``, each derived as in
    `derive`. An implementation that agrees with the reference on both inputs therefore always
    satisfies the invariant; one whose change exceeds this breaks the invariant itself.
    """

    atol: float
    a: Tolerance
    b: Tolerance

    def explain(self) -> str:
        return (
            f"atol {self.atol:.3g} = {self.a.atol:.3g} + {self.b.atol:.3g}, the agreement tolerances of both "
            f"runs, each {FACTOR:g} x max(reference error in {self.a.dtype}, floor {FLOOR_ULPS:g} x "
            f"u_{self.a.dtype} x max(1, max|expected|)); reference errors {self.a.reference_error:.3g} and "
            f"{self.b.reference_error:.3g}"
        )


def derive_change(exact_a: Array, same_a: Array, exact_b: Array, same_b: Array, dtype: str) -> ChangeTolerance:
    """The tolerance on ``(got_b - got_a) - (exact_b - exact_a)`` for two runs in `dtype`."""
    ta, tb = derive(exact_a, same_a, dtype), derive(exact_b, same_b, dtype)
    return ChangeTolerance(ta.atol + tb.atol, ta, tb)
