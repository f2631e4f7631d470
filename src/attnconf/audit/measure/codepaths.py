"""Code paths of one layer: adapters whose names share a stem (``X`` and ``X[fast]``, ``X[scores]``) are
compared on every probe both ran, from the effective weights captured during the per-adapter pass.

``identical``: bit for bit on every common probe (NaN where the sibling has NaN); ``close``: within the
classification tolerance of the probe's precision; ``differs``: some probe differs beyond it (or one
path raised where the other did not); ``unsupported``: no other code path of the layer ran.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from attnconf.audit import classify
from attnconf.audit.measure.common import TOL
from attnconf.audit.observe import Result

Array = np.ndarray[Any, Any]
Captures = dict[str, tuple[str, Any]]
_SUFFIX = re.compile(r"^(.*[^\s\[])\[[^\[\]]+\]$")
_RANK = {"identical": 0, "close": 1, "differs": 2}


def stem(name: str) -> str:
    """The layer a code path belongs to: the name without a trailing ``[variant]``."""
    m = _SUFFIX.match(name)
    return m.group(1) if m else name


def compare(a: Captures, b: Captures) -> dict[str, dict[str, Any]]:
    """Per common probe: the verdict and the max abs difference (None where one path raised)."""
    out: dict[str, dict[str, Any]] = {}
    for probe in sorted(set(a) & set(b)):
        (dtype, x), (_, y) = a[probe], b[probe]
        if isinstance(x, str) or isinstance(y, str):
            same = isinstance(x, str) and isinstance(y, str) and x == y
            out[probe] = {"verdict": "identical" if same else "differs", "max_abs_difference": None,
                          "note": f"{x if isinstance(x, str) else 'ran'} vs {y if isinstance(y, str) else 'ran'}"}
            continue
        d = classify.distance(x, y)
        if np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True):
            verdict = "identical"
        else:
            verdict = "close" if d <= TOL[dtype] else "differs"
        out[probe] = {"verdict": verdict, "max_abs_difference": d}
    return out


def code_paths(captures: dict[str, Captures]) -> dict[str, Result]:
    """A `Result` per adapter in `captures` (in its order)."""
    groups: dict[str, list[str]] = {}
    for name in captures:
        groups.setdefault(stem(name), []).append(name)
    results: dict[str, Result] = {}
    for st, members in groups.items():
        if len(members) == 1:
            results[members[0]] = Result("unsupported", f"no other code path of {st} ran in this audit",
                                         {"reason": f"no other adapter named {st}[...] ran", "stem": st})
            continue
        base = st if st in members else members[0]
        pairs = {m: compare(captures[m], captures[base]) for m in members if m != base}
        pairs_for_base = {m: compare(captures[base], captures[m]) for m in members if m != base}
        for name in members:
            comparisons = pairs_for_base if name == base else {base: pairs[name]}
            verdicts = [c["verdict"] for probes in comparisons.values() for c in probes.values()]
            if not verdicts:
                results[name] = Result("unsupported", "no probe ran on both code paths", {"stem": st})
                continue
            outcome = max(verdicts, key=lambda v: _RANK[v])
            differing = sorted({p for probes in comparisons.values() for p, c in probes.items()
                                if c["verdict"] == "differs"})
            others = ", ".join(comparisons)
            detail = f"against {others}: {outcome} on every probe both ran" if not differing else \
                f"against {others}: differs on {', '.join(differing)} ({len(verdicts)} probe comparisons)"
            results[name] = Result(outcome, detail, {"stem": st, "compared_with": comparisons})
    return {name: results[name] for name in captures}
