"""Mask constructors and conversions. Boolean masks use True for "may attend"."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from attnconf.reference._checks import as_bool_array, check_choice, invalid

Array = np.ndarray[Any, Any]
Alignment = Literal["top_left", "bottom_right"]
ALIGNMENTS: tuple[str, ...] = ("top_left", "bottom_right")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise invalid(name, "a positive integer", repr(value))
    return int(value)


def causal_mask(T: int, S: int, alignment: Alignment = "top_left") -> Array:
    """Boolean causal mask of shape `(T, S)`.

    ``top_left``: key `j` is visible to query `i` when ``j <= i``.
    ``bottom_right``: key `j` is visible to query `i` when ``j <= i + S - T`` (the last query
    sees every key, as when decoding with a cache of ``S - T`` earlier keys).
    """
    T = _positive_int("T", T)
    S = _positive_int("S", S)
    check_choice("alignment", alignment, ALIGNMENTS)
    offset = 0 if alignment == "top_left" else S - T
    i = np.arange(T)[:, None]
    j = np.arange(S)[None, :]
    return np.asarray(j <= i + offset)


def padding_mask(lengths: Any, S: int) -> Array:
    """Key-padding mask of shape `(B, S)`: True for the first `lengths[b]` keys of element `b`."""
    S = _positive_int("S", S)
    lens = np.asarray(lengths)
    if lens.ndim != 1 or not np.issubdtype(lens.dtype, np.integer):
        raise invalid("lengths", "a 1-D array of integers", f"{lens.dtype} array of shape {lens.shape}")
    if (lens < 0).any() or (lens > S).any():
        raise invalid("lengths", f"integers between 0 and S={S}", lens.tolist())
    return np.asarray(np.arange(S)[None, :] < lens[:, None])


def bool_to_additive(mask: Array, dtype: Any = np.float64) -> Array:
    """Additive mask: 0 where `mask` is True, `-inf` where it is False."""
    m = as_bool_array("mask", mask, range(1, 9))
    return np.where(m, 0.0, -np.inf).astype(dtype)


def additive_to_bool(bias: Array) -> Array:
    """Boolean mask from an additive one: True where the bias is not `-inf`."""
    b = np.asarray(bias)
    if not np.issubdtype(b.dtype, np.floating):
        raise invalid("bias", "a floating-point additive mask", f"dtype {b.dtype}")
    return np.asarray(~np.isneginf(b))
