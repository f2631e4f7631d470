"""Conventions of current models (docs/spec.md, section 13): rotary layout and position offset, a decode
step's alignment against a KV cache, sliding-window bounds, soft-cap placement, ALiBi bias form and
slopes, and what a ragged batch returns in its padded query rows.

Each scenario calls one optional method (`rotary_embedding`, `decode_step`, `convention_attention`)
on a small seeded float32 probe and compares the result with candidates computed by the reference in
float64 from the same rounded inputs. Attention probes use one-hot values (value of key `j` is the
unit vector `e_j`), so the output *is* the effective attention weights `(B, H, T, S)`. An adapter
that does not declare the capability (`capabilities.rotary_layouts`, `kv_cache`, `conventions`) or
lacks the method is ``unsupported``, with the reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from attnconf.audit import classify
from attnconf.audit.measure.common import TOL, seed, summary
from attnconf.audit.observe import Context, InvalidOutput, Result, Unsupported
from attnconf.reference.alibi import alibi_bias, alibi_slopes
from attnconf.reference.attention import scaled_dot_product_attention
from attnconf.reference.masks import lengths_to_mask
from attnconf.reference.precision import round_to
from attnconf.reference.rotary import rotary_embedding

Array = np.ndarray[Any, Any]
DTYPE = "float32"
#: The rotary probe: x `(B, H, N, D)`; the offset probe is a decode step of N_DECODE tokens at
#: per-element positions ROTARY_OFFSETS[b] + 0 .. N_DECODE - 1.
ROTARY_SHAPE = (2, 2, 4, 8)
ROTARY_OFFSETS = (5, 9)
N_DECODE = 2
#: The decode probe: B = H = H_kv = 2, D_k = 8, a full cache of S_PAST keys, T_new = 1 and 2.
S_PAST = 5
DECODE_STEPS = (1, 2)
#: The window probe: T = S = 6 (square, so the alignment does not move the window), window (2, 0).
WINDOW = (2, 0)
WINDOW_CANDIDATES: dict[str, tuple[int | None, int | None] | None] = {
    "inclusive": WINDOW,
    "exclusive": (WINDOW[0] - 1, WINDOW[1]),
    "one_wider": (WINDOW[0] + 1, WINDOW[1]),
    "ignored": None,
}
#: The soft-cap probe: logits of a few units after the scale, capped at 2 (the cap bends them a lot).
SOFTCAP = 2.0
#: The ALiBi probes: head counts that are not powers of two; T = S = 5, no causal mask.
ALIBI_HEADS = (6, 12)
#: The ragged probe: B = 2, T = S = 5; element 0 has 3 real queries and 4 real keys, element 1 is full.
QUERY_LENGTHS = (3, 5)
KEY_LENGTHS = (4, 5)


def _f32(rng: np.random.Generator, shape: tuple[int, ...], spread: float = 1.0) -> Array:
    """Seeded normal values rounded to float32 (held in float64 for the reference)."""
    return np.asarray(round_to(spread * rng.standard_normal(shape), DTYPE), dtype=np.float64)


def one_hot_values(B: int, H_kv: int, S: int, D: int) -> Array:
    """Values `(B, H_kv, S, D)`, `D >= S`: key `j`'s value is the unit vector `e_j`, so the first `S`
    output features are the attention weights and the rest are 0 (D_v = D_k = D: an adapter that
    takes no value width of its own runs them)."""
    if D < S:
        raise ValueError(f"one-hot values need D >= S, received D={D}, S={S}")
    return np.array(np.broadcast_to(np.eye(S, D), (B, H_kv, S, D)))


def _array(got: Any, shape: tuple[int, ...], method: str) -> Array:
    arr = np.asarray(got, dtype=np.float64)
    if arr.shape != shape:
        raise InvalidOutput(f"`{method}` returned shape {arr.shape}, expected {shape}")
    return arr


def _require_convention(ctx: Context, convention: str) -> None:
    if convention not in ctx.capabilities.conventions:
        raise Unsupported(f"capabilities.conventions does not list {convention!r}: the adapter takes no {convention}")
    ctx.require("convention_attention")
    ctx.require_dtype(DTYPE)


def _alignment(ctx: Context) -> str:
    """The positions the adapter's conventions use: its causal alignment, top-left when it has none."""
    return ctx.capabilities.causal_alignment or "top_left"


