"""Mask constructors and conversions. Boolean masks use True for "may attend".

Positions: the alignment places `T` queries against `S` keys. Key `j` is at position `j`; query `i`
is at position `i` (``"top_left"``) or `i + S - T` (``"bottom_right"``, the queries are the last
`T` tokens of the key sequence). Causal masks, sliding windows, ALiBi distances and the rotary
positions of the kernel all use these positions (`aligned_positions`).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from attnconf.reference._checks import as_bool_array, check_choice, invalid

Array = np.ndarray[Any, Any]
Alignment = Literal["top_left", "bottom_right"]
ALIGNMENTS: tuple[str, ...] = ("top_left", "bottom_right")
#: a sliding window ``(left, right)``: keys at most `left` positions before the query and `right`
#: after it, bounds inclusive; None leaves that side unbounded (`window_mask`)
Window = tuple[int | None, int | None]


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


def _optional_window(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise invalid(name, "a non-negative integer or None (unbounded)", repr(value))
    return int(value)


def aligned_positions(T: int, S: int, alignment: Alignment = "top_left") -> tuple[Array, Array]:
    """Positions of the queries `(T,)` and of the keys `(S,)` (int64) under `alignment`.

    Keys are at ``0 .. S-1``. Queries are at ``0 .. T-1`` (``"top_left"``) or at
    ``S-T .. S-1`` (``"bottom_right"``; negative when ``T > S``).
    """
    T = _positive_int("T", T)
    S = _positive_int("S", S)
    check_choice("alignment", alignment, ALIGNMENTS)
    offset = 0 if alignment == "top_left" else S - T
    return np.arange(T, dtype=np.int64) + offset, np.arange(S, dtype=np.int64)


def window_mask(T: int, S: int, *, left: int | None, right: int | None, alignment: Alignment = "top_left") -> Array:
    """Sliding-window mask of shape `(T, S)`, bounds inclusive.

    Query `i` at position `p_q` (`aligned_positions`) sees key `j` at position `p_k` when
    ``p_q - left <= p_k <= p_q + right``: the diagonal (``p_k == p_q``) is always inside, a query
    sees ``left`` keys before it and ``right`` after it. ``None`` leaves that side unbounded.
    ``left=None, right=0`` is `causal_mask(T, S, alignment)`; a causal window of `W` keys counting
    the diagonal is ``left=W-1, right=0``.
    """
    left = _optional_window("left", left)
    right = _optional_window("right", right)
    pos_q, pos_k = aligned_positions(T, S, alignment)
    delta = pos_k[None, :] - pos_q[:, None]  # (T, S): key position minus query position
    visible = np.ones((T, S), dtype=bool)
    if left is not None:
        visible &= delta >= -left
    if right is not None:
        visible &= delta <= right
    return visible


def _lengths(name: str, lengths: Any, limit: int, limit_name: str) -> Array:
    lens = np.asarray(lengths)
    if lens.ndim != 1 or not np.issubdtype(lens.dtype, np.integer) or lens.dtype == np.bool_:
        raise invalid(name, "a 1-D array of integers", f"{lens.dtype} array of shape {lens.shape}")
    if (lens < 0).any() or (lens > limit).any():
        raise invalid(name, f"integers between 0 and {limit_name}={limit}", lens.tolist())
    return lens


def lengths_to_mask(query_lengths: Any, key_lengths: Any, T: int, S: int) -> Array:
    """Mask `(B, T, S)` of a ragged batch given as sequence lengths.

    Element `b` holds ``query_lengths[b]`` real queries and ``key_lengths[b]`` real keys, each at
    the start of its axis (right padding). ``mask[b, t, s]`` is True when ``t < query_lengths[b]``
    and ``s < key_lengths[b]``. A padded query row (``t >= query_lengths[b]``) sees no key: it is a
    fully masked row, whose output the `fully_masked` policy names and which the conformance
    chapters do not compare (docs/spec.md, section 7).

    Args:
        query_lengths: `(B,)` integers in ``[0, T]``.
        key_lengths: `(B,)` integers in ``[0, S]``.
        T: padded number of queries.
        S: padded number of keys.
    """
    T = _positive_int("T", T)
    S = _positive_int("S", S)
    q_lens = _lengths("query_lengths", query_lengths, T, "T")
    k_lens = _lengths("key_lengths", key_lengths, S, "S")
    if q_lens.shape != k_lens.shape:
        raise invalid(
            "key_lengths",
            f"shape {q_lens.shape} (one length per batch element, as query_lengths)",
            f"shape {k_lens.shape}",
        )
    rows = np.arange(T)[None, :, None] < q_lens[:, None, None]
    cols = np.arange(S)[None, None, :] < k_lens[:, None, None]
    return np.asarray(rows & cols)


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
