"""Helpers of the convention chapters (rotary, windows, softcap, alibi, decode, lengths).

Those chapters call the kernel-level optional methods of the contract (`convention_attention`,
`decode_step`, `rotary_embedding`: `attnconf.contract.OptionalMethods`) on `(B, H, N, D)` arrays
and compare them with the reference evaluated with the same keywords. A run (`kernel_run`) rounds
the arrays to the test's dtype, calls the adapter, and evaluates the reference twice on the same
rounded arrays: in `check.exact_precision(dtype)` (the "exact" result) and in the precision the
adapter is held to (`Checker.precision`, the same-precision reference). The comparison is the
uniform rule of `tolerances.derive` (8 times the same-precision reference's own error on that
input, floor 2 unit roundoffs of the result): these kernels have no first-order error model.
A run is an `invariants.Run`, so `invariants.assert_close` (agreement) and
`invariants.assert_change` (an invariant between two runs of the adapter) apply unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from attnconf.conformance.check import Checker, exact_precision
from attnconf.conformance.invariants import Run, fail
from attnconf.conformance.strategies import Shape
from attnconf.conformance.tolerances import measure
from attnconf.contract import AttentionOutputs
from attnconf.reference import round_to
from attnconf.reference.precision import storage_dtype

Array = np.ndarray[Any, Any]

#: The optional method behind each capability of the convention chapters.
METHODS = {
    "window": "convention_attention",
    "softcap": "convention_attention",
    "alibi": "convention_attention",
    "lengths": "convention_attention",
    "kv_cache": "decode_step",
    "rotary": "rotary_embedding",
}


def require(adapter: Any, convention: str) -> None:
    """Skip unless `adapter` declares `convention` ("window", "softcap", "alibi", "lengths" in
    `capabilities.conventions`; "kv_cache"; "rotary": a non-empty `capabilities.rotary_layouts`);
    fail if it declares it without the method that implements it."""
    caps, name = adapter.capabilities, adapter.name
    if convention == "kv_cache":
        declared, field = caps.kv_cache, f"capabilities.kv_cache={caps.kv_cache}"
    elif convention == "rotary":
        declared, field = bool(caps.rotary_layouts), f"capabilities.rotary_layouts={sorted(caps.rotary_layouts)}"
    else:
        declared, field = convention in caps.conventions, f"capabilities.conventions={sorted(caps.conventions)}"
    if not declared:
        why = caps.limit(convention) if convention == "kv_cache" else None
        pytest.skip(f"{name} does not declare {convention!r} ({field})" + (f": {why}" if why else ""))
    method = METHODS[convention]
    if not callable(getattr(adapter, method, None)):
        pytest.fail(f"{name} declares {convention!r} ({field}) but implements no {method}", pytrace=False)


def kernel_arrays(
    shape: Shape, seed: int, *, T: int | None = None, S: int | None = None, H: int | None = None
) -> tuple[Array, Array, Array]:
    """Random float64 q `(B, H, T, D)`, k and v `(B, H_kv, S, D)` of `shape` (sizes overridable)."""
    rng = np.random.default_rng(seed)
    B, D = shape.B, shape.D
    T, S, H = T or shape.T, S or shape.S, H or shape.H
    H_kv = shape.H_kv if H == shape.H else H
    return (
        rng.standard_normal((B, H, T, D)),
        rng.standard_normal((B, H_kv, S, D)),
        rng.standard_normal((B, H_kv, S, D)),
    )


def _rounded(arrays: Mapping[str, Any], dtype: str) -> dict[str, Any]:
    """Floating arrays rounded to `dtype`; everything else (positions, lengths, None) as it is."""
    return {
        n: round_to(np.asarray(a, dtype=np.float64), dtype)
        if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)
        else a
        for n, a in arrays.items()
    }


def references(check: Checker, reference: Callable[..., Array], arrays: Mapping[str, Any]) -> tuple[Array, Array]:
    """(exact, same-precision) results of `reference(**arrays, dtype=...)` on the arrays rounded to the dtype."""
    x = _rounded(arrays, check.dtype)
    e = exact_precision(check.dtype)
    exact_arrays = {
        n: np.asarray(a, dtype=storage_dtype(e))
        if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)
        else a
        for n, a in x.items()
    }
    return np.asarray(reference(**exact_arrays, dtype=e)), np.asarray(reference(**x, dtype=check.precision))


def kernel_run(
    check: Checker, label: str, call: Callable[..., Any], reference: Callable[..., Array], arrays: Mapping[str, Any]
) -> Run:
    """Run `call(**arrays)` (the adapter; arrays rounded to the dtype, then the dtype as keyword
    `dtype`) and `reference(**arrays, dtype=...)` in exact and in the adapter's precision.

    Fails when the adapter's result has another shape than the reference's, or is NaN or infinite
    where the exact reference is finite (or of another kind or sign)."""
    __tracebackhide__ = True
    x = _rounded(arrays, check.dtype)
    exact, same = references(check, reference, arrays)
    got = np.asarray(call(**x, dtype=check.dtype))
    if got.shape != exact.shape:
        fail(
            check,
            f"{label}: the adapter's result has the wrong shape",
            [f"expected shape {exact.shape}, got {got.shape}"],
        )
    errs = measure(got, exact)
    if errs.nan_mismatch is not None:
        i = errs.nan_mismatch
        fail(
            check,
            f"{label}: the result is not finite where the reference is, or of another kind or sign",
            [f"at index {i}: expected {exact[i]!r}, got {got[i]!r}"],
        )
    return Run(AttentionOutputs(got), AttentionOutputs(exact), AttentionOutputs(same), label)


def rows_with_a_key(visible: Array) -> Array:
    """`(B, H|1, T, 1)`: True for query rows of `visible` `(B, H|1, T, S)` that see some key (the rows
    the chapters compare; a fully masked row's output is the `fully_masked` policy's, not compared)."""
    return np.asarray(visible.any(axis=-1, keepdims=True))
