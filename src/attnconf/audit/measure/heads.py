"""Heads and widths: grouped-query heads (which kv head each query head reads) and key/value widths."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from attnconf.audit import classify, probes
from attnconf.audit.measure.common import TOL, seed
from attnconf.audit.observe import Context, Result, Unsupported
from attnconf.conformance.cases import Config, make_inputs, make_weights
from attnconf.conformance.tolerances import derive, measure
from attnconf.contract import AttentionInputs, AttentionWeights
from attnconf.reference import multi_head_attention

Array = np.ndarray[Any, Any]


@functools.cache
def gqa_probe() -> probes.Probe:
    return probes.onehot("gqa", seed("gqa"), H=4, H_kv=2)


def gqa(ctx: Context) -> Result:
    if not ctx.capabilities.gqa:
        raise Unsupported("capabilities.gqa=False: the adapter takes no grouped-query heads")
    p = gqa_probe()
    eff = ctx.effective(p)
    H, H_kv = p.H, p.weights.num_kv_heads
    candidates = {
        "consecutive": p.reference(),  # the spec: query head h reads kv head h // (H // H_kv)
        "interleaved": p.reference(kv_heads=[h % H_kv for h in range(H)]),
    }
    outcome, dists = classify.nearest(eff, candidates, TOL["float32"])
    return Result(outcome or "other", f"H={H} query heads on H_kv={H_kv} kv heads: {outcome or 'other'}",
                  {"H": H, "H_kv": H_kv, "distances": dists})


@functools.cache
def kdim_probe() -> probes.Probe:
    cfg = Config(B=2, T=4, S=6, E_q=16, E_k=10, E_v=7, H=2, D_k=8)
    rng = np.random.default_rng(seed("kdim_vdim"))
    inputs = make_inputs(cfg, rng)
    weights = make_weights(cfg, rng)
    recipe = {"probe": "attnconf.conformance.cases", "seed": seed("kdim_vdim"), "B": 2, "T": 4, "S": 6,
              "E_q": 16, "E_k": 10, "E_v": 7, "H": 2, "D_k": 8, "dtype": "float32"}
    return probes.Probe("kdim_vdim", inputs, weights, "float32", 0.0, recipe)


def kdim_vdim(ctx: Context) -> Result:
    if not ctx.capabilities.kdim_vdim:
        raise Unsupported("capabilities.kdim_vdim=False: the adapter takes no separate key/value widths")
    p = kdim_probe()
    out = ctx.layer(p)
    x, w = p.cast()
    x64 = AttentionInputs(np.asarray(x.query, dtype=np.float64), np.asarray(x.key, dtype=np.float64),
                          np.asarray(x.value, dtype=np.float64))
    w64 = AttentionWeights(**{n: np.asarray(a, dtype=np.float64) for n, a in w.arrays().items()})
    exact = multi_head_attention(x64, w64, dtype="float64").output
    same = multi_head_attention(x, w, dtype=p.dtype).output
    tol = derive(exact, same, p.dtype)
    err = measure(out.output, exact)
    ok = err.nan_mismatch is None and err.max_abs <= tol.atol
    outcome = "supported" if ok else "differs"
    return Result(outcome, f"E_q=16, E_k=10, E_v=7: max error {err.max_abs:.2g} (tolerance {tol.atol:.2g})",
                  {"max_abs_error": err.max_abs, "atol": tol.atol, "index": list(err.index)})
