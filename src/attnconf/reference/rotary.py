"""Rotary position embedding (RoPE; Su et al., 2021) in its two layouts.

The first `r` (`rotary_dim`, even) of the `D` features of a query or key are taken as `r/2` pairs;
pair `i` is rotated by the angle ``p * theta**(-2i/r)`` at position `p`; features ``r .. D-1``
pass through. The layouts differ only in which features form pair `i`:

* ``"half"`` (rotate-half; GPT-NeoX, Hugging Face LLaMA): features ``(i, i + r/2)``;
* ``"interleaved"`` (GPT-J, Meta's original LLaMA code): features ``(2i, 2i + 1)``.

For a pair ``(a, b)`` at angle ``phi``: ``a' = a cos(phi) - b sin(phi)``, ``b' = b cos(phi) + a sin(phi)``.
The two layouts are one permutation of the rotated features apart (`rotary_layout_permutation`):
permuting the output features of the query and key projections converts a model from one layout
to the other without changing its attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from attnconf.reference._checks import as_float_array, check_choice, check_dtype_name, invalid, precision_of
from attnconf.reference.precision import in_compute, round_to

Array = np.ndarray[Any, Any]
RotaryLayout = Literal["half", "interleaved"]
ROTARY_LAYOUTS: tuple[str, ...] = ("half", "interleaved")


def _even(rotary_dim: object) -> int:
    """Raise unless `rotary_dim` is an even integer >= 2."""
    if (
        isinstance(rotary_dim, bool)
        or not isinstance(rotary_dim, (int, np.integer))
        or rotary_dim < 2
        or rotary_dim % 2
    ):
        raise invalid("rotary_dim", "an even integer >= 2", repr(rotary_dim))
    return int(rotary_dim)


def _rotary_dim(rotary_dim: object, dim: int) -> int:
    """`rotary_dim` checked against the feature count `dim` (None: `dim`, which must then be even)."""
    r = dim if rotary_dim is None else rotary_dim
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 2 or r % 2 or r > dim:
        expected = f"an even integer between 2 and D={dim}" + (" (D is odd: give rotary_dim)" if dim % 2 else "")
        raise invalid("rotary_dim", expected, repr(rotary_dim))
    return int(r)


def _theta(theta: object) -> float:
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not (0 < float(theta) < float("inf")):
        raise invalid("theta", "a positive finite float", repr(theta))
    return float(theta)


@dataclass(frozen=True)
class Rotary:
    """Rotary embedding settings for `scaled_dot_product_attention(rotary=...)`.

    Attributes:
        layout: ``"half"`` or ``"interleaved"``.
        rotary_dim: rotate only the first `rotary_dim` features (even); None rotates all `D_k`.
        theta: the base of the frequencies ``theta**(-2i/r)``.
    """

    layout: RotaryLayout = "half"
    rotary_dim: int | None = None
    theta: float = 10000.0

    def __post_init__(self) -> None:
        check_choice("layout", self.layout, ROTARY_LAYOUTS)
        if self.rotary_dim is not None:
            _even(self.rotary_dim)
        _theta(self.theta)


def rotary_frequencies(rotary_dim: int, theta: float = 10000.0, *, dtype: str = "float64") -> Array:
    """Inverse frequencies ``theta**(-2i/r)`` for ``i = 0 .. r/2 - 1``, shape `(r/2,)`.

    Computed in float64 (``"longdouble"`` for `dtype="longdouble"`), not rounded.
    """
    r = _even(rotary_dim)
    exact = np.longdouble if dtype == "longdouble" else np.float64
    i = np.arange(r // 2, dtype=exact)
    out: Array = exact(_theta(theta)) ** (-(2 * i) / exact(r))
    return out


def _positions(positions: object, B: int, N: int) -> Array:
    pos = np.asarray(positions)
    if not np.issubdtype(pos.dtype, np.integer) or pos.dtype == np.bool_ or pos.ndim not in (1, 2):
        raise invalid("positions", "integers of shape (N,) or (B, N)", f"{pos.dtype} array of shape {pos.shape}")
    expected = (N,) if pos.ndim == 1 else (B, N)
    if pos.shape != expected:
        raise invalid("positions", f"shape {expected} (N={N} as axis 2 of x, B={B} as axis 0)", f"shape {pos.shape}")
    return pos if pos.ndim == 2 else pos[None, :]


def _pair_indices(rotary_dim: int, layout: str) -> tuple[Array, Array]:
    """Feature indices `(first, second)` of the `r/2` pairs, each `(r/2,)`."""
    half = rotary_dim // 2
    if layout == "half":
        return np.arange(half), np.arange(half) + half
    return np.arange(0, rotary_dim, 2), np.arange(1, rotary_dim, 2)


def rotary_embedding(
    x: Array,
    positions: Array,
    *,
    layout: RotaryLayout = "half",
    rotary_dim: int | None = None,
    theta: float = 10000.0,
    dtype: str | None = None,
) -> Array:
    """Rotate queries or keys `x` `(B, H, N, D)` by their positions; returns `(B, H, N, D)`.

    Args:
        x: queries or keys `(B, H, N, D)`.
        positions: integer positions `(N,)` (shared by the batch) or `(B, N)`; any integers (a
            decode step at position `p` passes ``p, p+1, ...``).
        layout: ``"half"`` (pairs ``(i, i + r/2)``) or ``"interleaved"`` (pairs ``(2i, 2i + 1)``).
        rotary_dim: `r`, the number of leading features rotated (even, at most D); None is D.
        theta: frequency base: pair `i` turns by ``p * theta**(-2i/r)``.
        dtype: precision to evaluate in; None keeps the dtype of `x`. The angles are computed in
            float64 (longdouble for ``"longdouble"``), their cosine and sine rounded to `dtype`;
            each product and each sum is computed in the compute dtype and rounded to `dtype`.

    Returns:
        The rotated array `(B, H, N, D)` in the storage dtype of the precision; features
        ``r .. D-1`` are `x`'s, rounded to the precision.
    """
    x_precision = precision_of(x)
    x = as_float_array("x", x, 4)
    precision = check_dtype_name("dtype", dtype) if dtype is not None else check_dtype_name("x", x_precision)
    check_choice("layout", layout, ROTARY_LAYOUTS)
    B, _, N, D = x.shape
    r = _rotary_dim(rotary_dim, D)
    pos = _positions(positions, B, N)
    exact = np.longdouble if precision == "longdouble" else np.float64
    angles = pos.astype(exact)[:, None, :, None] * rotary_frequencies(r, theta, dtype=precision)  # (B|1, 1, N, r/2)
    cos = in_compute(round_to(np.cos(angles), precision), precision)
    sin = in_compute(round_to(np.sin(angles), precision), precision)

    out = in_compute(round_to(x, precision), precision).copy()
    first, second = _pair_indices(r, layout)
    a = out[..., first]
    b = out[..., second]
    a_cos = in_compute(round_to(a * cos, precision), precision)
    b_sin = in_compute(round_to(b * sin, precision), precision)
    b_cos = in_compute(round_to(b * cos, precision), precision)
    a_sin = in_compute(round_to(a * sin, precision), precision)
    out[..., first] = round_to(a_cos - b_sin, precision)
    out[..., second] = round_to(b_cos + a_sin, precision)
    return round_to(out, precision)


def rotary_layout_permutation(
    dim: int, *, source: RotaryLayout, target: RotaryLayout, rotary_dim: int | None = None
) -> Array:
    """Feature permutation `(dim,)` (int64) that converts `source` layout to `target` layout.

    ``converted = x[..., perm]``: pair `i` of `source` lands where `target` keeps pair `i`
    (``interleaved -> half``: ``[0, 2, 4, ..., 1, 3, 5, ..., r, ..., dim-1]``). Features from
    `rotary_dim` on stay in place. For every `x` and positions::

        rotary_embedding(x[..., perm], pos, layout=target) == rotary_embedding(x, pos, layout=source)[..., perm]

    exactly, and ``(W[..., perm]) @ ...`` converts the query and key projections of a model.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
        raise invalid("dim", "an integer >= 2", repr(dim))
    check_choice("source", source, ROTARY_LAYOUTS)
    check_choice("target", target, ROTARY_LAYOUTS)
    r = _rotary_dim(rotary_dim, int(dim))
    perm = np.arange(int(dim), dtype=np.int64)
    src_first, src_second = _pair_indices(r, source)
    dst_first, dst_second = _pair_indices(r, target)
    perm[dst_first] = src_first
    perm[dst_second] = src_second
    return perm


def convert_rotary_layout(
    x: Array, *, source: RotaryLayout, target: RotaryLayout, rotary_dim: int | None = None, axis: int = -1
) -> Array:
    """`x` with its feature axis `axis` permuted from `source` to `target` layout (any shape).

    For a query kernel `(E_q, H, D_k)` or bias `(H, D_k)`, ``axis=-1``; apply it to the query and
    key projections alike. `rotary_dim` defaults to the size of `axis`.
    """
    arr = np.asarray(x)
    if arr.ndim == 0 or not -arr.ndim <= axis < arr.ndim:
        raise invalid("axis", f"an axis of x (rank {arr.ndim})", repr(axis))
    perm = rotary_layout_permutation(arr.shape[axis], source=source, target=target, rotary_dim=rotary_dim)
    return np.take(arr, perm, axis=axis)
