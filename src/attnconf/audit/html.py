"""audit.html: the Markdown report's tables plus heatmaps, in one self-contained file.

Nothing is fetched: images are inline PNG data URIs, styles inline, no script at all, and a
Content-Security-Policy of ``default-src 'none'`` makes the browser refuse anything else. Every text
that came from an adapter or a framework (names, versions, reasons, exception messages, evidence) is
escaped. `extra_sections` are ``(title, html)`` pairs the caller vouches for (its own escaping, inline
images only); the title is escaped here.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from attnconf.audit import layout, plots, schema

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; text-align: left; }
thead th { background: #f3f3f3; position: sticky; top: 0; }
.wide { overflow-x: auto; }
td.k-spec { background: #e3f4e1; } td.k-same { background: #eef2fb; }
td.k-diff { background: #fdd9b5; font-weight: bold; } td.k-na { color: #888; font-style: italic; }
td.k-broken { background: #f6c6c6; font-weight: bold; }
td a { color: inherit; text-decoration: none; } td a:hover { text-decoration: underline; }
pre { white-space: pre-wrap; word-break: break-all; font-size: 11px; max-width: 70em; margin: 0.3em 0; }
figure { display: inline-block; margin: 0.4em; vertical-align: top; max-width: 100%; }
figcaption { font-size: 12px; } img { max-width: 100%; height: auto; }
.legend span { padding: 1px 6px; margin-right: 0.5em; border: 1px solid #ccc; }
nav a { margin-right: 1em; }
"""


_STATUS_CLASS = {"ok": "k-spec", "skipped": "k-na", "crashed": "k-broken"}


def e(text: Any) -> str:
    """Escape any text for HTML element content and attribute values."""
    return html.escape(str(text), quote=True)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{e(alt)}">'


