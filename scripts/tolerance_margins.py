"""Measure the margins of the tolerance policy: error / bound, old uniform rule against the per-element model.

For each adapter, dtype and case, the worst ratio ``max_i |got_i - exact_i| / bound_i`` of the output and of
the returned attention weights, under

* ``old``: the uniform rule (one bound for the tensor, ``8 x max(reference error, 2 u max(1, max|exact|))``,
  `tolerances.derive` without a model), and
* ``new``: the per-element rule (``2 x max(first-order model_i, reference error_i)``, `Checker.error_bounds`).

A ratio below 1 passes. Honest implementations should stay well below 1 under ``new``; faults should exceed it.
Besides the adapters, it measures NumPy pipelines written here: honest variants (the scale fused into the
query, the softmax in float64, no intermediate rounding, the sums accumulated in reverse order) and two faults
(a masked key that keeps 4.7% of the weight; P @ V accumulated in the storage precision).

Usage (from the repository root; each adapter runs in its own process, one at a time)::

    PYTHONPATH=$PWD/src:$PWD/tests python scripts/tolerance_margins.py            # every adapter below + pipelines
    PYTHONPATH=$PWD/src:$PWD/tests python scripts/tolerance_margins.py --only-pipelines
    PYTHONPATH=$PWD/src python scripts/tolerance_margins.py --adapter numpy --json /tmp/numpy.json

It prints a Markdown table (docs/tolerances.md quotes it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from attnconf.adapters.base import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.conformance.cases import CONFIGS, Config, make_inputs, make_weights, seed_for
from attnconf.conformance.check import Checker
from attnconf.conformance.tolerances import derive, measure
from attnconf.reference import causal_mask, round_to, softmax
from attnconf.reference.precision import in_compute

Array = np.ndarray[Any, Any]

ADAPTERS = [
    "numpy",
    "torch.nn.functional.scaled_dot_product_attention",
    "torch.nn.MultiheadAttention",
    "keras[jax].MultiHeadAttention[scores]",
    "jax.nn.dot_product_attention",
    "onnxruntime.Attention",
    "tf_keras.MultiHeadAttention",
    "flax.nnx.MultiHeadAttention[weights]",
]
DTYPES = ("float16", "bfloat16")
#: The agreement chapter's cases, plus long rows (the lengths vectorised kernels switch paths at).
EXTRA = {
    "rows64_padding": Config(T=4, S=64, mask="padding"),
    "rows128": Config(T=3, S=128),
    "rows128_causal_hd64": Config(T=8, S=128, E_q=128, H=2, D_k=64, causal=True),
}
LEAK = 0.047  # the weight a masked key keeps in the leak fault


def cases() -> dict[str, Config]:
    return {**CONFIGS, **EXTRA}


# -- NumPy pipelines ---------------------------------------------------------------------------


@dataclasses.dataclass
class Pipeline:
    """Multi-head attention in NumPy, step by step, in precision `p` with float32 compute (low precision)."""

    name: str
    fused_scale: bool = False  # round(q * scale) before the logits
    wide_softmax: bool = False  # softmax in float64, weights not rounded
    no_rounding: bool = False  # nothing rounded but the output
    reverse: bool = False  # sums over S accumulated in reverse order
    leak: float = 0.0  # weight kept by the masked keys of a row
    pv_in_storage: bool = False  # P @ V accumulated in precision p
    capabilities: Capabilities = Capabilities(
        gqa=True, kdim_vdim=True, value_dim=True, output_dim=True, custom_scale=True, head_dim=True
    )

    def r(self, x: Array, p: str) -> Array:
        return np.asarray(x, np.float32) if self.no_rounding else round_to(x, p)

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, p: str) -> AttentionOutputs:
        c = np.float32

        def proj(x: Array, w: Array, b: Array | None) -> Array:
            y = self.r(np.einsum("bne,ehd->bhnd", x.astype(c), w.astype(c)), p)
            return y if b is None else self.r(y.astype(c) + b.astype(c)[None, :, None, :], p)

        q = proj(inputs.query, weights.query_kernel, weights.query_bias)
        k = proj(inputs.key, weights.key_kernel, weights.key_bias)
        v = proj(inputs.value, weights.value_kernel, weights.value_bias)
        g = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        T, S = q.shape[2], k.shape[2]
        scale = inputs.scale if inputs.scale is not None else 1.0 / math.sqrt(q.shape[-1])
        if self.fused_scale:
            logits = self.r(np.einsum("bhtd,bhsd->bhts", self.r(q.astype(c) * c(scale), p).astype(c), k.astype(c)), p)
        else:
            logits = self.r(np.einsum("bhtd,bhsd->bhts", q.astype(c), k.astype(c)) * c(scale), p)
        vis = np.ones((1, 1, T, S), bool) if inputs.mask is None else inputs.mask[:, None]
        if inputs.causal:
            vis = vis & causal_mask(T, S)[None, None]
        vis = np.broadcast_to(vis, logits.shape)
        if self.wide_softmax:
            attn = softmax(logits.astype(np.float64), where=vis)
        else:
            attn = self.r(softmax(logits.astype(c), where=vis), p)
        if self.leak:
            hidden = ~vis & vis.any(axis=-1, keepdims=True)
            n = hidden.sum(axis=-1, keepdims=True)
            leak = np.where(n > 0, self.leak, 0.0)
            attn = self.r(attn * (1 - leak) + np.where(hidden, leak / np.maximum(n, 1), 0.0), p)
        order = slice(None, None, -1) if self.reverse else slice(None)
        if self.pv_in_storage:
            terms = round_to(attn[..., :, :, None].astype(c) * v[:, :, None, :, :].astype(c), p)  # (B,H,T,S,D)
            heads = np.zeros(terms.shape[:3] + terms.shape[4:], np.float32)
            for s in range(S):
                heads = round_to(heads + terms[:, :, :, s], p)
        else:
            heads = np.zeros(q.shape[:3] + v.shape[-1:], np.float64 if self.wide_softmax else c)
            for s in range(S)[order]:
                heads = heads + attn[..., s, None].astype(heads.dtype) * v[:, :, s, None, :].astype(heads.dtype)
            heads = self.r(heads, p)
        out = self.r(np.einsum("bhtd,hde->bte", in_compute(heads, p), in_compute(weights.output_kernel, p)), p)
        if weights.output_bias is not None:
            out = self.r(out.astype(c) + weights.output_bias.astype(c), p)
        return AttentionOutputs(output=round_to(out, p), weights=round_to(attn, p))


PIPELINES = [
    Pipeline("control (the reference's steps)"),
    Pipeline("honest: scale fused into q", fused_scale=True),
    Pipeline("honest: softmax in float64", wide_softmax=True),
    Pipeline("honest: no intermediate rounding", no_rounding=True),
    Pipeline("honest: sums over S reversed", reverse=True),
    Pipeline(f"fault: masked key keeps {LEAK:.1%}", leak=LEAK),
    Pipeline("fault: P @ V accumulated in storage precision", pv_in_storage=True),
]


# -- measuring ---------------------------------------------------------------------------------


def ratios(adapter: Any, dtype: str, names: list[str] | None = None) -> dict[str, dict[str, float]]:
    """{case: {"output old", "output new", "weights old", "weights new"}} for the supported cases."""
    out: dict[str, dict[str, float]] = {}
    for name, cfg in cases().items():
        if names and name not in names:
            continue
        if cfg.unsupported(adapter.capabilities):
            continue
        rng = np.random.default_rng(seed_for("tolerance_margins", name))
        inputs, weights = make_inputs(cfg, rng), make_weights(cfg, rng)
        check = Checker(adapter=adapter, dtype=dtype, nodeid=name, reproduce="")
        try:
            got = check.layer(inputs, weights)
        except Exception as err:  # a case the adapter refuses in this dtype: reported, not measured
            out[name] = {"error": f"{type(err).__name__}: {str(err)[:80]}"}  # type: ignore[dict-item]
            continue
        exact, same = check.references(inputs, weights)
        model = check.error_bounds(inputs, weights)
        row: dict[str, float] = {}
        fields = [("output", got.output, exact.output, same.output, model.output)]
        if got.weights is not None:
            fields.append(("weights", got.weights, exact.weights, same.weights, model.weights))
        for what, g, e, s, m in fields:
            row[f"{what} old"] = measure(g, e, derive(e, s, dtype)).ratio or 0.0
            row[f"{what} new"] = measure(g, e, derive(e, s, dtype, m)).ratio or 0.0
        out[name] = row
    return out


def worst(results: dict[str, dict[str, float]]) -> dict[str, tuple[float, str]]:
    """The largest ratio of each column over the cases, with the case it came from."""
    w: dict[str, tuple[float, str]] = {}
    for case, row in results.items():
        for col, val in row.items():
            if isinstance(val, float) and (col not in w or val > w[col][0]):
                w[col] = (val, case)
    return w


def fmt(cell: tuple[float, str] | None) -> str:
    return "-" if cell is None else f"{cell[0]:.3g} ({cell[1]})"


def run_adapter(name: str, dtypes: tuple[str, ...]) -> dict[str, Any]:
    from attnconf.adapters.registry import instantiate, load

    handle = load(name)
    if handle.missing:
        return {"missing": handle.missing}
    adapter = instantiate(handle.obj)
    return {d: ratios(adapter, d) for d in dtypes if d in adapter.capabilities.dtypes}


def in_subprocess(name: str, dtypes: tuple[str, ...]) -> dict[str, Any]:
    env = dict(os.environ)
    if name.startswith("keras["):
        env["KERAS_BACKEND"] = name[len("keras[") : name.index("]")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.json"
        proc = subprocess.run(
            [sys.executable, __file__, "--adapter", name, "--json", str(path), "--dtypes", *dtypes],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            return {"missing": f"exit {proc.returncode}: {proc.stderr[-400:]}"}
        return json.loads(path.read_text())


def table(results: dict[str, dict[str, Any]], dtypes: tuple[str, ...]) -> str:
    lines = [
        "| implementation | dtype | output old | output new | weights old | weights new |",
        "|---|---|---|---|---|---|",
    ]
    for name, by_dtype in results.items():
        if "missing" in by_dtype:
            lines.append(f"| {name} | - | not run: {by_dtype['missing'][:60]} | | | |")
            continue
        for d in dtypes:
            if d not in by_dtype:
                continue
            w = worst(by_dtype[d])
            lines.append(
                f"| {name} | {d} | {fmt(w.get('output old'))} | {fmt(w.get('output new'))} | "
                f"{fmt(w.get('weights old'))} | {fmt(w.get('weights new'))} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", help="measure this adapter only (in this process)")
    ap.add_argument("--json", type=Path, help="write the per-case ratios here")
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES))
    ap.add_argument("--only-pipelines", action="store_true", help="measure the NumPy pipelines only")
    args = ap.parse_args()
    dtypes = tuple(args.dtypes)
    if args.adapter:
        res = run_adapter(args.adapter, dtypes)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
        print(table({args.adapter: res}, dtypes))
        return
    results: dict[str, dict[str, Any]] = {}
    for pipe in PIPELINES:
        results[pipe.name] = {d: ratios(pipe, d) for d in dtypes}
    if not args.only_pipelines:
        for name in ADAPTERS:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            results[name] = in_subprocess(name, dtypes)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(table(results, dtypes))


if __name__ == "__main__":
    main()
