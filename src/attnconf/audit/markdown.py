"""audit.md: one table per scenario group (adapters as columns), every cell linked to its evidence.

Fit for pasting into an issue: GitHub-flavoured Markdown, every text that came from an adapter or a
framework escaped (HTML and Markdown), cells that depart from the spec in bold, cells the adapter
declares unsupported as "n/a" with the declared reason in the link's title (a tooltip).
"""

from __future__ import annotations

import html
import re
from typing import Any

from attnconf.audit import layout
from attnconf.audit.scenarios import COMMON_OUTCOMES

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def md(text: Any) -> str:
    """`text` shown literally in Markdown: HTML-escaped, Markdown specials backslashed, one line."""
    s = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(s, quote=False))


def _cell(result: dict[str, Any], kind: str, target: str) -> str:
    if layout.declared(result):  # the tooltip (a link title) has the declared reason and what was measured
        title = md(layout.na_title(result)).replace('"', "&quot;")
        return f'[_n/a_](#{target} "{title}")'
    label = md(result["outcome"])
    if kind == "diff":
        label = f"**{label}**"
    elif kind == "na":
        label = f"_{label}_"
    elif kind == "broken":
        label = f"**{label}** (!)"
    return f"[{label}](#{target})"


def _header(report: dict[str, Any]) -> list[str]:
    env = report["environment"]
    lines = [
        "# attnconf behaviour audit",
        "",
        f"attnconf {md(report['attnconf'])}; Python {md(env['python'])} on {md(env['platform'])}; "
        f"device {md(env['device'])}. Every outcome below was observed in this run "
        f"({md(report['run']['started'])}, {report['run']['duration_s']:.1f} s).",
        "",
        "**Bold**: departs from the spec's outcome (or, where the spec defines none, from the most common one); "
        "_italic_: not applicable (_n/a_: the adapter declares it cannot do this; the declared reason is in the "
        "cell's tooltip and its evidence); (!): the call crashed or broke the contract. Each cell links to its evidence; "
        "the full numbers are in audit.json.",
        "",
        "## Adapters",
        "",
        "| column | adapter | framework | versions | status |",
        "|---|---|---|---|---|",
    ]
    for name, a in report["adapters"].items():
        status = a["status"] if a["status"] == "ok" else f"{a['status']}: {a['reason']}"
        lines.append(f"| {md(layout.short_label(name))} | {md(name)} | {md(a['framework'])} | "
                     f"{md(layout.versions_text(a['versions']))} | {md(status)} |")
    return lines


def _group_tables(report: dict[str, Any], cols: list[str]) -> list[str]:
    lines: list[str] = []
    for gid, title in report["groups"].items():
        ids = [sid for sid, sc in report["scenarios"].items() if sc["group"] == gid]
        if not ids:
            continue
        lines += ["", f"## {md(title)}", "",
                  "| scenario | spec | " + " | ".join(md(layout.short_label(c)) for c in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for sid in ids:
            sc = report["scenarios"][sid]
            ref = layout.reference_outcome(sc)
            cells = []
            for c in cols:
                r = sc["results"].get(c)
                if r is None:
                    cells.append("")
                    continue
                cells.append(_cell(r, layout.result_kind(r, sc, ref), layout.anchor(sid, c)))
            spec = md(sc["spec"]) if sc["spec"] else "-"
            lines.append(f"| [{md(sid)}](#{layout.anchor(sid)}) | {spec} | " + " | ".join(cells) + " |")
    return lines


def _evidence(report: dict[str, Any], cols: list[str]) -> list[str]:
    lines = ["", "## Evidence", "",
             "Adapters with the same outcome and measurement share a line; every number is in audit.json under "
             "`scenarios.<id>.results.<adapter>.evidence`. Outcomes any scenario can have: "
             + "; ".join(f"{md(k)}: {md(v)}" for k, v in COMMON_OUTCOMES.items()) + ".", ""]
    for sid, sc in report["scenarios"].items():
        lines += [f"### <a id=\"{layout.anchor(sid)}\"></a>{md(sid)}: {md(sc['title'])}", "", md(sc["description"]), ""]
        spec = f"Spec: {md(sc['spec'])}" if sc["spec"] else "Spec: defines no outcome"
        if sc["spec_note"]:
            spec += f" ({md(sc['spec_note'])})"
        own = {k: v for k, v in sc["outcomes"].items() if COMMON_OUTCOMES.get(k) != v}
        lines.append(spec + ". Outcomes: " + "; ".join(f"{md(k)}: {md(v)}" for k, v in own.items()) + ".")
        if sc["setup"]:
            lines += ["", "Setup: " + md(", ".join(f"{k}={v}" for k, v in sc["setup"].items())) + "."]
        lines += ["", f"Reproduce: `{sc['reproduce']}`.", ""]
        same: dict[tuple[str, str, str], list[str]] = {}
        for c in cols:
            r = sc["results"].get(c)
            if r is not None:
                same.setdefault((r["outcome"], r["detail"], layout.declared(r) or ""), []).append(c)
        for (outcome, detail, why), names in same.items():
            anchors = "".join(f'<a id="{layout.anchor(sid, c)}"></a>' for c in names)
            who = ", ".join(f"**{md(c)}**" for c in names)
            na = f"_n/a_, declared unsupported: {md(why)}. Measured: " if why else ""
            lines.append(f"- {anchors}{who}: {na}{md(outcome)}. {md(detail)}")
        lines.append("")
    return lines


def render(report: dict[str, Any]) -> str:
    """audit.md for an ``attnconf.audit/1`` report."""
    cols = layout.columns(report)
    return "\n".join(_header(report) + _group_tables(report, cols) + _evidence(report, cols)) + "\n"
