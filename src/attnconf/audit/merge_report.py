"""Writing the cross-version report: report.json, report.md and report.html (each atomically).

Per scenario, one row per adapter with its outcome history across versions; the entry where the
outcome changed is marked (bold, "changed at"), conflicts between runs of the same versions too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from attnconf.atomicio import write_text_atomic
from attnconf.audit import schema
from attnconf.audit.html import CSP, STYLE, e
from attnconf.audit.markdown import md

FILES = ("report.json", "report.md", "report.html")


def _runs(history: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Consecutive entries with the same outcome grouped: [(outcome, entries), ...]."""
    spans: list[tuple[str, list[dict[str, Any]]]] = []
    for entry in history:
        if spans and spans[-1][0] == entry["outcome"] and not entry["changed"]:
            spans[-1][1].append(entry)
        else:
            spans.append((entry["outcome"], [entry]))
    return spans


def _where(entries: list[dict[str, Any]]) -> str:
    versions = list(dict.fromkeys(x["version_label"] for x in entries))
    return "; ".join(versions)


def render_markdown(merged: dict[str, Any]) -> str:
    lines = ["# attnconf cross-version report", "",
             f"Merged by attnconf {md(merged['attnconf'])} from {len(merged['inputs'])} audit results. "
             "**Bold**: the outcome changed at this version; (conflict): runs of the same versions disagree.", "",
             "## Inputs", "", "| label | file | python | platform | started |", "|---|---|---|---|---|"]
    for i in merged["inputs"]:
        env = i["environment"]
        lines.append(f"| {md(i['label'])} | {md(i['path'])} | {md(env.get('python', ''))} | "
                     f"{md(env.get('platform', ''))} | {md(i['started'])} |")
    lines += ["", "## Changes", ""]
    if merged["changes"]:
        lines += ["| scenario | adapter | before | after | changed between |", "|---|---|---|---|---|"]
        for c in merged["changes"]:
            lines.append(f"| {md(c['scenario'])} | {md(c['adapter'])} | {md(c['before'])} | **{md(c['after'])}** | "
                         f"{md(c['from_versions'])} → {md(c['to_versions'])} |")
    else:
        lines.append("No outcome changed between the merged versions.")
    for gid, title in merged["groups"].items():
        ids = [s for s, sc in merged["scenarios"].items() if sc["group"] == gid]
        if not ids:
            continue
        lines += ["", f"## {md(title)}"]
        for sid in ids:
            sc = merged["scenarios"][sid]
            spec = f" (spec: {md(sc['spec'])})" if sc["spec"] else ""
            lines += ["", f"### {md(sid)}: {md(sc['title'])}{spec}", "", "| adapter | outcome by version |", "|---|---|"]
            for name, a in sc["adapters"].items():
                parts = []
                for outcome, entries in _runs(a["history"]):
                    text = f"{md(outcome)} ({md(_where(entries))})"
                    if entries[0]["changed"]:
                        text = f"**{md(outcome)}**, changed at {md(entries[0]['version_label'])} ({md(_where(entries))})"
                    if any(x["conflict"] for x in entries):
                        text += " (conflict)"
                    parts.append(text)
                lines.append(f"| {md(name)} | {' → '.join(parts)} |")
    return "\n".join(lines) + "\n"


def render_html(merged: dict[str, Any]) -> str:
    inputs = "".join(f"<tr><td>{e(i['label'])}</td><td>{e(i['path'])}</td><td>{e(i['environment'].get('python', ''))}"
                     f"</td><td>{e(i['environment'].get('platform', ''))}</td><td>{e(i['started'])}</td></tr>"
                     for i in merged["inputs"])
    if merged["changes"]:
        changes = "<table><thead><tr><th>scenario</th><th>adapter</th><th>before</th><th>after</th><th>changed between</th>" \
                  "</tr></thead><tbody>" + "".join(
                      f"<tr><td>{e(c['scenario'])}</td><td>{e(c['adapter'])}</td><td>{e(c['before'])}</td>"
                      f"<td class=\"k-diff\">{e(c['after'])}</td><td>{e(c['from_versions'])} &rarr; "
                      f"{e(c['to_versions'])}</td></tr>" for c in merged["changes"]) + "</tbody></table>"
    else:
        changes = "<p>No outcome changed between the merged versions.</p>"
    body = []
    for gid, title in merged["groups"].items():
        ids = [s for s, sc in merged["scenarios"].items() if sc["group"] == gid]
        if not ids:
            continue
        body.append(f"<h2>{e(title)}</h2>")
        for sid in ids:
            sc = merged["scenarios"][sid]
            rows = []
            for name, a in sc["adapters"].items():
                cells = []
                for x in a["history"]:
                    cls = "k-diff" if x["changed"] else ("k-broken" if x["conflict"] else "k-same")
                    mark = " (changed)" if x["changed"] else (" (conflict)" if x["conflict"] else "")
                    cells.append(f'<td class="{cls}" title="{e(x["detail"])}">{e(x["outcome"])}{mark}<br>'
                                 f"<small>{e(x['version_label'])}<br>{e(x['label'])}</small></td>")
                rows.append(f"<tr><th>{e(name)}</th>{''.join(cells)}</tr>")
            spec = f" (spec: {e(sc['spec'])})" if sc["spec"] else ""
            body.append(f"<h3>{e(sid)}: {e(sc['title'])}{spec}</h3><div class=\"wide\"><table><tbody>{''.join(rows)}"
                        "</tbody></table></div>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><title>attnconf cross-version report</title>'
        f"<style>{STYLE}</style></head><body><h1>attnconf cross-version report</h1>"
        f"<p>Merged by attnconf {e(merged['attnconf'])}. Ordered by framework version; changed outcomes highlighted.</p>"
        f"<h2>Inputs</h2><table><thead><tr><th>label</th><th>file</th><th>python</th><th>platform</th><th>started</th>"
        f"</tr></thead><tbody>{inputs}</tbody></table><h2>Changes</h2>{changes}{''.join(body)}</body></html>\n"
    )


def write(merged: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Validate `merged` (``attnconf.report/1``) and write report.json/.md/.html into `out_dir`."""
    schema.validate(merged, schema.REPORT_SCHEMA)
    texts = {"report.json": schema.dumps(merged), "report.md": render_markdown(merged),
             "report.html": render_html(merged)}
    return [write_text_atomic(Path(out_dir) / name, texts[name]) for name in FILES]
