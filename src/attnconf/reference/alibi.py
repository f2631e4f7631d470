"""ALiBi: attention with linear biases (Press, Smith and Lewis, 2022, "Train Short, Test Long").

Head `h` adds ``-slope[h] * (p_q - p_k)`` to the logit of query position `p_q` and key position
`p_k` (positions as in `attnconf.reference.masks.aligned_positions`): nothing on the diagonal, a
penalty growing linearly with the distance to earlier keys.

The slopes (section 3 of the paper): for `n` heads, `n` a power of two, the geometric sequence
``2**(-8/n), 2**(-16/n), ..., 2**(-8)``. For another `n`, take `m`, the largest power of two below
`n`: the `m` slopes of `m` heads, followed by the first ``n - m`` of every other slope (the 1st, 3rd,
5th, ...) of `2m` heads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.reference._checks import as_float_array, invalid
from attnconf.reference.masks import Alignment, aligned_positions

Array = np.ndarray[Any, Any]


def _num_heads(num_heads: object) -> int:
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) or num_heads < 1:
        raise invalid("num_heads", "a positive integer", repr(num_heads))
    return int(num_heads)


def _power_of_two_slopes(n: int) -> Array:
    """``2**(-8k/n)`` for ``k = 1 .. n``, shape `(n,)`."""
    k = np.arange(1, n + 1, dtype=np.float64)
    out: Array = np.exp2(-8.0 * k / n)
    return out


def alibi_slopes(num_heads: int) -> Array:
    """The paper's slope of each head, shape `(num_heads,)`, float64.

    8 heads: ``2**-1, 2**-2, ..., 2**-8``. 6 heads: the 4-head slopes ``2**-2, 2**-4, 2**-6, 2**-8``
    then the 1st and 3rd of the 8-head slopes, ``2**-1, 2**-3``.
    """
    n = _num_heads(num_heads)
    m = 1 << (n.bit_length() - 1)  # the largest power of two <= n
    slopes = _power_of_two_slopes(m)
    if m == n:
        return slopes
    extra = _power_of_two_slopes(2 * m)[0::2][: n - m]
    return np.concatenate([slopes, extra])


def alibi_bias(
    num_heads: int,
    T: int,
    S: int,
    *,
    alignment: Alignment = "top_left",
    slopes: Array | None = None,
    symmetric: bool = False,
) -> Array:
    """Additive ALiBi bias `(num_heads, T, S)`, float64.

    ``bias[h, i, j] = -slopes[h] * (p_q(i) - p_k(j))`` with the positions of `alignment`: 0 on the
    diagonal, ``-slope * distance`` for a key `distance` positions before the query (the paper's
    causal form) and ``+slope * distance`` for a key after it. ``symmetric=True`` gives
    ``-slopes[h] * |p_q(i) - p_k(j)|`` instead, a common form for attention without a causal mask;
    the two agree on every key a causal mask leaves visible.

    Args:
        num_heads: `H`, the number of query heads.
        T: number of queries.
        S: number of keys.
        alignment: where the queries sit against the keys (``"top_left"`` or ``"bottom_right"``).
        slopes: `(H,)` slopes; None is `alibi_slopes(num_heads)`.
        symmetric: penalise keys after the query as well.
    """
    n = _num_heads(num_heads)
    if slopes is None:
        m = alibi_slopes(n)
    else:
        m = as_float_array("slopes", slopes, 1).astype(np.float64)
        if m.shape != (n,):
            raise invalid("slopes", f"shape ({n},) (one slope per head)", f"shape {m.shape}")
    if not isinstance(symmetric, bool):
        raise invalid("symmetric", "a bool", repr(symmetric))
    pos_q, pos_k = aligned_positions(T, S, alignment)
    distance = (pos_q[:, None] - pos_k[None, :]).astype(np.float64)  # (T, S), > 0 for earlier keys
    if symmetric:
        distance = np.abs(distance)
    out: Array = -m[:, None, None] * distance[None]
    return out
