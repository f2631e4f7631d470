"""Pure classification: measured arrays in, an outcome name and the numbers behind it out.

Nothing here calls an adapter; every function is a plain computation that the tests exercise with
synthetic measurements. Distances are max absolute differences; a NaN/inf pattern that differs
from a candidate's makes the distance infinite (NaN is never zeroed out).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]

#: Unit roundoff u of each precision (half the spacing of 1.0).
_MANTISSA_BITS = {"float16": 10, "bfloat16": 7, "float32": 23, "float64": 52}
_MIN_NORMAL_EXP = {"float16": -14, "bfloat16": -126, "float32": -126, "float64": -1022}


def distance(a: Array, b: Array) -> float:
    """Max |a - b| over the entries; inf where one is finite and the other is not, or shapes differ."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf
    fa, fb = np.isfinite(a), np.isfinite(b)
    if (fa != fb).any():
        return math.inf
    # Where both are non-finite they must be the same kind (nan vs +inf vs -inf).
    both = ~fa
    if both.any() and not np.array_equal(np.nan_to_num(a[both], nan=0.0), np.nan_to_num(b[both], nan=0.0)):
        return math.inf
    if not fa.any():
        return 0.0
    return float(np.max(np.abs(a[fa] - b[fa])))


def nearest(measured: Array, candidates: dict[str, Array], tol: float) -> tuple[str | None, dict[str, float]]:
    """The candidate within `tol` of `measured` (the closest, ties to the first), and every distance."""
    dists = {name: distance(measured, cand) for name, cand in candidates.items()}
    best = min(dists, key=lambda n: dists[n]) if dists else None
    if best is None or not dists[best] <= tol:
        return None, dists
    return best, dists


def fully_masked_row(row: Array, unmasked: Array, tol: float) -> tuple[str, dict[str, float]]:
    """Classify the effective weights `row` `(H, S)` of a query row that sees no key.

    ``nan``: every entry NaN; ``zeros``: every weight 0 (a layer's output row equals its output bias);
    ``uniform``: every weight 1/S (the mean of the values); ``unmasked``: the weights the row would have
    without the mask; else ``other``.
    """
    row = np.asarray(row, dtype=np.float64)
    S = row.shape[-1]
    if np.isnan(row).all():
        return "nan", {"nan_entries": float(row.size)}
    candidates = {"zeros": np.zeros_like(row), "uniform": np.full_like(row, 1.0 / S), "unmasked": unmasked}
    name, dists = nearest(row, candidates, tol)
    return name or "other", dists


def spread(nonfinite: Array, poisoned_batch: int) -> str:
    """How far non-finite values spread from one key of batch element `poisoned_batch`.

    `nonfinite` is `(B, T)`: whether output row (b, t) holds a NaN or inf. ``all_rows``: every query
    row of that batch element; ``some_rows``; ``none``; ``other_batches``: rows of other batch
    elements too (the key leaked across the batch).
    """
    nonfinite = np.asarray(nonfinite, dtype=bool)
    others = np.delete(nonfinite, poisoned_batch, axis=0)
    if others.any():
        return "other_batches"
    own = nonfinite[poisoned_batch]
    if own.all():
        return "all_rows"
    return "some_rows" if own.any() else "none"


def fit_scale(weights: Array, logits: Array, floor: float = 1e-30) -> tuple[float, float]:
    """Least-squares fit of s in ``log w = s * logits + c_row`` over every row; (s, residual).

    `weights` and `logits` are `(..., S)`; entries with weight below `floor` are left out. The
    residual is the max |log w - fitted| (small when the weights are a softmax of `s * logits`).
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1, np.shape(weights)[-1])
    x = np.asarray(logits, dtype=np.float64).reshape(w.shape)
    ok = np.isfinite(w) & (w > floor)
    if not ok.all(axis=1).any():
        return math.nan, math.inf
    rows = ok.all(axis=1)
    w, x = w[rows], x[rows]
    y = np.log(w)
    yc = y - y.mean(axis=1, keepdims=True)
    xc = x - x.mean(axis=1, keepdims=True)
    denom = float(np.sum(xc * xc))
    if denom == 0.0:
        return math.nan, math.inf
    s = float(np.sum(xc * yc) / denom)
    return s, float(np.max(np.abs(yc - s * xc)))


def closest_value(value: float, candidates: dict[str, float], rel_tol: float) -> tuple[str | None, dict[str, float]]:
    """The candidate whose relative difference from `value` is within `rel_tol`; every relative difference."""
    rel = {n: (abs(value - c) / abs(c) if math.isfinite(value) else math.inf) for n, c in candidates.items()}
    best = min(rel, key=lambda n: rel[n]) if rel else None
    if best is None or not rel[best] <= rel_tol:
        return None, rel
    return best, rel


def ulp(x: Array, dtype: str) -> Array:
    """The spacing of `dtype` at |x| (subnormal spacing below the smallest normal)."""
    p = _MANTISSA_BITS[dtype]
    emin = _MIN_NORMAL_EXP[dtype]
    ax = np.abs(np.asarray(x, dtype=np.float64))
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(ax > 0, ax, 1.0)))
    e = np.maximum(np.where(ax > 0, e, emin), emin)
    return np.asarray(2.0 ** (e - p))


def ulp_error(got: Array, exact: Array, dtype: str) -> float:
    """Max |got - exact| in units of the spacing of `dtype` at `exact`; inf where non-finite differs."""
    got = np.asarray(got, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    if (np.isfinite(got) != np.isfinite(exact)).any():
        return math.inf
    fin = np.isfinite(exact)
    return float(np.max(np.abs(got[fin] - exact[fin]) / ulp(exact[fin], dtype), initial=0.0))


#: An error at most this many ulps is "rounded once": the softmax ran wider and was rounded at the end.
ROUNDED_ONCE_ULPS = 0.5 + 1e-3


def softmax_precision(adapter_ulps: float, half_ulps: float, dtype: str) -> str:
    """``float32``: rounded once (softmax wider than `dtype`); `dtype`: as erroneous as a softmax in
    `dtype`; ``indistinct``: the probe cannot tell the two apart; ``other``: worse than both."""
    if adapter_ulps <= ROUNDED_ONCE_ULPS:
        return "float32"
    if half_ulps <= ROUNDED_ONCE_ULPS:
        return "indistinct"
    if adapter_ulps <= 2 * half_ulps + 1:
        return dtype
    return "other"


def majority(outcomes: list[str]) -> str | None:
    """The most common outcome, or None for an empty list or a tie for the most common."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    top = sorted(counts.values(), reverse=True)
    if not top or (len(top) > 1 and top[0] == top[1]):
        return None
    return max(counts, key=lambda o: counts[o])
