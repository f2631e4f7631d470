"""audit.md: a summary per framework family, then one section per family (its adapters as columns,
scenarios as rows, at most `MOST_COLUMNS` adapters a table), every cell linked to its evidence.

Fit for pasting into an issue: GitHub-flavoured Markdown, every text that came from an adapter or a
framework escaped (HTML and Markdown), cells that depart from the spec in bold, cells the adapter
declares unsupported as "n/a" with the capability it names in the link's title (a tooltip, e.g.
"returns_weights=False"; the whole declared reason is in the evidence). Families come from the adapters' ``framework`` trait in the
report, so the report stays readable however many adapters ran; prose is wrapped at `WIDTH` characters.
"""

from __future__ import annotations

import html
import re
import textwrap
from typing import Any

from attnconf.audit import layout
from attnconf.audit.scenarios import COMMON_OUTCOMES

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")
MOST_COLUMNS = 4  # adapters a table: a family with more is split into even tables
WIDTH = 180  # prose lines are wrapped here (table rows and headings cannot be)


def md(text: Any) -> str:
    """`text` shown literally in Markdown: HTML-escaped, Markdown specials backslashed, one line."""
    s = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(s, quote=False))


def _cell(result: dict[str, Any], kind: str, target: str) -> str:
    if layout.declared(result):  # the tooltip (a link title) has the declared reason and what was measured
        title = md(layout.declared_head(result).removeprefix("capabilities.")).replace('"', "&quot;")
        return f'[_n/a_](#{target} "{title}")'
    label = md(result["outcome"])
    if kind == "diff":
        label = f"**{label}**"
    elif kind == "na":
        label = f"_{label}_"
    elif kind == "broken":
        label = f"**{label}** (!)"
    return f"[{label}](#{target})"


