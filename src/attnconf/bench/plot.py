"""PNG plots of a benchmark: time vs N and peak extra memory vs N, log-log, with an N^2 slope.

matplotlib is imported here only, with the Agg backend (no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

MIB = 1 << 20


def _series(results: dict[str, Any], key: str, scale: float) -> dict[str, tuple[list[int], list[float]]]:
    out = {}
    for name, r in results.items():
        pts = [(s["N"], s[key] / scale) for s in r.get("steps", []) if s.get("status") == "ok" and s.get(key)]
        if pts:
            out[name] = ([p[0] for p in pts], [p[1] for p in pts])
    return out


def _slope(ax: Any, series: dict[str, tuple[list[int], list[float]]], power: int, label: str, style: str) -> None:
    """A dashed N^power guide through the geometric mean of the values at the smallest N."""
    if not series:
        return
    n0 = min(min(x) for x, _ in series.values())
    n1 = max(max(x) for x, _ in series.values())
    firsts = [y[x.index(n0)] for x, y in series.values() if n0 in x and y[x.index(n0)] > 0]
    if not firsts or n1 == n0:
        return
    y0 = math.exp(sum(math.log(v) for v in firsts) / len(firsts))
    ax.plot([n0, n1], [y0, y0 * (n1 / n0) ** power], style, color="black", linewidth=1, alpha=0.6, label=label)


def _figure(series: dict[str, tuple[list[int], list[float]]], names: list[str], ylabel: str, title: str,
            path: Path, linear_guide: bool = False) -> Path:
    """One log-log figure; each subject keeps its colour (its place in `names`) across figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    colours = plt.get_cmap("tab10")
    for name, (x, y) in sorted(series.items()):
        ax.plot(x, y, marker="o", label=name, color=colours(names.index(name) % 10))
    _slope(ax, series, 2, "slope N²", "--")
    if linear_guide:
        _slope(ax, series, 1, "slope N", ":")
    sizes = sorted({n for x, _ in series.values() for n in x})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes], fontsize=8)
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N (T = S)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(payload: dict[str, Any], directory: Path) -> list[Path]:
    """`bench-time.png` and `bench-memory.png` in `directory`; returns the paths written."""
    s = payload["settings"]
    what = (f"B={s['batch']} H={s['heads']} d={s['head_dim']} {s['dtype']}"
            f"{' causal' if s['causal'] else ''}, {s['threads']} threads, {payload['machine']['cpu']}")
    results = payload["results"]
    names = sorted(results)
    return [
        _figure(_series(results, "median_s", 1.0), names, "median time per call (s)",
                f"attention time vs N ({what})", directory / "bench-time.png"),
        _figure(_series(results, "peak_extra_bytes", MIB), names, "peak extra resident memory (MiB; 0 not drawn)",
                f"attention memory vs N ({what})", directory / "bench-memory.png", linear_guide=True),
    ]
