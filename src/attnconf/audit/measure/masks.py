"""Masks: the fully masked row, causal alignment, and the native API's boolean, additive and rank-3 masks.

Each function takes a `Context` and returns a `Result`; the weights are the effective weights of the
one-hot probe (`attnconf.audit.probes`), so adapters that return no weights are measured the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from attnconf.audit import classify, probes
from attnconf.audit.measure.common import (
    MASKED_ROW,
    ROW_TOL,
    TOL,
    base,
    causal_probes,
    masked_row,
    summary,
    two_sided_mask,
)
from attnconf.audit.observe import AdapterRaised, Context, Result, Unsupported
from attnconf.reference.masks import causal_mask

Array = np.ndarray[Any, Any]


def fully_masked_row(dtype: str) -> Callable[[Context], Result]:
    def measure(ctx: Context) -> Result:
        ctx.require_dtype(dtype)
        p = masked_row(dtype)
        out = ctx.layer(p)
        eff = ctx.effective(p, out)
        b, t = MASKED_ROW
        row = eff[b, :, t, :]
        unmasked = p.reference(mask=None)[b, :, t, :]
        outcome, dists = classify.fully_masked_row(row, unmasked, ROW_TOL[dtype])
        others = np.ones(eff.shape, dtype=bool)
        others[b, :, t, :] = False
        other_err = classify.distance(eff[others], p.reference()[others])
        output_row = np.asarray(out.output, dtype=np.float64)[b, t]
        evidence: dict[str, Any] = {
            "row": {"batch": b, "query": t}, "effective_weights_row": row, "output_row": output_row,
            "output_bias": p.output_bias, "distances": dists, "other_rows_max_abs_error": other_err,
            "heatmap": eff[b, 0],
        }
        if out.weights is not None and np.shape(out.weights) == eff.shape:
            evidence["returned_weights_row"] = np.asarray(out.weights)[b, :, t, :]
        where = "output row equals the output bias" if outcome == "zeros" else f"weights {summary(row)}"
        others_note = "" if other_err <= ROW_TOL[dtype] else f"; other rows differ from the reference by {other_err:.2g}"
        return Result(outcome, f"masked row (batch {b}, query {t}): {where}{others_note}", evidence)
    return measure


ALIGNMENTS = ("top_left", "bottom_right")


def _causal_candidates(p: probes.Probe) -> dict[str, tuple[Array, Array]]:
    """Candidate weights `(B, H, T, S)` on a causal probe, each with the `(T,)` rows it defines: the two
    alignments (a row that sees no key under one, as the first T - S rows under bottom-right when
    T > S, is left out of its comparison: the spec gives it no output), and "ignored" (no causal mask)."""
    cands = {}
    for a in ALIGNMENTS:
        visible = causal_mask(p.T, p.S, a)  # type: ignore[arg-type]
        cands[a] = (p.reference(alignment=a), np.asarray(visible.any(axis=-1)))
    cands["ignored"] = (p.reference(causal=False), np.ones(p.T, dtype=bool))
    return cands


def causal_alignment(ctx: Context) -> Result:
    """Where the causal diagonal sits, measured on every probe of `common.causal_probes`.

    Each probe gives the set of candidates within tolerance (at T = 1 bottom-right and "ignored" are the
    same weights, so that probe matches both). The outcome is the candidate every probe matched;
    ``inconsistent`` where each probe matched some alignment but no one alignment fits them all (the
    alignment depends on the shape or on the mask); ``other`` where some probe matched none. A probe
    the adapter refuses (it raised) or cannot take (a mask with the causal flag) is recorded and left out.
    """
    caps = ctx.capabilities
    if not caps.causal:
        raise Unsupported("capabilities.causal=False: the adapter takes no causal flag")
    per_probe: dict[str, Any] = {}
    matched: dict[str, set[str]] = {}
    raised: list[AdapterRaised] = []
    heatmap = None
    for label, p in causal_probes().items():
        if p.inputs.mask is not None and not caps.causal_with_mask:
            per_probe[label] = {"skipped": "capabilities.causal_with_mask=False"}
            continue
        try:
            eff = ctx.effective(p)
        except AdapterRaised as err:
            raised.append(err)
            per_probe[label] = {"raised": err.as_dict()}
            continue
        if heatmap is None:
            heatmap = eff[0, 0]
        dists = {name: classify.distance(eff[:, :, rows], ref[:, :, rows])
                 for name, (ref, rows) in _causal_candidates(p).items()}
        hits = {name for name, d in dists.items() if d <= TOL["float32"]}
        matched[label] = hits
        per_probe[label] = {"T": p.T, "S": p.S, "masked": p.inputs.mask is not None, "matches": sorted(hits),
                            "distances": dists}
    if not matched:
        if raised:
            raise raised[0]
        raise Unsupported("no causal probe could run (see the capabilities)")
    common_hits = set.intersection(*matched.values())
    if any(not hits for hits in matched.values()):
        outcome = "other"
    elif len(common_hits) == 1:
        outcome = next(iter(common_hits))
    elif not common_hits and all(hits & set(ALIGNMENTS) for hits in matched.values()):
        outcome = "inconsistent"
    else:
        outcome = "other"
    declared = caps.causal_alignment
    evidence = {"probes": per_probe, "declared": declared, "heatmap": heatmap}
    seen = "; ".join(f"{label}: {' or '.join(sorted(hits)) or 'none'}" for label, hits in matched.items())
    left_out = [label for label in per_probe if label not in matched]
    note = "" if outcome == declared else f" (the adapter declares {declared})"
    tail = f"; left out: {', '.join(left_out)}" if left_out else ""
    return Result(outcome, f"{outcome}{note}: causal at {seen}{tail}", evidence)


def mask_polarity(ctx: Context) -> Result:
    p = base()
    mask = two_sided_mask("polarity", (p.B, p.T, p.S))
    eff = p.effective(ctx.native(p, mask).output)
    candidates = {
        "true_attends": p.reference(mask=mask),
        "true_masks": p.reference(mask=~mask),
        "ignored": p.reference(mask=None),
    }
    outcome, dists = classify.nearest(eff, candidates, TOL["float32"])
    outcome = outcome or "other"
    return Result(outcome, f"boolean mask handed to the native API: {outcome.replace('_', ' ')}",
                  {"distances": dists, "mask_b0": mask[0]})


def additive_mask(ctx: Context) -> Result:
    p = base()
    mask = two_sided_mask("additive", (p.B, p.T, p.S))
    neg_inf = np.where(mask, 0.0, -np.inf).astype(np.float32)
    eff1 = p.effective(ctx.native(p, neg_inf).output)
    first, d1 = classify.nearest(eff1, {
        "added": p.reference(mask=mask), "inverted": p.reference(mask=~mask), "ignored": p.reference(mask=None),
    }, TOL["float32"])
    # Finite values: added to the logits, or read as a boolean (non-zero = masked or = may attend)?
    rng = np.random.default_rng(7)
    finite = np.where(two_sided_mask("additive.finite", mask.shape), 0.0,
                      rng.choice([-2.0, -1.0, 0.5, 1.0], size=mask.shape)).astype(np.float32)
    eff2 = p.effective(ctx.native(p, finite).output)
    second, d2 = classify.nearest(eff2, {
        "added": p.reference(mask=None, bias=finite), "nonzero_masked": p.reference(mask=finite == 0),
        "nonzero_attends": p.reference(mask=finite != 0), "ignored": p.reference(mask=None),
    }, TOL["float32"])
    if first == "added" and second == "added":
        outcome = "added"
    elif first == "inverted":
        outcome = "inverted"
    elif first == "added" and second == "nonzero_masked":
        outcome = "boolean"
    elif first == "ignored" and second == "ignored":
        outcome = "ignored"
    else:
        outcome = "other"
    evidence = {"neg_inf_mask": {"matches": first, "distances": d1},
                "finite_mask": {"matches": second, "distances": d2}}
    return Result(outcome, f"float mask {{0, -inf}}: {first or 'no candidate'}; finite float mask: "
                  f"{second or 'no candidate'}", evidence)


def mask_broadcast(ctx: Context) -> Result:
    p = base()
    if p.B != p.H:
        raise AssertionError("the broadcast probe needs B == H")
    mask = two_sided_mask("broadcast", (p.B, p.T, p.S))
    eff = p.effective(ctx.native(p, mask).output)
    refs = {}
    for i in range(p.B):
        for label, m in ((f"mask[{i}]", mask[i]), (f"~mask[{i}]", ~mask[i])):
            refs[label] = p.reference(mask=np.broadcast_to(m, mask.shape))
    refs["none"] = p.reference(mask=None)
    cells = {}
    for b in range(p.B):
        for h in range(p.H):
            hit, _ = classify.nearest(eff[b, h], {k: r[b, h] for k, r in refs.items()}, TOL["float32"])
            cells[f"batch {b}, head {h}"] = hit
    used = [(b, h, cells[f"batch {b}, head {h}"]) for b in range(p.B) for h in range(p.H)]
    index = [None if c in (None, "none") else int(c.split("[")[1][0]) for _, _, c in used]
    if all(c == "none" for _, _, c in used):
        outcome = "ignored"
    elif all(i == b for (b, _, _), i in zip(used, index)):
        outcome = "per_batch"
    elif all(i == h for (_, h, _), i in zip(used, index)):
        outcome = "batch_as_heads"
    else:
        outcome = "other"
    return Result(outcome, f"(B, T, S) mask with B = H = {p.B} handed to the native API: {outcome.replace('_', ' ')}",
                  {"cells": cells})