def _verdict(per_probe: dict[str, str | None]) -> str:
    """The outcome every probe matched, else ``other``."""
    hits = set(per_probe.values())
    return next(iter(hits)) if len(hits) == 1 and None not in hits else "other"  # type: ignore[return-value]


# -- rotary ------------------------------------------------------------------------------------------


@functools.cache
def rotary_probe() -> Array:
    return _f32(np.random.default_rng(seed("rotary")), ROTARY_SHAPE)


def _rotary_candidates(x: Array, positions: Array) -> dict[str, Array]:
    return {
        layout: rotary_embedding(x, positions, layout=layout, dtype="float64") for layout in ("half", "interleaved")
    }


def _rotate(ctx: Context, x: Array, positions: Array, layout: str) -> Array:
    if layout not in ctx.capabilities.rotary_layouts:
        declared = sorted(ctx.capabilities.rotary_layouts) or "none"
        raise Unsupported(f"capabilities.rotary_layouts does not list {layout!r} (declared: {declared})")
    ctx.require("rotary_embedding")
    ctx.require_dtype(DTYPE)
    got = ctx.call("rotary_embedding", x.astype(np.float32), positions, DTYPE, layout=layout)
    return _array(got, x.shape, "rotary_embedding")


def rotary_layout(layout: str) -> Callable[[Context], Result]:
    """What `rotary_embedding(..., layout=layout)` computes at positions 0 .. N-1: ``half``,
    ``interleaved`` or ``other``."""

    def measure(ctx: Context) -> Result:
        x = rotary_probe()
        B, _, N, _ = x.shape
        positions = np.broadcast_to(np.arange(N, dtype=np.int64), (B, N)).copy()
        got = _rotate(ctx, x, positions, layout)
        outcome, dists = classify.nearest(got, _rotary_candidates(x, positions), TOL[DTYPE])
        outcome = outcome or "other"
        note = "" if outcome == layout else f" (asked for {layout})"
        return Result(
            outcome,
            f"asked for layout {layout!r}: computes {outcome}{note}",
            {"asked": layout, "distances": dists, "shape": list(x.shape)},
        )

    return measure


def rotary_offset(ctx: Context) -> Result:
    """A decode step of 2 tokens at positions p, p + 1 (p = 5 and 9 per batch element): ``offset_ok``
    (rotated at those positions, in either layout), ``offset_ignored`` (rotated at 0, 1), or ``other``."""
    layouts = sorted(ctx.capabilities.rotary_layouts)
    layout = "half" if "half" in layouts else (layouts[0] if layouts else "half")
    x = rotary_probe()[:, :, :N_DECODE]
    B = x.shape[0]
    positions = np.asarray(ROTARY_OFFSETS, dtype=np.int64)[:, None] + np.arange(N_DECODE, dtype=np.int64)[None, :]
    got = _rotate(ctx, x, positions, layout)
    from_zero = np.broadcast_to(np.arange(N_DECODE, dtype=np.int64), (B, N_DECODE)).copy()
    cands = {f"offset_ok ({k})": v for k, v in _rotary_candidates(x, positions).items()}
    cands.update({f"offset_ignored ({k})": v for k, v in _rotary_candidates(x, from_zero).items()})
    hit, dists = classify.nearest(got, cands, TOL[DTYPE])
    outcome = hit.split(" ")[0] if hit else "other"
    return Result(
        outcome,
        f"layout {layout!r} at positions {positions.tolist()}: {hit or 'no candidate'}",
        {"layout": layout, "positions": positions, "distances": dists},
    )


# -- decode step ---------------------------------------------------------------------------------------


