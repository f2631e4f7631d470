"""Evaluating the reference in a given precision, bfloat16 included, with NumPy only.

NumPy has no bfloat16. Arrays in bfloat16 cross the adapter contract as float32 arrays whose
values are exactly representable in bfloat16 (``round_to(x, "bfloat16")``).

``"longdouble"`` (NumPy's extended precision) is the precision of the "exact" result the
conformance suite measures implementations against.

"The reference evaluated in precision ``p``" means: inputs rounded to ``p``; every primitive step
(a projection, the logits, the softmax, the weighted sum) computed in ``compute_dtype(p)`` and its
result rounded to ``p``. For float16 and bfloat16 the compute dtype is float32, the mixed
precision that most CPU kernels use; for float32 and float64 it is the dtype itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.reference._checks import check_dtype_name

Array = np.ndarray[Any, Any]

#: Unit roundoff (half the machine epsilon) of each precision.
UNIT_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
    # 2**-64 where longdouble is x87 80-bit extended; 2**-53 where it is plain float64 (e.g. arm64 macOS)
    "longdouble": float(np.finfo(np.longdouble).eps) / 2,
}


def storage_dtype(dtype: str) -> np.dtype[Any]:
    """The NumPy dtype that holds arrays of precision `dtype` (float32 for bfloat16)."""
    check_dtype_name("dtype", dtype)
    if dtype == "longdouble":
        return np.dtype(np.longdouble)
    return np.dtype("float32") if dtype == "bfloat16" else np.dtype(dtype)


def compute_dtype(dtype: str) -> np.dtype[Any]:
    """The NumPy dtype that the reference computes in for precision `dtype`."""
    if dtype in ("float16", "bfloat16"):
        return np.dtype("float32")
    return storage_dtype(dtype)


def _round_bfloat16(x: Array) -> Array:
    """Round float32 values to the nearest bfloat16 (ties to even), kept in float32."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    bits = x32.view(np.uint32)
    # Round to nearest even on the 16 bits dropped; NaN stays NaN (quiet bit kept).
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    rounded = ((bits + rounding) & np.uint32(0xFFFF0000)).astype(np.uint32)
    rounded = np.where(np.isnan(x32), bits | np.uint32(0x00400000), rounded)
    out: Array = rounded.view(np.float32)
    return out


def round_to(x: Array, dtype: str) -> Array:
    """Round `x` to precision `dtype`, returned in `storage_dtype(dtype)`."""
    if dtype == "bfloat16":
        return _round_bfloat16(np.asarray(x, dtype=np.float32))
    return np.asarray(x).astype(storage_dtype(dtype))


def in_compute(x: Array, dtype: str) -> Array:
    """`x` converted to the compute dtype of precision `dtype`."""
    return np.asarray(x).astype(compute_dtype(dtype), copy=False)
