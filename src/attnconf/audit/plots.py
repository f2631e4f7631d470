"""Heatmaps for audit.html, drawn with matplotlib (Agg, no pyplot state) and returned as PNG bytes.

Each picture is one mosaic: the tiles (one small heatmap each) are composed into a single RGBA image
and drawn with one `imshow`, so a picture of twenty adapters costs about as much as one of a single
adapter. Labels are drawn literally (dollar signs escaped, so mathtext never parses adapter names).
NaN cells are magenta; a tile without data is grey with its note.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]
NAN_RGBA = (0.906, 0.161, 0.541, 1.0)  # magenta
EMPTY_RGBA = (0.9, 0.9, 0.9, 1.0)
CELL_IN = 0.24  # inches per heatmap cell, at most
TILE_IN = 2.4  # inches per tile width, at most
CHAR_IN = 0.052  # inches per character of 6.5 pt text
Tile = tuple[str, "Array | None", str, int]  # (title, matrix or None, note, colour scale index)


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plain(text: str, width: int, lines: int = 2) -> str:
    return "\n".join(textwrap.wrap(text.replace("$", r"\$"), max(8, width))[:lines]) or " "


def _rgba(matrix: Array, norm: Any, cmap: Any) -> Array:
    m = np.asarray(matrix, dtype=np.float64)
    finite = np.isfinite(m)
    rgba = np.asarray(cmap(norm(np.where(finite, m, 0.0))), dtype=np.float64)
    rgba[~finite] = NAN_RGBA
    return rgba


def mosaic(tiles: Sequence[Tile], scales: Sequence[tuple[Any, str, str]], *, columns: int,
           outline_row: int | None = None) -> bytes:
    """One PNG of `tiles`; `scales[k]` = (Normalize, colormap name, label) for tiles of scale index k.

    Every matrix has the same shape (T, S); `outline_row` is outlined in red in every tile.
    """
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    shapes = [np.shape(t[1]) for t in tiles if t[1] is not None]
    T, S = shapes[0] if shapes else (4, 6)
    n = max(1, len(tiles))
    cols = min(columns, n)
    rows = -(-n // cols)
    gap_x = 1.2
    gap_y = 2.6 * max(1.0, CELL_IN * S / TILE_IN)  # in cells: room between tiles and for two title lines
    width, height = cols * (S + gap_x), rows * (T + gap_y)
    canvas = np.ones((int(np.ceil(height * 4)), int(np.ceil(width * 4)), 4))  # quarter-cell resolution
    cmaps = [mpl.colormaps[c] for _, c, _ in scales]
    placed = []
    for k, (title, matrix, note, scale) in enumerate(tiles):
        r, c = divmod(k, cols)
        x0, y0 = c * (S + gap_x), r * (T + gap_y) + gap_y - 0.4
        if matrix is None:
            rgba = np.broadcast_to(np.asarray(EMPTY_RGBA), (T, S, 4))
        else:
            rgba = _rgba(matrix, scales[scale][0], cmaps[scale])
        block = np.repeat(np.repeat(rgba, 4, axis=0), 4, axis=1)
        iy, ix = int(round(y0 * 4)), int(round(x0 * 4))
        canvas[iy:iy + T * 4, ix:ix + S * 4] = block
        placed.append((x0, y0, title, matrix is None, note))
    cell = min(CELL_IN, TILE_IN / S)
    bar_w = 1.1 * len(scales)
    fig = Figure(figsize=(width * cell + bar_w, height * cell + 0.1), dpi=80)
    FigureCanvasAgg(fig)
    main_w = width * cell / (width * cell + bar_w)
    ax = fig.add_axes((0.0, 0.0, main_w, 1.0))
    ax.imshow(canvas, extent=(0, width, height, 0), interpolation="nearest", aspect="equal")
    ax.set_xlim(-0.2, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    chars = int((S + gap_x) * cell / CHAR_IN)
    for x0, y0, title, empty, note in placed:
        if title:
            ax.text(x0, y0 - 0.3, _plain(title, chars), fontsize=6.5, va="bottom", ha="left")
        if empty:
            ax.text(x0 + S / 2, y0 + T / 2, _plain(note, chars - 2, 4), fontsize=6, va="center", ha="center")
        elif outline_row is not None:
            ax.add_patch(Rectangle((x0, y0 + outline_row), S, 1, fill=False, edgecolor="red", linewidth=1.2))
    for k, (norm, cmap, label) in enumerate(scales):
        cax = fig.add_axes((main_w + (k * 1.1 + 0.15) / (width * cell + bar_w), 0.12,
                            0.12 / (width * cell + bar_w), 0.76))
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
        cax.tick_params(labelsize=6)
        cax.set_title(label, fontsize=6.5)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def grid(panels: Sequence[tuple[str, Array | None, str]], *, columns: int = 6, row: int | None = None) -> bytes:
    """Heatmaps of `(title, matrix or None, note)` panels on one 0..1 scale; `row` outlined in red."""
    from matplotlib.colors import Normalize

    return mosaic([(t, m, n, 0) for t, m, n in panels], [(Normalize(0, 1), "viridis", "weight")],
                  columns=columns, outline_row=row)


def examples(reference: Array, rows: Sequence[tuple[str, Array | None, Array | None, str]]) -> bytes:
    """Per adapter: its weights, the reference's beside them, and |adapter - reference| (log scale).

    `rows` are `(label, weights or None, abs_error or None, note)`.
    """
    from matplotlib.colors import LogNorm, Normalize

    tiles: list[Tile] = []
    for k, (label, weights, err, note) in enumerate(rows):
        first = k < 2  # the first row of the mosaic names the reference and error columns
        tiles += [(label, weights, note, 0), ("reference" if first else "", reference, "", 0),
                  ("|adapter - reference|" if first else "", None if err is None else np.maximum(err, 1e-12), note, 1)]
    return mosaic(tiles, [(Normalize(0, 1), "viridis", "weight"), (LogNorm(1e-10, 1.0), "magma", "abs error")],
                  columns=6)