@functools.cache
def decode_probe(T_new: int) -> dict[str, Array]:
    """q_new `(2, 2, T_new, 8)`, k_cache `(2, 2, S_PAST, 8)`, k_new `(2, 2, T_new, 8)`, and one-hot
    values `(2, 2, ., 8)` over the S_PAST + T_new keys (cache first)."""
    rng = np.random.default_rng(seed(f"decode.{T_new}"))
    B, H, D = 2, 2, 8
    S = S_PAST + T_new
    v = one_hot_values(B, H, S, D)
    return {
        "q_new": _f32(rng, (B, H, T_new, D)),
        "k_cache": _f32(rng, (B, H, S_PAST, D)),
        "k_new": _f32(rng, (B, H, T_new, D)),
        "v_cache": v[:, :, :S_PAST],
        "v_new": v[:, :, S_PAST:],
    }


def decode_candidates(p: dict[str, Array]) -> dict[str, Array]:
    """Outputs `(B, H, T_new, 8)` of the step under each reading of the causal mask (the first
    S_PAST + T_new features are the weights)."""
    k = np.concatenate([p["k_cache"], p["k_new"]], axis=2)
    v = np.concatenate([p["v_cache"], p["v_new"]], axis=2)
    sdpa = functools.partial(scaled_dot_product_attention, p["q_new"], k, v, dtype="float64")
    return {
        "bottom_right": sdpa(causal=True, alignment="bottom_right"),
        "top_left": sdpa(causal=True, alignment="top_left"),
        "unmasked": sdpa(causal=False),
    }


def decode_alignment(ctx: Context) -> Result:
    """`decode_step` with T_new = 1 and 2 against a full cache of 5 keys: where the new tokens' causal
    diagonal sits (``bottom_right``, the spec), ``top_left``, ``unmasked``, else ``other``."""
    if not ctx.capabilities.kv_cache:
        raise Unsupported("capabilities.kv_cache=False: the adapter has no decode step")
    ctx.require("decode_step")
    ctx.require_dtype(DTYPE)
    matched: dict[str, set[str]] = {}
    evidence: dict[str, Any] = {"S_past": S_PAST}
    for T_new in DECODE_STEPS:
        p = decode_probe(T_new)
        args = [p[n].astype(np.float32) for n in ("q_new", "k_cache", "v_cache", "k_new", "v_new")]
        shape = p["q_new"].shape
        got = _array(ctx.call("decode_step", *args, DTYPE), shape, "decode_step")
        dists = {name: classify.distance(got, ref) for name, ref in decode_candidates(p).items()}
        hits = {name for name, d in dists.items() if d <= TOL[DTYPE]}  # at T_new = 1 bottom-right is unmasked
        matched[f"T_new = {T_new}"] = hits
        evidence[f"T_new = {T_new}"] = {"matches": sorted(hits), "distances": dists}
        evidence[f"heatmap T_new = {T_new}"] = got[0, 0, :, : S_PAST + T_new]
    common_hits = set.intersection(*matched.values())
    outcome = next(iter(common_hits)) if len(common_hits) == 1 else "other"
    seen = "; ".join(f"{k}: {' or '.join(sorted(v)) or 'no candidate'}" for k, v in matched.items())
    return Result(outcome, f"{outcome}: {seen} (cache of {S_PAST} keys)", evidence)


# -- convention_attention probes ---------------------------------------------------------------------------


@functools.cache
def kernel_probe(name: str, B: int, H: int, T: int, D: int = 8, spread: float = 1.0) -> dict[str, Array]:
    """q `(B, H, T, D)`, k `(B, H, T, D)` (T = S) seeded by `name`, one-hot values `(B, H, T, D)`."""
    rng = np.random.default_rng(seed(name))
    q, k = _f32(rng, (B, H, T, D), spread), _f32(rng, (B, H, T, D), spread)
    return {"q": q, "k": k, "v": one_hot_values(B, H, T, D)}


def _attend(ctx: Context, p: dict[str, Array], **conventions: Any) -> Array:
    q, k, v = (p[n].astype(np.float32) for n in ("q", "k", "v"))
    got = ctx.call("convention_attention", q, k, v, None, False, None, DTYPE, **conventions)
    return _array(got, p["q"].shape, "convention_attention")


def _reference(p: dict[str, Array], **kw: Any) -> Array:
    out: Array = scaled_dot_product_attention(p["q"], p["k"], p["v"], dtype="float64", **kw)
    return out


