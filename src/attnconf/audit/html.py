"""audit.html: the Markdown report's outcomes plus heatmaps, in one self-contained file.

One table per scenario group, adapters as rows (grouped under their framework family, the adapters'
``framework`` trait in the report) and the group's scenarios as columns, so thirty adapters or more
stay a table that scrolls down rather than across; its header row and adapter column stay put while
it scrolls. A family filter (one checkbox per family, "all" resets them) hides a family's rows in
every table: plain CSS (``:has()``), no script.

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
.grid-wrap { overflow: auto; max-height: 85vh; border: 1px solid #ccc; }
.grid { margin: 0; }
.grid thead th { z-index: 2; font-weight: normal; min-width: 5em; }
.grid thead th a { font-weight: bold; }
.grid th.adapter { position: sticky; left: 0; background: #fff; z-index: 1; white-space: nowrap; }
.grid thead th.adapter { background: #f3f3f3; z-index: 3; }
.grid tr.family th { background: #e8e8e8; text-align: left; }
.grid tr.family th span { position: sticky; left: 6px; }
form.filter { position: sticky; top: 0; z-index: 5; background: #fff; padding: 4px 0; border-bottom: 1px solid #ccc; }
form.filter label { margin-right: 0.9em; white-space: nowrap; }
"""


_STATUS_CLASS = {"ok": "k-spec", "skipped": "k-na", "crashed": "k-broken"}


def e(text: Any) -> str:
    """Escape any text for HTML element content and attribute values."""
    return html.escape(str(text), quote=True)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{e(alt)}">'


def _family_ids(fams: dict[str, list[str]]) -> dict[str, str]:
    """Each adapter's family class, ``fam-<index>``: made of safe characters whatever the family is called."""
    return {name: f"fam-{i}" for i, names in enumerate(fams.values()) for name in names}


def family_css(fams: dict[str, list[str]]) -> str:
    """The filter's rules: the rows of a family whose checkbox is cleared are hidden (no script)."""
    return "".join(f"body:has(#show-fam-{i}:not(:checked)) .fam-{i} {{ display: none; }}\n" for i in range(len(fams)))


def _filter(fams: dict[str, list[str]]) -> str:
    boxes = "".join(
        f'<label><input type="checkbox" id="show-fam-{i}" checked> {e(fam)} ({len(names)})</label>'
        for i, (fam, names) in enumerate(fams.items())
    )
    return f'<form class="filter" id="filter">Show families: {boxes}<button type="reset">all</button></form>'


def _header(report: dict[str, Any], fams: dict[str, list[str]]) -> str:
    env, run = report["environment"], report["run"]
    summary = "".join(
        f'<tr class="fam-{i}"><th>{e(fam)}</th><td>{len(names)}</td><td class="{"k-diff" if k["diff"] else ""}">'
        f'{k["diff"]}</td><td class="{"k-broken" if k["broken"] else ""}">{k["broken"]}</td><td>{k["na"]}</td></tr>'
        for i, (fam, names) in enumerate(fams.items())
        for k in [layout.family_counts(report, names)]
    )
    return (
        f"<h1>attnconf behaviour audit</h1><p>attnconf {e(report['attnconf'])}; Python {e(env['python'])} on "
        f"{e(env['platform'])}; device {e(env['device'])}; started {e(run['started'])}, {run['duration_s']:.1f} s. "
        "Every outcome was observed in this run.</p>"
        '<p class="legend"><span class="k-spec" style="background:#e3f4e1">the spec\'s outcome</span>'
        '<span style="background:#eef2fb">the common outcome (no spec)</span>'
        '<span style="background:#fdd9b5"><b>departs</b></span><span style="color:#888"><i>not applicable (n/a: declared unsupported, reason in the tooltip)</i></span>'
        '<span style="background:#f6c6c6"><b>crashed / invalid</b></span> Each cell links to its evidence.</p>'
        '<section id="summary"><h2>Summary by framework family</h2><table><thead><tr><th>family</th><th>adapters</th>'
        "<th>departures</th><th>crashed / invalid</th><th>n/a</th></tr></thead>"
        f"<tbody>{summary}</tbody></table></section>"
    )


