"""Checks of the native-convention adapters against the spec, with derived tolerances.

Each check runs one adapter's `convention_attention`, `decode_step` or `rotary_embedding` on a few
fixed cases and returns the worst error in units of the tolerance `attnconf.conformance.tolerances.derive`
gives (the reference in the adapter's declared accuracy against the reference in extended precision,
the uniform rule). Rows of a query without a visible key are not compared (the spec's policy).
Run as a script (``python tests/native_conventions.py [--dtypes=float32,...] module:Class ...``) it prints one JSON line per
adapter: the framework families each run in their own process (tests/test_native_conventions.py).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from attnconf.adapters import registry
from attnconf.conformance.check import exact_precision
from attnconf.conformance.tolerances import derive, measure
from attnconf.reference import (
    decode_step,
    lengths_to_mask,
    rotary_embedding,
    round_to,
    scaled_dot_product_attention,
)
from attnconf.reference.alibi import alibi_slopes
from attnconf.reference.precision import storage_dtype

Array = np.ndarray[Any, Any]

#: (name, B, H, H_kv, T, S, D, causal, window, cap, alibi, lengths)
CONVENTION_CASES = [
    ("window-left", 2, 4, 2, 7, 7, 8, False, (2, 0), None, False, False),
    ("window-both", 1, 2, 2, 6, 9, 8, False, (1, 3), None, False, False),
    ("window-causal-wide", 1, 2, 1, 5, 5, 8, True, (10, None), None, False, False),
    ("window-none-left", 1, 2, 2, 5, 8, 8, False, (None, 1), None, False, False),
    ("softcap", 2, 2, 2, 5, 6, 8, False, None, 0.5, False, False),
    ("softcap-causal", 1, 4, 2, 6, 6, 8, True, None, 2.0, False, False),
    ("alibi-6", 1, 6, 6, 5, 7, 8, False, None, None, True, False),
    ("alibi-causal-12", 1, 12, 4, 6, 6, 8, True, None, None, True, False),
    ("lengths", 3, 2, 2, 5, 6, 8, False, None, None, False, True),
    ("all", 2, 6, 3, 6, 6, 8, True, (3, 0), 1.5, True, True),
]


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(abs(hash(repr(key))) % 2**32)


def _ratio(got: Array, exact: Array, same: Array, dtype: str, rows: Array | None = None) -> float:
    """Worst `|got - exact|` in units of `derive(exact, same, dtype)` over the rows kept."""
    if rows is not None:
        got, exact, same = got[rows], exact[rows], same[rows]
    errs = measure(got, exact, derive(exact, same, dtype))
    if errs.nan_mismatch is not None:
        return float("inf")
    return float(errs.ratio if errs.ratio is not None else float("inf"))


def check_conventions(adapter: Any, dtype: str) -> dict[str, float]:
    """Ratios per case of `adapter.convention_attention` against the reference, declared conventions only."""
    caps = adapter.capabilities
    alignment = caps.causal_alignment or "top_left"
    accuracy = caps.accuracy(dtype)
    out: dict[str, float] = {}
    for name, B, H, H_kv, T, S, D, causal, window, cap, alibi, lengths in CONVENTION_CASES:
        needs = {"window": window is not None, "softcap": cap is not None, "alibi": alibi, "lengths": lengths}
        if any(on and c not in caps.conventions for c, on in needs.items()):
            continue
        if H_kv != H and not caps.gqa:
            continue
        rng = _rng(name, dtype)
        q, k, v = (round_to(rng.standard_normal(s), dtype) for s in ((B, H, T, D), (B, H_kv, S, D), (B, H_kv, S, D)))
        slopes = alibi_slopes(H) if alibi else None
        q_lens = rng.integers(1, T + 1, size=B) if lengths else None
        k_lens = rng.integers(1, S + 1, size=B) if lengths else None
        mask = None if q_lens is None else lengths_to_mask(q_lens, k_lens, T, S)[:, None]
        kw = dict(window=window, logit_softcap=cap, alibi_slopes=slopes)
        got = adapter.convention_attention(
            q,
            k,
            v,
            None,
            causal,
            None,
            dtype,
            **{k_: v_ for k_, v_ in kw.items() if v_ is not None},
            **({"query_lengths": q_lens, "key_lengths": k_lens} if lengths else {}),
        )
        ex = exact_precision(accuracy)
        up = storage_dtype(ex)
        exact, weights = scaled_dot_product_attention(
            *(np.asarray(a, dtype=up) for a in (q, k, v)),
            mask=mask,
            causal=causal,
            alignment=alignment,
            dtype=ex,
            return_weights=True,
            **kw,
        )
        same = scaled_dot_product_attention(
            q, k, v, mask=mask, causal=causal, alignment=alignment, dtype=accuracy, **kw
        )
        rows = np.broadcast_to(np.asarray(weights).sum(-1, keepdims=True) > 0, exact.shape)
        out[name] = _ratio(got, exact, same, accuracy, rows)
    return out


def check_decode(adapter: Any, dtype: str) -> dict[str, float]:
    """Ratios of `adapter.decode_step` against `attnconf.reference.decode_step`."""
    accuracy = adapter.capabilities.accuracy(dtype)
    out: dict[str, float] = {}
    for name, B, H, H_kv, S_past, T_new, D, lens in [
        ("one-token", 2, 4, 2, 6, 1, 8, False),
        ("chunk", 1, 2, 2, 5, 3, 8, False),
        ("ragged-cache", 3, 2, 1, 6, 2, 8, True),
        ("ragged-cache-mha", 2, 2, 2, 5, 2, 8, True),
    ]:
        if H_kv != H and not adapter.capabilities.gqa:
            continue
        rng = _rng(name, dtype)
        shapes = (
            (B, H, T_new, D),
            (B, H_kv, S_past, D),
            (B, H_kv, S_past, D),
            (B, H_kv, T_new, D),
            (B, H_kv, T_new, D),
        )
        arrays = [round_to(rng.standard_normal(s), dtype) for s in shapes]
        cache_lengths = rng.integers(0, S_past + 1, size=B) if lens else None
        kw = {} if cache_lengths is None else {"cache_lengths": cache_lengths}
        got = adapter.decode_step(*arrays, dtype, **kw)
        ex = exact_precision(accuracy)
        exact = decode_step(*(np.asarray(a, dtype=storage_dtype(ex)) for a in arrays), dtype=ex, **kw)
        same = decode_step(*arrays, dtype=accuracy, **kw)
        out[name] = _ratio(got, exact, same, accuracy)
    return out


def check_rotary(adapter: Any, dtype: str) -> dict[str, float]:
    """Ratios of `adapter.rotary_embedding` against `attnconf.reference.rotary_embedding`."""
    caps = adapter.capabilities
    accuracy = caps.accuracy(dtype)
    out: dict[str, float] = {}
    for layout in sorted(caps.rotary_layouts):
        for rotary_dim, theta, offset in [(None, 10000.0, 0), (None, 500000.0, 37), (4, 10000.0, 5)]:
            if (rotary_dim is not None and not caps.rotary_partial) or (theta != 10000.0 and not caps.rotary_theta):
                continue
            rng = _rng(layout, rotary_dim, theta, dtype)
            x = round_to(rng.standard_normal((2, 3, 5, 8)), dtype)
            positions = np.broadcast_to(np.arange(offset, offset + 5), (2, 5)).copy()
            kw = {} if rotary_dim is None else {"rotary_dim": rotary_dim}
            got = adapter.rotary_embedding(x, positions, dtype, layout=layout, theta=theta, **kw)
            ex = exact_precision(accuracy)
            exact = rotary_embedding(
                np.asarray(x, dtype=storage_dtype(ex)), positions, layout=layout, theta=theta, dtype=ex, **kw
            )
            same = rotary_embedding(x, positions, layout=layout, theta=theta, dtype=accuracy, **kw)
            out[f"{layout}-r{rotary_dim}-theta{theta:g}-p{offset}"] = _ratio(got, exact, same, accuracy)
    return out


def check(spec: str, dtypes: tuple[str, ...] = ("float64", "float32", "bfloat16")) -> dict[str, Any]:
    """Every check the adapter `spec` (a ``module:Class`` path) declares, per dtype it runs:
    ``{dtype: {case: ratio}}``."""
    adapter = registry.instantiate(registry.load(spec).obj)
    caps = adapter.capabilities
    result: dict[str, Any] = {}
    for dtype in dtypes:
        if dtype not in caps.dtypes:
            continue
        ratios: dict[str, float] = {}
        if caps.conventions:
            ratios.update({f"conv/{k}": r for k, r in check_conventions(adapter, dtype).items()})
        if caps.kv_cache:
            ratios.update({f"decode/{k}": r for k, r in check_decode(adapter, dtype).items()})
        if caps.rotary_layouts:
            ratios.update({f"rotary/{k}": r for k, r in check_rotary(adapter, dtype).items()})
        result[dtype] = ratios
    return result


if __name__ == "__main__":
    args = sys.argv[1:]
    chosen = ("float64", "float32", "bfloat16")
    if args and args[0].startswith("--dtypes="):
        chosen = tuple(args.pop(0).split("=", 1)[1].split(","))
    for adapter_spec in args:
        print(json.dumps({"adapter": adapter_spec, "ratios": check(adapter_spec, chosen)}), flush=True)