def window_probe() -> dict[str, Array]:
    return kernel_probe("window", 2, 2, 6)


def window_bounds(ctx: Context) -> Result:
    """`window=(2, 0)` on T = S = 6: ``inclusive`` (the spec: 2 keys before and the diagonal),
    ``exclusive`` (one narrower), ``one_wider``, ``ignored`` (no window), else ``other``."""
    _require_convention(ctx, "window")
    p = window_probe()
    got = _attend(ctx, p, window=WINDOW)
    cands = {name: _reference(p, window=w) for name, w in WINDOW_CANDIDATES.items()}
    hit, dists = classify.nearest(got, cands, TOL[DTYPE])
    outcome = hit or "other"
    S = p["k"].shape[2]
    visible = (got[0, 0, :, :S] > 0).sum(axis=-1)
    return Result(
        outcome,
        f"window (left, right) = {WINDOW} on T = S = 6: {outcome}; keys seen per query {visible.tolist()}",
        {"window": list(WINDOW), "distances": dists, "heatmap": got[0, 0, :, :S]},
    )


def softcap_probe() -> dict[str, Array]:
    return kernel_probe("softcap", 2, 2, 5, spread=2.0)


def softcap_candidates(p: dict[str, Array]) -> dict[str, Array]:
    """``after_scale``: ``c tanh(s qk / c)``; ``before_scale``: ``s c tanh(qk / c)``, which is the cap
    ``s c`` after the scale; ``ignored``: no cap."""
    scale = p["q"].shape[-1] ** -0.5
    return {
        "after_scale": _reference(p, logit_softcap=SOFTCAP),
        "before_scale": _reference(p, logit_softcap=SOFTCAP * scale),
        "ignored": _reference(p),
    }


def softcap_placement(ctx: Context) -> Result:
    """`logit_softcap=2` on logits of a few units: where the cap sits relative to the scale."""
    _require_convention(ctx, "softcap")
    p = softcap_probe()
    got = _attend(ctx, p, logit_softcap=SOFTCAP)
    hit, dists = classify.nearest(got, softcap_candidates(p), TOL[DTYPE])
    outcome = hit or "other"
    return Result(outcome, f"logit_softcap={SOFTCAP}: {outcome}", {"cap": SOFTCAP, "distances": dists})


def alibi_probe(H: int) -> dict[str, Array]:
    return kernel_probe(f"alibi.{H}", 1, H, 5)


def geometric_slopes(H: int) -> Array:
    """``2**(-8k/H)``, k = 1 .. H: the paper's slopes only when H is a power of two."""
    return np.exp2(-8.0 * np.arange(1, H + 1) / H)


def alibi_candidates(p: dict[str, Array], alignment: str) -> dict[str, Array]:
    """The bias forms, each with the slopes given (`alibi_slopes(H)`) but ``geometric_slopes``."""
    H, T, S = p["q"].shape[1], p["q"].shape[2], p["k"].shape[2]
    slopes = alibi_slopes(H)

    def biased(bias: Array) -> Array:
        return _reference(p, bias=bias[None])

    return {
        "spec": biased(alibi_bias(H, T, S, alignment=alignment, slopes=slopes)),  # type: ignore[arg-type]
        "symmetric": biased(alibi_bias(H, T, S, alignment=alignment, slopes=slopes, symmetric=True)),  # type: ignore[arg-type]
        "sign_flipped": biased(-alibi_bias(H, T, S, alignment=alignment, slopes=slopes)),  # type: ignore[arg-type]
        "geometric_slopes": biased(alibi_bias(H, T, S, alignment=alignment, slopes=geometric_slopes(H))),  # type: ignore[arg-type]
    }