def _adapters(report: dict[str, Any], fams: dict[str, list[str]]) -> str:
    fam_of = _family_ids(fams)
    listed = [n for names in fams.values() for n in names] + [n for n in report["adapters"] if n not in fam_of]
    rows = []
    for n in listed:
        a = report["adapters"][n]
        k = layout.family_counts(report, [n])
        rows.append(
            f'<tr class="{fam_of.get(n, "")}"><td>{e(a["framework"])}</td><td>{e(layout.short_label(n))}</td>'
            f"<td>{e(n)}</td><td>{e(a['api'])}</td><td>{e(layout.versions_text(a['versions']))}</td>"
            f'<td class="{_STATUS_CLASS.get(a["status"], "k-broken")}">{e(a["status"])}</td><td>{k["diff"]}</td>'
            f"<td>{k['broken']}</td><td>{e(a['reason'] or '')}</td></tr>"
        )
    return (
        '<section id="adapters"><h2>Adapters</h2><table><thead><tr><th>family</th><th>row</th><th>adapter</th>'
        "<th>api</th><th>versions</th><th>status</th><th>departures</th><th>crashed / invalid</th><th>reason</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _breakable(sid: str) -> str:
    """A scenario id, escaped, that may wrap after its dots and underscores (narrow columns)."""
    return e(sid).replace(".", ".<wbr>").replace("_", "_<wbr>")


def _tables(report: dict[str, Any], fams: dict[str, list[str]]) -> str:
    parts = []
    for gid, title in report["groups"].items():
        ids = [sid for sid, sc in report["scenarios"].items() if sc["group"] == gid]
        if not ids:
            continue
        refs = {sid: layout.reference_outcome(report["scenarios"][sid]) for sid in ids}
        head = "".join(
            f'<th title="{e(report["scenarios"][sid]["title"])}"><a href="#{layout.anchor(sid)}">{_breakable(sid)}</a>'
            f"<br><small>spec: {e(report['scenarios'][sid]['spec'] or '-')}</small></th>"
            for sid in ids
        )
        rows = []
        for i, (fam, names) in enumerate(fams.items()):
            rows.append(f'<tr class="family fam-{i}"><th colspan="{len(ids) + 1}"><span>{e(fam)}</span></th></tr>')
            for c in names:
                cells = []
                for sid in ids:
                    sc = report["scenarios"][sid]
                    r = sc["results"].get(c)
                    if r is None:
                        cells.append("<td></td>")
                        continue
                    kind = layout.result_kind(r, sc, refs[sid])
                    tip, label = (layout.na_title(r), "n/a") if layout.declared(r) else (r["detail"], r["outcome"])
                    cells.append(
                        f'<td class="k-{kind}" title="{e(tip)}"><a href="#{layout.anchor(sid, c)}">{e(label)}</a></td>'
                    )
                rows.append(
                    f'<tr class="fam-{i}"><th class="adapter" title="{e(c)}">{e(layout.short_label(c))}</th>'
                    + "".join(cells)
                    + "</tr>"
                )
        parts.append(
            f'<section id="g-{e(gid)}"><h2>{e(title)}</h2><div class="grid-wrap"><table class="grid"><thead>'
            f'<tr><th class="adapter">adapter \\ scenario</th>{head}</tr></thead><tbody>{"".join(rows)}'
            "</tbody></table></div></section>"
        )
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


def _pictures(report: dict[str, Any], cols: list[str], fam_of: dict[str, str]) -> str:
    if not plots.available():
        return '<section id="pictures"><h2>Pictures</h2><p>matplotlib is not installed: no pictures.</p></section>'
    from attnconf.audit.measure.common import base

    ex = report["example"]
    ref = _matrix(ex["reference"])
    assert ref is not None, "the example has no reference matrix"
    rows = []
    for c in cols:
        a = ex["adapters"].get(c) or {"error": "no example (the adapter did not finish)"}
        rows.append(
            (layout.short_label(c), _matrix(a.get("weights")), _matrix(a.get("abs_error")), str(a.get("error", "")))
        )
    errors = "".join(
        f'<li class="{fam_of[c]}">{e(c)}: max |adapter - reference| = '
        f"{e(a.get('max_abs_error', a.get('error', '')))}</li>"
        for c in cols
        for a in [ex["adapters"].get(c) or {}]
    )
    parts = [
        f'<section id="pictures"><h2>Pictures</h2><h3>A fixed example</h3><p>{e(ex["description"])}</p>',
        f"<figure>{_img(plots.examples(ref, rows), 'attention weights of each adapter beside the reference')}"
        f"</figure><ul>{errors}</ul>",
    ]
    masked = _scenario_panels(report, "fully_masked_row", cols)
    if masked:
        png = plots.grid(masked, row=1)
        parts.append(
            "<h3>Fully masked row (float32)</h3><p>Batch element 0, head 0; query row 1 (outlined) sees "
            f"no key. NaN in magenta.</p><figure>{_img(png, 'fully masked row heatmaps')}</figure>"
        )
    causal = _scenario_panels(report, "causal_alignment", cols)
    if causal:
        p = base().with_inputs("causal", causal=True)
        refs = [(f"spec: {a}", p.reference(alignment=a)[0, 0], "") for a in ("top_left", "bottom_right")]
        png = plots.grid(refs + causal)
        parts.append(
            "<h3>Causal with T &lt; S</h3><p>Batch element 0, head 0; the first two panels are the spec's "
            f"two alignments.</p><figure>{_img(png, 'causal alignment heatmaps')}</figure>"
        )
    parts.append("</section>")
    return "".join(parts)


def _evidence(report: dict[str, Any], cols: list[str], fam_of: dict[str, str]) -> str:
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
            rows.append(
                f'<tr id="{layout.anchor(sid, c)}" class="{fam_of[c]}"><th>{e(c)}</th><td class="k-{kind}">{e(r["outcome"])}</td>'
                f"<td>{na}{e(r['detail'])}<details><summary>numbers</summary><pre>{numbers}</pre></details></td></tr>"
            )
        parts.append(
            f'<section id="{layout.anchor(sid)}"><h3>{e(sid)}: {e(sc["title"])}</h3><p>{e(sc["description"])} '
            f"{spec}.</p><p>Outcomes: {outcomes}.</p><p>Setup: <code>{e(json.dumps(sc['setup']))}</code>. "
            f"Reproduce: <code>{e(sc['reproduce'])}</code>.</p><table><tbody>{''.join(rows)}</tbody></table></section>"
        )
    parts.append("</section>")
    return "".join(parts)


def render(report: dict[str, Any], extra_sections: Sequence[tuple[str, str]] = ()) -> str:
    """audit.html for an ``attnconf.audit/1`` report, with the caller's `extra_sections` appended."""
    fams = layout.families(report)
    cols = [n for names in fams.values() for n in names]
    fam_of = _family_ids(fams)
    nav = ['<a href="#summary">summary</a>']
    nav += [f'<a href="#g-{e(g)}">{e(t)}</a>' for g, t in report["groups"].items()]
    nav += ['<a href="#adapters">adapters</a>', '<a href="#pictures">pictures</a>', '<a href="#evidence">evidence</a>']
    extras = "".join(
        f'<section class="extra" id="extra-{i}"><h2>{e(title)}</h2>{body}</section>'
        for i, (title, body) in enumerate(extra_sections)
    )
    nav += [f'<a href="#extra-{i}">{e(title)}</a>' for i, (title, _) in enumerate(extra_sections)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>attnconf behaviour audit</title><style>{STYLE}{family_css(fams)}</style></head><body>"
        f"{_header(report, fams)}{_filter(fams)}<nav>{''.join(nav)}</nav>{_tables(report, fams)}"
        f"{_adapters(report, fams)}{_pictures(report, cols, fam_of)}{extras}{_evidence(report, cols, fam_of)}</body></html>\n"
    )
