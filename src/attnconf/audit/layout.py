"""What the Markdown and HTML writers share: columns, short labels, anchors, cell highlighting.

A cell is highlighted when its outcome departs from the spec's outcome, or, where the spec defines
none, from the most common outcome among the adapters that ran the scenario. A cell the adapter
declares unsupported (a dtype left out of its capabilities, a capability flag False: the result's
``evidence["declared_unsupported"]``) is not applicable, whatever was measured there: it is shown
as "n/a" with the declared reason, never as a departure.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

from attnconf.audit.classify import majority

NOT_APPLICABLE = ("unsupported", "not_run")
BROKEN = ("crashed", "invalid", "audit_error")

_SHORT = (
    ("onnxruntime.", "ort "),
    ("torch.nn.functional.scaled_dot_product_attention", "torch sdpa"),
    ("flax.linen.MultiHeadDotProductAttention", "flax.linen MHDPA"),
    ("jax.nn.dot_product_attention", "jax dpa"),
    (".ops.dot_product_attention", " ops.dpa"),
    ("keras[tensorflow]", "keras[tf]"),
    ("torch.nn.", "torch "),
    (".MultiheadAttention", " MHA"),
    (".MultiHeadAttention", " MHA"),
    ("MultiheadAttention", "MHA"),
    ("MultiHeadAttention", "MHA"),
)


def short_label(name: str) -> str:
    """A short column label for an adapter name (the full name is in the adapters table)."""
    for old, new in _SHORT:
        name = name.replace(old, new)
    return name


def columns(report: dict[str, Any]) -> list[str]:
    """Adapters that have results (not skipped), in report order."""
    return [n for n, a in report["adapters"].items() if a["status"] != "skipped"]


def anchor(scenario_id: str, adapter: str | None = None) -> str:
    """A stable HTML id made of safe characters only: ``s-<scenario>``, or ``e-<hash>`` for a cell."""
    if adapter is None:
        return "s-" + re.sub(r"[^a-z0-9]+", "-", scenario_id.lower()).strip("-")
    return f"e-{zlib.crc32((scenario_id + chr(0) + adapter).encode()):08x}"


def declared(result: dict[str, Any]) -> str | None:
    """Why the adapter declares it cannot do what the cell's scenario needs, or None."""
    reason = (result.get("evidence") or {}).get("declared_unsupported")
    return str(reason) if reason else None


def reference_outcome(scenario: dict[str, Any]) -> str | None:
    """The outcome cells are compared with: the spec's, else the most common measured one (None on a tie)."""
    if scenario.get("spec"):
        return str(scenario["spec"])
    measured = [
        r["outcome"]
        for r in scenario["results"].values()
        if r["outcome"] not in NOT_APPLICABLE + BROKEN and not declared(r)
    ]
    return majority(measured)


def result_kind(result: dict[str, Any], scenario: dict[str, Any], reference: str | None) -> str:
    """`cell_kind` of a result: ``na`` where the adapter declares the scenario unsupported."""
    return "na" if declared(result) else cell_kind(result["outcome"], scenario, reference)


def na_title(result: dict[str, Any]) -> str:
    """The tooltip of a not-applicable cell: the declared reason, then what was measured."""
    reason = declared(result) or str(result.get("detail", ""))
    return f"not applicable, declared: {reason}. Measured: {result['outcome']}: {result.get('detail', '')}"


def cell_kind(outcome: str, scenario: dict[str, Any], reference: str | None) -> str:
    """``na`` (not applicable), ``broken``, ``spec`` (the spec's outcome), ``same`` (the common outcome,
    or any where the spec defines none and no outcome is the most common), or ``diff`` (highlighted)."""
    if outcome in NOT_APPLICABLE:
        return "na"
    if outcome in BROKEN:
        return "broken"
    if scenario.get("spec"):
        return "spec" if outcome == reference else "diff"
    return "same" if reference is None or outcome == reference else "diff"


def compact_evidence(evidence: dict[str, Any], limit: int = 200) -> str:
    """The scalar numbers of an evidence dict on one line (arrays and long values left out)."""
    parts: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) <= 40):
            parts.append(f"{prefix}={value}")
        elif isinstance(value, list) and len(value) <= 4 and all(isinstance(x, (int, float, str)) for x in value):
            parts.append(f"{prefix}={json.dumps(value)}")

    walk("", evidence)
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def versions_text(versions: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items()) or "-"


def families(report: dict[str, Any]) -> dict[str, list[str]]:
    """The adapters that have results, by framework family (each adapter's ``framework`` trait), in the
    order the families first appear in the report: ``{"torch": ["torch.nn.MultiheadAttention", ...]}``."""
    out: dict[str, list[str]] = {}
    for name in columns(report):
        out.setdefault(str(report["adapters"][name]["framework"]), []).append(name)
    return out


def family_counts(report: dict[str, Any], names: list[str]) -> dict[str, int]:
    """How the cells of the adapters `names` are judged, over every scenario: ``{"diff": 3, "broken": 1,
    "na": 5, "spec": .., "same": ..}`` (the `result_kind` of each cell; kinds never seen are 0)."""
    counts = dict.fromkeys(("diff", "broken", "na", "spec", "same"), 0)
    for sc in report["scenarios"].values():
        ref = reference_outcome(sc)
        for name in names:
            r = sc["results"].get(name)
            if r is not None:
                counts[result_kind(r, sc, ref)] += 1
    return counts


def declared_head(result: dict[str, Any]) -> str:
    """The declared reason of a not-applicable cell up to its first ": " (the capability it names), for a
    short tooltip; the whole reason is in the evidence."""
    reason = declared(result) or ""
    return reason.split(": ", 1)[0]


def chunks(names: list[str], most: int) -> list[list[str]]:
    """`names` split into the fewest runs of at most `most`, as even as possible (9 by 5: 5 and 4)."""
    if not names:
        return []
    n = -(-len(names) // most)
    size, extra = divmod(len(names), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(names[start:end])
        start = end
    return out