def _header(report: dict[str, Any]) -> str:
    env, run = report["environment"], report["run"]
    rows = "".join(
        f"<tr><td>{e(layout.short_label(n))}</td><td>{e(n)}</td><td>{e(a['framework'])}</td><td>{e(a['api'])}</td>"
        f"<td>{e(layout.versions_text(a['versions']))}</td><td class=\"{_STATUS_CLASS.get(a['status'], 'k-broken')}\">"
        f"{e(a['status'])}</td><td>{e(a['reason'] or '')}</td></tr>"
        for n, a in report["adapters"].items()
    )
    return (
        f"<h1>attnconf behaviour audit</h1><p>attnconf {e(report['attnconf'])}; Python {e(env['python'])} on "
        f"{e(env['platform'])}; device {e(env['device'])}; started {e(run['started'])}, {run['duration_s']:.1f} s. "
        "Every outcome was observed in this run.</p>"
        '<p class="legend"><span class="k-spec" style="background:#e3f4e1">the spec\'s outcome</span>'
        '<span style="background:#eef2fb">the common outcome (no spec)</span>'
        '<span style="background:#fdd9b5"><b>departs</b></span><span style="color:#888"><i>not applicable (n/a: declared unsupported, reason in the tooltip)</i></span>'
        '<span style="background:#f6c6c6"><b>crashed / invalid</b></span> Each cell links to its evidence.</p>'
        '<section id="adapters"><h2>Adapters</h2><table><thead><tr><th>column</th><th>adapter</th><th>framework</th>'
        f"<th>api</th><th>versions</th><th>status</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _tables(report: dict[str, Any], cols: list[str]) -> str:
    parts = []
    head = "".join(f"<th title=\"{e(c)}\">{e(layout.short_label(c))}</th>" for c in cols)
    for gid, title in report["groups"].items():
        ids = [sid for sid, sc in report["scenarios"].items() if sc["group"] == gid]
        if not ids:
            continue
        rows = []
        for sid in ids:
            sc = report["scenarios"][sid]
            ref = layout.reference_outcome(sc)
            cells = []
            for c in cols:
                r = sc["results"].get(c)
                if r is None:
                    cells.append("<td></td>")
                    continue
                kind = layout.result_kind(r, sc, ref)
                title, label = (layout.na_title(r), "n/a") if layout.declared(r) else (r["detail"], r["outcome"])
                cells.append(f'<td class="k-{kind}" title="{e(title)}"><a href="#{layout.anchor(sid, c)}">'
                             f"{e(label)}</a></td>")
            rows.append(f'<tr><th><a href="#{layout.anchor(sid)}">{e(sid)}</a></th><td>{e(sc["spec"] or "-")}</td>'
                        + "".join(cells) + "</tr>")
        parts.append(f'<section id="g-{e(gid)}"><h2>{e(title)}</h2><div class="wide"><table><thead><tr>'
                     f"<th>scenario</th><th>spec</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
                     "</div></section>")
    return "".join(parts)


def _matrix(value: Any) -> np.ndarray[Any, Any] | None:
    if not isinstance(value, list) or not value:
        return None
    return np.array([[schema.number(x) for x in row] for row in value], dtype=np.float64)


def _scenario_panels(report: dict[str, Any], sid: str, cols: list[str]) -> list[tuple[str, Any, str]]:
    sc = report["scenarios"].get(sid)
    if sc is None:
        return []
    panels = []
    for c in cols:
        r = sc["results"].get(c)
        if r is None:
            continue
        panels.append((f"{layout.short_label(c)}: {r['outcome']}", _matrix(r["evidence"].get("heatmap")), r["detail"]))
    return panels


def _pictures(report: dict[str, Any], cols: list[str]) -> str:
    if not plots.available():
        return "<section id=\"pictures\"><h2>Pictures</h2><p>matplotlib is not installed: no pictures.</p></section>"
    from attnconf.audit.measure.common import base

    ex = report["example"]
    ref = _matrix(ex["reference"])
    assert ref is not None, "the example has no reference matrix"
    rows = []
    for c in cols:
        a = ex["adapters"].get(c) or {"error": "no example (the adapter did not finish)"}
        rows.append((layout.short_label(c), _matrix(a.get("weights")), _matrix(a.get("abs_error")),
                     str(a.get("error", ""))))
    errors = "".join(f"<li>{e(c)}: max |adapter - reference| = {e(a.get('max_abs_error', a.get('error', '')))}</li>"
                     for c in cols for a in [ex["adapters"].get(c) or {}])
    parts = [f"<section id=\"pictures\"><h2>Pictures</h2><h3>A fixed example</h3><p>{e(ex['description'])}</p>",
             f"<figure>{_img(plots.examples(ref, rows), 'attention weights of each adapter beside the reference')}"
             f"</figure><ul>{errors}</ul>"]
    masked = _scenario_panels(report, "fully_masked_row", cols)
    if masked:
        png = plots.grid(masked, row=1)
        parts.append("<h3>Fully masked row (float32)</h3><p>Batch element 0, head 0; query row 1 (outlined) sees "
                     f"no key. NaN in magenta.</p><figure>{_img(png, 'fully masked row heatmaps')}</figure>")
    causal = _scenario_panels(report, "causal_alignment", cols)
    if causal:
        p = base().with_inputs("causal", causal=True)
        refs = [(f"spec: {a}", p.reference(alignment=a)[0, 0], "") for a in ("top_left", "bottom_right")]
        png = plots.grid(refs + causal)
        parts.append("<h3>Causal with T &lt; S</h3><p>Batch element 0, head 0; the first two panels are the spec's "
                     f"two alignments.</p><figure>{_img(png, 'causal alignment heatmaps')}</figure>")
    parts.append("</section>")
    return "".join(parts)


def _evidence(report: dict[str, Any], cols: list[str]) -> str:
    parts = ['<section id="evidence"><h2>Evidence</h2>']
    for sid, sc in report["scenarios"].items():
        ref = layout.reference_outcome(sc)
        spec = f"spec: {e(sc['spec'])}" if sc["spec"] else "spec: defines no outcome"
        if sc["spec_note"]:
            spec += f" ({e(sc['spec_note'])})"
        outcomes = "; ".join(f"<b>{e(k)}</b>: {e(v)}" for k, v in sc["outcomes"].items())
        rows = []
        for c in cols:
            r = sc["results"].get(c)
            if r is None:
                continue
            kind = layout.result_kind(r, sc, ref)
            numbers = e(json.dumps(r["evidence"], indent=1, ensure_ascii=False))
            why = layout.declared(r)
            na = f"<i>n/a</i>, declared unsupported: {e(why)}. Measured: " if why else ""
            rows.append(f'<tr id="{layout.anchor(sid, c)}"><th>{e(c)}</th><td class="k-{kind}">{e(r["outcome"])}</td>'
                        f"<td>{na}{e(r['detail'])}<details><summary>numbers</summary><pre>{numbers}</pre></details></td></tr>")
        parts.append(
            f'<section id="{layout.anchor(sid)}"><h3>{e(sid)}: {e(sc["title"])}</h3><p>{e(sc["description"])} '
            f"{spec}.</p><p>Outcomes: {outcomes}.</p><p>Setup: <code>{e(json.dumps(sc['setup']))}</code>. "
            f"Reproduce: <code>{e(sc['reproduce'])}</code>.</p><table><tbody>{''.join(rows)}</tbody></table></section>"
        )
    parts.append("</section>")
    return "".join(parts)


def render(report: dict[str, Any], extra_sections: Sequence[tuple[str, str]] = ()) -> str:
    """audit.html for an ``attnconf.audit/1`` report, with the caller's `extra_sections` appended."""
    cols = layout.columns(report)
    nav = ['<a href="#adapters">adapters</a>']
    nav += [f'<a href="#g-{e(g)}">{e(t)}</a>' for g, t in report["groups"].items()]
    nav += ['<a href="#pictures">pictures</a>', '<a href="#evidence">evidence</a>']
    extras = "".join(f'<section class="extra" id="extra-{i}"><h2>{e(title)}</h2>{body}</section>'
                     for i, (title, body) in enumerate(extra_sections))
    nav += [f'<a href="#extra-{i}">{e(title)}</a>' for i, (title, _) in enumerate(extra_sections)]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>attnconf behaviour audit</title><style>{STYLE}</style></head><body>"
        f"{_header(report)}<nav>{''.join(nav)}</nav>{_tables(report, cols)}{_pictures(report, cols)}"
        f"{extras}{_evidence(report, cols)}</body></html>\n"
    )
