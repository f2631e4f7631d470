"""Running an adapter on a case and comparing it with the reference, with readable failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from attnconf.adapters.base import AttentionInputs, AttentionOutputs, AttentionWeights
from attnconf.conformance import memo
from attnconf.conformance.tolerances import Errors, Tolerance, derive, measure
from attnconf.reference import multi_head_attention
from attnconf.reference.precision import storage_dtype

Array = np.ndarray[Any, Any]


#: The precision of the "exact" result of a float64 test: NumPy's extended precision (see
#: tolerances.py). Tests in float32, float16 and bfloat16 take float64 (`exact_precision`).
EXACT = "longdouble"


def exact_precision(dtype: str) -> str:
    """The precision of the "exact" result for a test in `dtype`.

    float64 needs NumPy's extended precision (EXACT). For float32, float16 and bfloat16, float64
    is exact for the purpose: its error (about 1e-16 relative, times the problem's conditioning)
    is some 1e-9 of the smallest tolerance those tests can have (the floor, 2 unit roundoffs of
    float32, 1.2e-7), and NumPy computes it with vectorised loops, where extended precision runs
    scalar code several times slower (it dominated the suite's own time on the real-weights
    chapter).
    """
    return EXACT if dtype == "float64" else "float64"


def as_float64(inputs: AttentionInputs, dtype: str = "float64") -> AttentionInputs:
    """The same inputs (values unchanged) held in `dtype` (float64, or EXACT)."""
    store = storage_dtype(dtype)
    arrays: dict[int, Array] = {}

    def up(a: Array) -> Array:  # keeps self-attention's shared arrays shared
        return arrays.setdefault(id(a), np.asarray(a, dtype=store))

    return AttentionInputs(up(inputs.query), up(inputs.key), up(inputs.value), inputs.mask, inputs.causal, inputs.scale)


def weights_float64(weights: AttentionWeights, dtype: str = "float64") -> AttentionWeights:
    """The same weights held in `dtype` (float64, or EXACT)."""
    return AttentionWeights(**{n: np.asarray(a, dtype=storage_dtype(dtype)) for n, a in weights.arrays().items()})


@dataclass
class Checker:
    """Bound to one test: the adapter, the dtype, and where measurements are recorded."""

    adapter: Any
    dtype: str
    nodeid: str
    reproduce: str
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def alignment(self) -> str:
        return self.adapter.capabilities.causal_alignment or "top_left"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        """The short form Hypothesis prints in a falsifying example."""
        p.text(f"Checker(adapter={self.adapter.name!r}, dtype={self.dtype!r})")

    # -- running ---------------------------------------------------------------------------

    def layer(self, inputs: AttentionInputs, weights: AttentionWeights) -> AttentionOutputs:
        """Run the adapter's `multi_head_attention` on inputs and weights rounded to the dtype."""
        x, w = inputs.astype(self.dtype), weights.astype(self.dtype)
        out = self.adapter.multi_head_attention(x, w, self.dtype)
        return self._validate(out, x, w)

    def _validate(self, out: Any, x: AttentionInputs, w: AttentionWeights) -> AttentionOutputs:
        name = self.adapter.name
        if not isinstance(out, AttentionOutputs):
            pytest.fail(f"{name}: multi_head_attention returned {type(out).__name__}, expected AttentionOutputs", pytrace=False)
        s = x.shape
        expected = (s["B"], s["T"], w.output_dim)
        got = np.shape(out.output)
        if got != expected:
            pytest.fail(f"{name}: output has shape {got}, expected (B, T, E_out)={expected}", pytrace=False)
        if out.weights is not None:
            ew = (s["B"], w.num_heads, s["T"], s["S"])
            if np.shape(out.weights) != ew:
                pytest.fail(f"{name}: attention weights have shape {np.shape(out.weights)}, expected (B, H, T, S)={ew}", pytrace=False)
        return out

    def references(self, inputs: AttentionInputs, weights: AttentionWeights) -> tuple[AttentionOutputs, AttentionOutputs]:
        """(exact reference, same-precision reference), both on the inputs rounded to the dtype.

        "Exact" is the reference evaluated in `exact_precision(dtype)`. Computed once per distinct
        (inputs, weights, alignment, dtype) in a session and shared, read-only (`memo`)."""
        x, w = inputs.astype(self.dtype), weights.astype(self.dtype)
        dtype, alignment = self.dtype, self.alignment

        def compute() -> tuple[AttentionOutputs, AttentionOutputs]:
            e = exact_precision(dtype)
            exact = multi_head_attention(as_float64(x, e), weights_float64(w, e), alignment=alignment, dtype=e)  # type: ignore[arg-type]
            same = multi_head_attention(x, w, alignment=alignment, dtype=dtype)  # type: ignore[arg-type]
            return exact, same

        return memo.cached(("multi_head_attention references", x, w, alignment, dtype), compute)

    # -- comparing -------------------------------------------------------------------------

    def agrees(self, inputs: AttentionInputs, weights: AttentionWeights, case: str = "") -> AttentionOutputs:
        """Run the layer and assert output (and returned weights) agree with the reference."""
        got = self.layer(inputs, weights)
        exact, same = self.references(inputs, weights)
        self.close(got.output, exact.output, same.output, what="output", case=case)
        if got.weights is not None:
            self.close(got.weights, exact.weights, same.weights, what="attention weights", case=case)  # type: ignore[arg-type]
        return got

    def close(self, got: Array, exact: Array, same: Array, what: str, case: str = "") -> Errors:
        """Assert `got` is within the derived tolerance of `exact`; record the errors."""
        tol = derive(exact, same, self.dtype)
        errs = measure(got, exact)
        self.records.append({"what": what, "case": case, "dtype": self.dtype, "atol": tol.atol,
                             "reference_error": tol.reference_error, **errs.as_dict()})
        if errs.nan_mismatch is not None or not errs.max_abs <= tol.atol:
            pytest.fail(self.message(what, case, errs, tol, np.asarray(got), np.asarray(exact)), pytrace=False)
        return errs

    def message(self, what: str, case: str, errs: Errors, tol: Tolerance, got: Array, exact: Array) -> str:
        lines = [f"{what} of adapter {self.adapter.name!r} in {self.dtype}"
                 + (f" (case {case!r})" if case else "")
                 + f" disagrees with the exact reference (evaluated in {exact_precision(self.dtype)})"]
        if errs.nan_mismatch is not None:
            i = errs.nan_mismatch
            lines.append(f"  non-finite mismatch at index {i}: expected {exact[i]!r}, got {got[i]!r}")
        lines.append(f"  max abs error {errs.max_abs:.6g} at index {errs.index}: "
                     f"expected {errs.expected:.8g}, got {errs.got:.8g}")
        lines.append(f"  max rel error {errs.max_rel:.6g} (max abs error / max |expected|)")
        lines.append(f"  tolerance: {tol.explain()}")
        lines.append(f"  reproduce: {self.reproduce}")
        return "\n".join(lines)
