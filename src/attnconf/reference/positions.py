"""Sinusoidal positional encodings (Vaswani et al., 2017, section 3.5)."""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.reference._checks import invalid

Array = np.ndarray[Any, Any]


def sinusoidal_positions(length: int, dim: int, base: float = 10000.0) -> Array:
    """Encodings of shape `(length, dim)`, float64.

    ``PE[p, 2i] = sin(p / base**(2i/dim))`` and ``PE[p, 2i+1] = cos(p / base**(2i/dim))``.
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise invalid("length", "a positive integer", repr(length))
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2 or dim % 2:
        raise invalid("dim", "an even integer >= 2", repr(dim))
    pos = np.arange(length, dtype=np.float64)[:, None]
    freq = base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    pe = np.empty((length, dim), dtype=np.float64)
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq)
    return pe
