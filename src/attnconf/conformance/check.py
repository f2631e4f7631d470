"""Running an adapter on a case and comparing it with the reference, with readable failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from attnconf.conformance import memo
from attnconf.conformance.tolerances import Errors, Tolerance, derive, measure
from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights
from attnconf.reference import causal_mask, multi_head_attention, multi_head_attention_error_bound
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


def passes(errs: Errors) -> bool:
    """True when no non-finite value mismatches and every element is within its bound."""
    return errs.nan_mismatch is None and errs.ratio is not None and errs.ratio <= 1.0


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

    @property
    def precision(self) -> str:
        """The precision whose honest evaluation bounds the adapter's errors: the dtype, unless the
        adapter declares that it computes the dtype at a lower one (`Capabilities.precision`).

        Inputs and outputs stay in `dtype`; the same-precision reference, the error model and
        the derived tolerances use this."""
        return str(self.adapter.capabilities.accuracy(self.dtype))

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
        dtype, alignment, precision = self.dtype, self.alignment, self.precision

        def compute() -> tuple[AttentionOutputs, AttentionOutputs]:
            e = exact_precision(dtype)
            exact = multi_head_attention(as_float64(x, e), weights_float64(w, e), alignment=alignment, dtype=e)  # type: ignore[arg-type]
            same = multi_head_attention(x, w, alignment=alignment, dtype=precision)  # type: ignore[arg-type]
            return exact, same

        return memo.cached(("multi_head_attention references", x, w, alignment, dtype, precision), compute)

    def error_bounds(self, inputs: AttentionInputs, weights: AttentionWeights) -> AttentionOutputs:
        """The first-order error bounds of an honest evaluation in the dtype, per element of the
        output and of the weights (`multi_head_attention_error_bound`), on the rounded inputs."""
        x, w = inputs.astype(self.dtype), weights.astype(self.dtype)
        precision, alignment = self.precision, self.alignment
        scale_dtype = self.adapter.capabilities.scale_accuracy(self.dtype)

        def compute() -> AttentionOutputs:
            return multi_head_attention_error_bound(x, w, dtype=precision, alignment=alignment,  # type: ignore[arg-type]
                                                    scale_dtype=scale_dtype)

        return memo.cached(("multi_head_attention error bounds", x, w, alignment, precision, scale_dtype), compute)

    def visible(self, inputs: AttentionInputs) -> Array:
        """`(B, 1, T, S)`: True where the spec lets query t attend key s (mask and causal flag)."""
        s = inputs.shape
        vis = np.ones((1, 1, s["T"], s["S"]), dtype=bool)
        if inputs.mask is not None:
            vis = vis & np.asarray(inputs.mask, dtype=bool)[:, None]
        if inputs.causal:
            vis = vis & causal_mask(s["T"], s["S"], self.alignment)[None, None]  # type: ignore[arg-type]
        return vis

    # -- comparing -------------------------------------------------------------------------

    def agrees(self, inputs: AttentionInputs, weights: AttentionWeights, case: str = "") -> AttentionOutputs:
        """Run the layer and assert output (and returned weights) agree with the reference."""
        got = self.layer(inputs, weights)
        exact, same = self.references(inputs, weights)
        model = self.error_bounds(inputs, weights)
        self.close(got.output, exact.output, same.output, what="output", case=case, model=model.output)
        if got.weights is not None:
            self.masked_weights_zero(inputs, got.weights, case=case)
            self.close(got.weights, exact.weights, same.weights, what="attention weights", case=case,  # type: ignore[arg-type]
                       model=model.weights)
        return got

    def masked_weights_zero(self, inputs: AttentionInputs, weights: Array, case: str = "", label: str = "") -> None:
        """Assert returned weights `(B, H, T, S)` are exactly 0 where the spec hides the key.

        A key the mask or the causal flag hides has weight exactly 0 in the spec, in every dtype:
        no rounding makes it nonzero (a finite fill such as -1e4 does). Rows where no key is
        visible are left to the fully-masked policy."""
        w = np.asarray(weights, dtype=np.float64)
        vis = np.broadcast_to(self.visible(inputs), w.shape)
        hidden = ~vis & vis.any(axis=-1, keepdims=True)
        bad = hidden & (w != 0)
        self.records.append({"what": "attention weights of hidden keys", "case": case, "dtype": self.dtype,
                             "atol": 0.0, "reference_error": 0.0,
                             "max_abs": float(np.max(np.where(hidden, np.abs(np.nan_to_num(w, nan=np.inf)), 0.0),
                                                     initial=0.0)),
                             "ratio": float(np.inf) if bad.any() else 0.0})
        if bad.any():
            i = tuple(int(j) for j in np.argwhere(bad)[0])
            lines = [f"attention weights of adapter {self.adapter.name!r} in {self.dtype}"
                     + (f" (case {case!r})" if case else "") + (f" ({label})" if label else "")
                     + " give weight to a key the spec hides",
                     f"  at index {i} (B, H, T, S), where the mask and the causal flag ({self.alignment} alignment) "
                     f"hide key {i[3]} from query {i[2]}: expected exactly 0, got {w[i]!r} "
                     f"({int(bad.sum())} of {int(hidden.sum())} hidden entries are not 0)",
                     "  tolerance: atol 0: a hidden key's weight is exactly 0 in every dtype",
                     f"  reproduce: {self.reproduce}"]
            raise AssertionError("\n".join(lines))

    def close(self, got: Array, exact: Array, same: Array, what: str, case: str = "",
              model: Array | None = None) -> Errors:
        """Assert `got` is within the derived tolerance of `exact` element by element; record the errors.

        `model` is the first-order error bound per element (`error_bounds`); without it the
        uniform rule applies (tolerances.py)."""
        tol = derive(exact, same, self.precision, model)
        errs = measure(got, exact, tol)
        self.records.append({"what": what, "case": case, "dtype": self.dtype, "atol": errs.atol,
                             "reference_error": tol.reference_error, **errs.as_dict()})
        if not passes(errs):
            pytest.fail(self.message(what, case, errs, tol, np.asarray(got), np.asarray(exact)), pytrace=False)
        return errs

    def message(self, what: str, case: str, errs: Errors, tol: Tolerance, got: Array, exact: Array) -> str:
        declared = "" if self.precision == self.dtype else f" (declared accurate to {self.precision} only)"
        lines = [f"{what} of adapter {self.adapter.name!r} in {self.dtype}{declared}"
                 + (f" (case {case!r})" if case else "")
                 + f" disagrees with the exact reference (evaluated in {exact_precision(self.dtype)})"]
        if errs.nan_mismatch is not None:
            i = errs.nan_mismatch
            lines.append(f"  non-finite mismatch at index {i}: expected {exact[i]!r}, got {got[i]!r}")
        lines.append(f"  worst element at index {errs.index}: expected {errs.expected:.8g}, got {errs.got:.8g}, "
                     f"error {abs(errs.got - errs.expected):.6g}"
                     + ("" if errs.ratio is None else f" = {errs.ratio:.3g} x its bound"))
        lines.append(f"  max abs error {errs.max_abs:.6g}, max rel error {errs.max_rel:.6g} "
                     f"(max abs error / max |expected|)")
        lines.append(f"  tolerance: {tol.explain(errs.index)}")
        lines.append(f"  reproduce: {self.reproduce}")
        return "\n".join(lines)
