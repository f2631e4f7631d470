"""Argument checks shared by the reference and the adapter contract.

Every error names the argument, what was expected and what was received, in the style of
Keras argument errors: "Received an invalid value for argument `num_heads`, expected a
positive integer. Received: num_heads=0".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")
#: Precisions the reference evaluates in: the contract's, plus NumPy's extended `longdouble`, in
#: which the conformance suite computes the "exact" result it measures everyone against.
REFERENCE_DTYPES = (*FLOAT_DTYPES, "longdouble")


def invalid(name: str, expected: str, received: object) -> ValueError:
    """Build the project's standard argument error."""
    return ValueError(
        f"Received an invalid value for argument `{name}`, expected {expected}. "
        f"Received: {name}={received}"
    )


def describe(x: object) -> str:
    """A short description of an array-like value for error messages."""
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"[:120]


def is_bfloat16(x: object) -> bool:
    """True for a NumPy array of ml_dtypes' bfloat16 (NumPy has no bfloat16 of its own)."""
    return isinstance(x, np.ndarray) and x.dtype.name == "bfloat16"


def precision_of(x: object) -> str:
    """The precision an array is held in: its dtype's name (``"bfloat16"`` for ml_dtypes' bfloat16)."""
    return str(np.asarray(x).dtype) if not is_bfloat16(x) else "bfloat16"


def as_float_array(name: str, x: object, ndim: int | Sequence[int]) -> np.ndarray[Any, Any]:
    """Return `x` as a floating NumPy array of the given rank, or raise `ValueError`.

    An ml_dtypes bfloat16 array is returned as float32 holding the same values exactly (the
    contract's representation of bfloat16)."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as err:  # pragma: no cover - exotic objects
            raise invalid(name, "a floating-point array", describe(x)) from err
    if is_bfloat16(x):
        x = x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise invalid(name, "a floating-point array (float16, float32, float64 or ml_dtypes bfloat16)", describe(x))
    ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if x.ndim not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise invalid(name, f"an array of rank {expected}", describe(x))
    if x.size == 0:
        raise invalid(name, "a non-empty array (every dimension at least 1)", describe(x))
    return x


def as_bool_array(name: str, x: object, ndim: int | Sequence[int]) -> np.ndarray[Any, Any]:
    """Return `x` as a boolean NumPy array of the given rank, or raise `ValueError`."""
    x = np.asarray(x)
    if x.dtype != np.bool_:
        raise invalid(name, "a boolean array (True means 'may attend')", describe(x))
    ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if x.ndim not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise invalid(name, f"an array of rank {expected}", describe(x))
    return x


def expect_dim(name: str, x: np.ndarray[Any, Any], axis: int, size: int, meaning: str) -> None:
    """Raise unless `x.shape[axis] == size`."""
    if x.shape[axis] != size:
        raise invalid(
            name,
            f"size {size} on axis {axis} ({meaning})",
            f"array of shape {x.shape}",
        )


def check_broadcast(
    name: str, x: np.ndarray[Any, Any], target: tuple[int, ...], labels: str
) -> None:
    """Raise unless `x` has the rank of `target` and each axis is 1 or the target size.

    Nothing is broadcast silently: a `(B, T, S)` mask handed where `(B, H, T, S)` is expected
    would broadcast B against H under NumPy's rules, so ranks must match exactly.
    """
    ok = x.ndim == len(target) and all(a in (1, b) for a, b in zip(x.shape, target))
    if not ok:
        raise invalid(
            name,
            f"an array broadcastable to {labels}={target} with the same rank "
            "(each axis 1 or full size)",
            f"array of shape {x.shape}",
        )


def check_finite(name: str, x: np.ndarray[Any, Any]) -> None:
    """Raise if `x` holds NaN or infinity."""
    bad = ~np.isfinite(x)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise invalid(name, "finite values", f"non-finite value {x[where]} at index {where}")


def check_dtype_name(name: str, dtype: str) -> str:
    """Raise unless `dtype` is a precision the reference evaluates in."""
    if dtype not in REFERENCE_DTYPES:
        raise invalid(name, f"one of {', '.join(REFERENCE_DTYPES)}", repr(dtype))
    return dtype


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Raise unless `value` is one of `choices`."""
    if value not in choices:
        raise invalid(name, f"one of {', '.join(map(repr, choices))}", repr(value))
    return value