def _wrap(text: str, indent: str = "") -> list[str]:
    """A paragraph as lines of at most `WIDTH`, each starting with `indent` (a longer word stays whole)."""
    return textwrap.wrap(
        text, WIDTH, initial_indent=indent, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def family_anchor(family: str, taken: set[str]) -> str:
    """``fam-<family>`` made of safe characters, unique among `taken` (which it joins)."""
    base = "fam-" + (re.sub(r"[^a-z0-9]+", "-", family.lower()).strip("-") or "x")
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _header(report: dict[str, Any], fams: dict[str, list[str]], anchors: dict[str, str]) -> list[str]:
    env = report["environment"]
    lines = ["# attnconf behaviour audit", ""]
    lines += _wrap(
        f"attnconf {md(report['attnconf'])}; Python {md(env['python'])} on {md(env['platform'])}; "
        f"device {md(env['device'])}. Every outcome below was observed in this run "
        f"({md(report['run']['started'])}, {report['run']['duration_s']:.1f} s)."
    )
    lines += [""] + _wrap(
        "**Bold**: departs from the spec's outcome (or, where the spec defines none, from the most common one); "
        "_italic_: not applicable (_n/a_: the adapter declares it cannot do this; the capability is in the "
        "cell's tooltip, the declared reason in its evidence); (!): the call crashed or broke the contract. Each cell "
        "links to its evidence; the full numbers are in audit.json. One section per framework family (the "
        "adapters' `framework`), each with its adapters as columns."
    )
    lines += [
        "",
        "## Summary",
        "",
        "| family | adapters | departures | crashed / invalid | n/a |",
        "|---|---|---|---|---|",
    ]
    for fam, names in fams.items():
        k = layout.family_counts(report, names)
        lines.append(f"| [{md(fam)}](#{anchors[fam]}) | {len(names)} | {k['diff']} | {k['broken']} | {k['na']} |")
    lines += ["", "## Adapters", "", "| family | column | adapter | versions | status |", "|---|---|---|---|---|"]
    listed = [n for names in fams.values() for n in names]
    listed += [n for n in report["adapters"] if n not in listed]  # skipped: no results, no family section
    for name in listed:
        a = report["adapters"][name]
        status = a["status"] if a["status"] == "ok" else f"{a['status']}: {a['reason']}"
        lines.append(
            f"| {md(a['framework'])} | {md(layout.short_label(name))} | {md(name)} | "
            f"{md(layout.versions_text(a['versions']))} | {md(status)} |"
        )
    return lines


def _family_tables(report: dict[str, Any], family: str, names: list[str], anchor: str) -> list[str]:
    k = layout.family_counts(report, names)
    lines = [
        "",
        f'## <a id="{anchor}"></a>{md(family)}',
        "",
        f"{len(names)} adapters; {k['diff']} departures, {k['broken']} crashed or invalid, {k['na']} n/a.",
    ]
    for cols in layout.chunks(names, MOST_COLUMNS):
        lines += [
            "",
            "| scenario | spec | " + " | ".join(md(layout.short_label(c)) for c in cols) + " |",
            "|---|---|" + "---|" * len(cols),
        ]
        for sid, sc in _by_group(report):
            ref = layout.reference_outcome(sc)
            cells = []
            for c in cols:
                r = sc["results"].get(c)
                cells.append("" if r is None else _cell(r, layout.result_kind(r, sc, ref), layout.anchor(sid, c)))
            spec = md(sc["spec"]) if sc["spec"] else "-"
            lines.append(f"| [{md(sid)}](#{layout.anchor(sid)}) | {spec} | " + " | ".join(cells) + " |")
    return lines


def _by_group(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The scenarios, group by group (the groups' order), then any in no listed group."""
    order = list(report["groups"])
    return sorted(
        report["scenarios"].items(),
        key=lambda kv: order.index(kv[1]["group"]) if kv[1]["group"] in order else len(order),
    )


def _evidence(report: dict[str, Any], cols: list[str]) -> list[str]:
    firsts: dict[str, str] = {}
    for sid, sc in _by_group(report):
        firsts.setdefault(sc["group"], sid)
    heads = {sid: report["groups"].get(gid, gid) for gid, sid in firsts.items()}
    lines = ["", "## Evidence", ""]
    lines += _wrap(
        "Adapters with the same outcome and measurement share an item; every number is in audit.json under "
        "`scenarios.<id>.results.<adapter>.evidence`. Outcomes any scenario can have: "
        + "; ".join(f"{md(k)}: {md(v)}" for k, v in COMMON_OUTCOMES.items())
        + "."
    )
    for sid, sc in _by_group(report):
        if sid in heads:
            lines += ["", f"## Evidence: {md(heads[sid])}"]
        lines += ["", f'### <a id="{layout.anchor(sid)}"></a>{md(sid)}: {md(sc["title"])}', ""]
        lines += _wrap(md(sc["description"])) + [""]
        spec = f"Spec: {md(sc['spec'])}" if sc["spec"] else "Spec: defines no outcome"
        if sc["spec_note"]:
            spec += f" ({md(sc['spec_note'])})"
        own = {k: v for k, v in sc["outcomes"].items() if COMMON_OUTCOMES.get(k) != v}
        lines += _wrap(spec + ". Outcomes: " + "; ".join(f"{md(k)}: {md(v)}" for k, v in own.items()) + ".")
        if sc["setup"]:
            lines += [""] + _wrap("Setup: " + md(", ".join(f"{k}={v}" for k, v in sc["setup"].items())) + ".")
        lines += ["", f"Reproduce: `{sc['reproduce']}`.", ""]
        same: dict[tuple[str, str, str], list[str]] = {}
        for c in cols:
            r = sc["results"].get(c)
            if r is not None:
                same.setdefault((r["outcome"], r["detail"], layout.declared(r) or ""), []).append(c)
        for (outcome, detail, why), names in same.items():
            # the cells' link targets first, a few a line (an anchor never breaks), then who and what
            targets = ["".join(f'<a id="{layout.anchor(sid, c)}"></a>' for c in run) for run in layout.chunks(names, 7)]
            who = ", ".join(f"**{md(c)}**" for c in names)
            na = f"_n/a_, declared unsupported: {md(why)}. Measured: " if why else ""
            lines += [f"- {targets[0]}"] + [f"  {x}" for x in targets[1:]]
            lines += _wrap(f"{who}: {na}{md(outcome)}. {md(detail)}", "  ")
        lines.append("")
    return lines


def render(report: dict[str, Any]) -> str:
    """audit.md for an ``attnconf.audit/1`` report."""
    fams = layout.families(report)
    taken: set[str] = set()
    anchors = {fam: family_anchor(fam, taken) for fam in fams}
    lines = _header(report, fams, anchors)
    for fam, names in fams.items():
        lines += _family_tables(report, fam, names, anchors[fam])
    cols = [n for names in fams.values() for n in names]
    return "\n".join(lines + _evidence(report, cols)) + "\n"
