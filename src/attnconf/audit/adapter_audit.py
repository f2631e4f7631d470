"""One adapter's audit, measured where the adapter lives; every answer is plain JSON values.

`AdapterAudit(adapter)` keeps the adapter's `Context` (its memoised calls and captured arrays)
from one scenario to the next. The runner builds it with `attnconf.adapters.placement.beside`,
in this process for an adapter here (the audit's ``none``/``auto`` isolation, a conformance
session) and in the adapter's worker process otherwise, and asks `versions()`, then
`scenario(id)` for each scenario, then `example()`. One call per scenario: a worker that dies
costs the scenario it died in and those after it, never the ones measured before.

Results are ``{"outcome", "detail", "evidence"}``; captured arrays (for the cross-adapter
comparison of code paths) are ``[dtype, {"dtype", "shape", "base64"}]`` or ``[dtype, "raised TYPE"]``,
exact, NaN and bfloat16 included, and strict JSON (`decode_captures` gives the arrays back).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from attnconf.audit import schema
from attnconf.audit.measure import outputs
from attnconf.audit.observe import Context, Result, run_scenario
from attnconf.audit.scenarios import SCENARIOS


def result_json(result: Result) -> dict[str, Any]:
    """A `Result` as the report writes it."""
    return schema.jsonable({"outcome": result.outcome, "detail": result.detail, "evidence": result.evidence})  # type: ignore[no-any-return]


def decode_captures(captures: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """Captures as `Context.captures` holds them: `(dtype, array or "raised TYPE")` by probe name."""
    return {
        probe: (
            dtype,
            got if isinstance(got, str) else array_from_json(got),
        )
        for probe, (dtype, got) in captures.items()
    }


class AdapterAudit:
    """The audit of one adapter instance, in the process where it runs."""

    def __init__(self, adapter: Any):
        self.ctx = Context(adapter)
        self._sent: set[str] = set()

    def versions(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in dict(self.ctx.adapter.versions()).items()}

    def scenario(self, scenario_id: str) -> dict[str, Any]:
        """``{"result", "captures"}``: the scenario's result and the arrays it captured first."""
        result = run_scenario(SCENARIOS[scenario_id], self.ctx)
        return {"result": result_json(result), "captures": self._new_captures()}

    def example(self) -> dict[str, Any]:
        """``{"example", "captures"}``: the heatmap example (`outputs.example`) and any new captures."""
        return {"example": schema.jsonable(outputs.example(self.ctx)), "captures": self._new_captures()}

    def _new_captures(self) -> dict[str, Any]:
        new = {k: v for k, v in self.ctx.captures.items() if k not in self._sent}
        self._sent.update(new)
        return {
            probe: [dtype, got if isinstance(got, str) else array_to_json(got)]
            for probe, (dtype, got) in new.items()
        }


def array_to_json(a: Any) -> dict[str, Any]:
    """An array, exactly: {"dtype": name, "shape": [...], "base64": its bytes (little-endian, C order)}."""
    arr = np.asarray(a)
    if arr.dtype.hasobject:
        raise TypeError(f"expected an array of numbers, received dtype {arr.dtype}")
    data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "base64": base64.b64encode(data).decode("ascii")}


def array_from_json(d: dict[str, Any]) -> np.ndarray[Any, Any]:
    """The array `array_to_json` wrote (bfloat16 and the other ml_dtypes types included)."""
    try:
        dtype = np.dtype(d["dtype"])
    except TypeError:
        import ml_dtypes

        dtype = np.dtype(getattr(ml_dtypes, d["dtype"]))
    data = base64.b64decode(d["base64"])
    arr: np.ndarray[Any, Any] = np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(d["shape"])
    return arr
