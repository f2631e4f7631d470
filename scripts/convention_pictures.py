"""Draw the weight patterns of docs/conventions.md: sliding windows and the decode step's alignment.

    python scripts/convention_pictures.py      # writes docs/img/conventions-windows.png and conventions-decode.png

Each panel is the attention weights `(T, S)` of the reference (`attnconf.reference`) with all-zero
queries, so every visible key of a row gets the same weight (1 / the number of visible keys) and the
picture is the visibility pattern itself; drawn with `attnconf.audit.plots.grid`, the audit's heatmaps.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from attnconf.audit.plots import grid
from attnconf.reference import decode_step_mask, scaled_dot_product_attention

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"
Array = np.ndarray[Any, Any]


def weights(T: int, S: int, **keywords: Any) -> Array:
    """The reference's `(T, S)` weights for zero queries and random keys (uniform over visible keys)."""
    q = np.zeros((1, 1, T, 4))
    k = np.random.default_rng(0).standard_normal((1, 1, S, 4))
    _, w = scaled_dot_product_attention(q, k, k, return_weights=True, **keywords)
    return np.asarray(w[0, 0])


def windows() -> bytes:
    panels = [
        ("window (2, 0): the diagonal and 2 keys before", weights(8, 8, window=(2, 0)), "spec"),
        ("window (3, 0): one wider (faulty)", weights(8, 8, window=(3, 0)), "left + 1"),
        ("window (1, 1): one key each side", weights(8, 8, window=(1, 1)), "spec"),
        ("window (7, 0) = causal (T=S=8)", weights(8, 8, window=(7, 0)), "as wide as the sequence"),
    ]
    return grid(panels, columns=4)


def decode() -> bytes:
    S_past, T_new = 5, 3
    spec = decode_step_mask(None, 1, S_past, T_new)[0]
    padded = decode_step_mask(np.array([3]), 1, S_past, T_new)[0]
    q = np.zeros((1, 1, T_new, 4))
    k = np.random.default_rng(0).standard_normal((1, 1, S_past + T_new, 4))

    def masked(mask: Array) -> Array:
        _, w = scaled_dot_product_attention(q, k, k, mask=mask[None, None], return_weights=True)
        return np.asarray(w[0, 0])

    S = S_past + T_new
    panels = [
        ("decode step: 3 new tokens, cache of 5 (spec: bottom-right)", masked(spec), "bottom_right"),
        ("the same step aligned top-left (faulty)", weights(T_new, S, causal=True), "top_left"),
        ("padded cache, cache_lengths = 3", masked(padded), "cache entries 3, 4 hidden"),
        ("window (2, 0), T=3 < S=8, top-left", weights(T_new, S, window=(2, 0)), "top_left"),
        ("window (2, 0), T=3 < S=8, bottom-right", weights(T_new, S, window=(2, 0), alignment="bottom_right"),
         "bottom_right"),
    ]
    return grid(panels, columns=3)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, draw in (("conventions-windows.png", windows), ("conventions-decode.png", decode)):
        (OUT / name).write_bytes(draw())
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