def alibi(ctx: Context) -> Result:
    """The paper's slopes for 6 and 12 heads passed as `alibi_slopes`: is the bias applied
    ``-slope * (p_q - p_k)`` (``spec``), ``-slope * |p_q - p_k|`` (``symmetric``), ``+slope * (p_q - p_k)``
    (``sign_flipped``), or the signed bias with the slopes ``2**(-8k/H)`` in place of those given
    (``geometric_slopes``)? T = S = 5, no causal mask (keys after the query stay visible)."""
    _require_convention(ctx, "alibi")
    alignment = _alignment(ctx)
    per_probe: dict[str, str | None] = {}
    evidence: dict[str, Any] = {"alignment": alignment}
    for H in ALIBI_HEADS:
        p = alibi_probe(H)
        slopes = alibi_slopes(H)
        got = _attend(ctx, p, alibi_slopes=slopes.astype(np.float32))
        hit, dists = classify.nearest(got, alibi_candidates(p, alignment), TOL[DTYPE])
        per_probe[f"H = {H}"] = hit
        evidence[f"H = {H}"] = {"slopes": slopes, "matches": hit, "distances": dists}
    outcome = _verdict(per_probe)
    seen = "; ".join(f"{k}: {v or 'no candidate'}" for k, v in per_probe.items())
    return Result(outcome, f"{outcome}: {seen}", evidence)


# -- ragged batches -------------------------------------------------------------------------------------------


def ragged_probe() -> dict[str, Array]:
    return kernel_probe("ragged", 2, 2, 5)


def padded_rows() -> Array:
    """`(B, T)`: True on the padded query rows of the ragged probe."""
    return np.arange(5)[None, :] >= np.asarray(QUERY_LENGTHS)[:, None]


def ragged_candidates(p: dict[str, Array]) -> dict[str, Array]:
    """Outputs `(n * H, D)` of the padded rows under each reading: ``zeros``, ``uniform`` (1/S over
    every key), ``key_padding_only`` (the row attends like a real query: only the key padding applies)."""
    B, _, T, D = p["q"].shape
    S = p["k"].shape[2]
    keys = lengths_to_mask(np.full(B, T), np.asarray(KEY_LENGTHS), T, S)
    pad = padded_rows()
    n = int(pad.sum()) * p["q"].shape[1]
    return {
        "zeros": np.zeros((n, D)),
        "uniform": np.broadcast_to(np.eye(S, D).mean(axis=0), (n, D)),
        "key_padding_only": _rows(_reference(p, mask=keys[:, None]), pad),
    }


def _rows(weights: Array, rows: Array) -> Array:
    """The `(n * H, D)` outputs of the `(B, T)` rows selected by `rows` (head-major within a row)."""
    return np.asarray(weights.transpose(0, 2, 1, 3)[rows].reshape(-1, weights.shape[-1]))


def ragged_padded_rows(ctx: Context) -> Result:
    """`query_lengths=(3, 5)`, `key_lengths=(4, 5)` on T = S = 5: what the padded query rows of
    element 0 hold (``zeros``, ``uniform``, ``nan``, ``key_padding_only``, else ``other``)."""
    _require_convention(ctx, "lengths")
    p = ragged_probe()
    got = _attend(
        ctx,
        p,
        query_lengths=np.asarray(QUERY_LENGTHS, dtype=np.int64),
        key_lengths=np.asarray(KEY_LENGTHS, dtype=np.int64),
    )
    pad = padded_rows()
    rows = _rows(got, pad)
    if np.isnan(rows).all():
        outcome, dists = "nan", {"nan_entries": float(rows.size)}
    else:
        hit, dists = classify.nearest(rows, ragged_candidates(p), TOL[DTYPE])
        outcome = hit or "other"
    S = p["k"].shape[2]
    T = got.shape[2]
    spec = _reference(p, mask=lengths_to_mask(np.asarray(QUERY_LENGTHS), np.asarray(KEY_LENGTHS), T, S)[:, None])
    real_err = classify.distance(_rows(got, ~pad), _rows(spec, ~pad))
    note = "" if real_err <= TOL[DTYPE] else f"; real rows differ from the spec by {real_err:.2g}"
    return Result(
        outcome,
        f"padded query rows (element 0, queries 3, 4): {outcome}, weights {summary(rows[0, :S])}{note}",
        {
            "query_lengths": list(QUERY_LENGTHS),
            "key_lengths": list(KEY_LENGTHS),
            "distances": dists,
            "real_rows_max_abs_error": real_err,
            "heatmap": got[0, 0, :, :S],
        },
    )
