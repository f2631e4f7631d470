"""Test cases: configurations of multi-head attention and the random inputs drawn for them.

Inputs are drawn N(0, 1) and kernels N(0, 1/E) so that logits are O(1); every query row keeps
at least one visible key (agreement never relies on the fully-masked outcome, which the spec
leaves undefined). Masked cases always mask something: a padding mask gives every batch element
a different length, the first unpadded and every other one shorter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnconf.contract import AttentionInputs, AttentionWeights, Capabilities
from attnconf.reference.masks import causal_mask

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Config:
    """Sizes and options of one multi-head attention case."""

    B: int = 2
    T: int = 5
    S: int = 5
    E_q: int = 16
    E_k: int | None = None  # None: same as E_q
    E_v: int | None = None
    H: int = 4
    H_kv: int | None = None  # None: same as H
    D_k: int = 4  # E_q = H * D_k, the layout every layer takes (torch ties them)
    D_v: int | None = None  # None: same as D_k
    E_out: int | None = None  # None: same as E_q
    bias: bool = True
    mask: str | None = None  # None, "random" or "padding"
    causal: bool = False
    scale: float | None = None
    self_attention: bool = False  # key and value are the query

    @property
    def dims(self) -> dict[str, int]:
        E_q = self.E_q
        return {
            "E_k": self.E_k or E_q, "E_v": self.E_v or E_q, "H_kv": self.H_kv or self.H,
            "D_v": self.D_v or self.D_k, "E_out": self.E_out or E_q,
        }

    def unsupported(self, caps: Capabilities, alignment_needed: bool = True) -> str | None:
        """Why an adapter with `caps` cannot take this case, or None."""
        d = self.dims
        if self.causal and self.T > self.S and caps.causal_alignment == "bottom_right":
            return (f"causal with T={self.T} > S={self.S} under bottom-right alignment leaves the first T - S query "
                    "rows with no visible key, whose output the spec leaves undefined")
        if self.mask and not caps.boolean_mask:
            return "adapter takes no boolean mask (capabilities.boolean_mask=False)"
        if self.causal and not caps.causal:
            return "adapter has no causal flag (capabilities.causal=False)"
        if self.causal and self.mask and not caps.causal_with_mask:
            return "adapter cannot combine a causal flag and a mask (capabilities.causal_with_mask=False)"
        if d["H_kv"] != self.H and not caps.gqa:
            return "adapter takes no grouped-query heads (capabilities.gqa=False)"
        if d["H_kv"] == 1 < self.H and not caps.mqa:
            why = caps.limit("mqa")
            return "adapter takes no single kv head (capabilities.mqa=False)" + (f": {why}" if why else "")
        if (d["E_k"] != self.E_q or d["E_v"] != self.E_q) and not caps.kdim_vdim:
            return "adapter takes no separate key/value widths (capabilities.kdim_vdim=False)"
        if self.H * self.D_k != self.E_q and not caps.head_dim:
            return "adapter ties the head width to E_q / H (capabilities.head_dim=False)"
        if d["D_v"] != self.D_k and not caps.value_dim:
            return "adapter takes no value head width other than D_k (capabilities.value_dim=False)"
        if d["E_out"] != self.E_q and not caps.output_dim:
            return "adapter takes no output width other than E_q (capabilities.output_dim=False)"
        if not self.bias and not caps.bias_free:
            return "adapter cannot run without biases (capabilities.bias_free=False)"
        if self.scale is not None and not caps.custom_scale:
            return "adapter takes no custom scale (capabilities.custom_scale=False)"
        return None


#: The named configurations the agreement chapter runs (ids appear in test ids). Every case runs in
#: every dtype the adapter declares. The first group covers one feature of the spec each at small
#: sizes; the second the shapes real workloads use: the decode step (T = 1, causal or not, with a
#: padded key cache), more queries than keys, a single key, one head, rows of 16, 32, 64 and 128
#: keys (vectorised kernels change code path there), head widths 64 and 128, and batches of 3 whose
#: elements are padded to different lengths. H * D_k = E_q throughout the second group, so layers
#: that tie the head width (torch) take every shape. The invariant chapters' shape buckets
#: (`strategies.SHAPES`) reuse some of these shapes, so frameworks that compile per shape reuse them.
CONFIGS: dict[str, Config] = {
    "self": Config(self_attention=True),
    "cross": Config(T=3, S=7),
    "kdim_vdim": Config(T=4, S=6, E_k=12, E_v=10),
    "value_dim": Config(D_v=6),
    "output_dim": Config(E_out=9),
    "no_bias": Config(bias=False),
    "padding_mask": Config(T=6, S=6, mask="padding"),
    "random_mask": Config(T=4, S=7, mask="random"),
    "causal": Config(T=6, S=6, causal=True, self_attention=True),
    "causal_cross": Config(T=4, S=7, causal=True),
    "causal_mask": Config(T=6, S=6, causal=True, mask="padding"),
    "scale": Config(scale=0.7),
    "gqa": Config(H=4, H_kv=2, T=4, S=6),
    "mqa": Config(H=4, H_kv=1),
    "single_head": Config(H=1, D_k=16),
    # -- the shapes of real workloads --
    "decode": Config(T=1, S=7),
    "decode_causal": Config(T=1, S=7, causal=True),
    "decode_padded_cache": Config(B=3, T=1, S=16, mask="padding"),
    "more_queries": Config(T=7, S=4),
    "more_queries_causal": Config(T=7, S=4, causal=True),
    "single_key": Config(T=4, S=1),
    "padded_prefill_16": Config(B=3, T=16, S=16, causal=True, mask="padding", self_attention=True),
    "padded_rows_32": Config(B=3, T=8, S=32, mask="padding"),
    "head_dim_64": Config(B=2, T=8, S=64, E_q=128, H=2, D_k=64),
    "head_dim_128": Config(B=2, T=4, S=128, E_q=128, H=1, D_k=128),
}


def make_weights(cfg: Config, rng: np.random.Generator) -> AttentionWeights:
    """Random canonical weights for `cfg`, float64."""
    d = cfg.dims

    def kernel(*shape: int) -> Array:
        return rng.standard_normal(shape) / np.sqrt(shape[0])

    def bias(*shape: int) -> Array | None:
        return rng.standard_normal(shape) * 0.5 if cfg.bias else None

    return AttentionWeights(
        query_kernel=kernel(cfg.E_q, cfg.H, cfg.D_k),
        key_kernel=kernel(d["E_k"], d["H_kv"], cfg.D_k),
        value_kernel=kernel(d["E_v"], d["H_kv"], d["D_v"]),
        output_kernel=rng.standard_normal((cfg.H, d["D_v"], d["E_out"])) / np.sqrt(cfg.H * d["D_v"]),
        query_bias=bias(cfg.H, cfg.D_k),
        key_bias=bias(d["H_kv"], cfg.D_k),
        value_bias=bias(d["H_kv"], d["D_v"]),
        output_bias=bias(d["E_out"]),
    )


def visible_keys(cfg: Config, mask: Array | None, alignment: str) -> Array:
    """The `(B, T, S)` visibility that mask and causal flag give together."""
    vis = np.ones((cfg.B, cfg.T, cfg.S), dtype=bool)
    if mask is not None:
        vis &= mask
    if cfg.causal:
        vis &= causal_mask(cfg.T, cfg.S, alignment)[None]  # type: ignore[arg-type]
    return vis


def padding_lengths(B: int, S: int, rng: np.random.Generator) -> Array:
    """`(B,)` key lengths for a padding mask: element 0 unpadded (S), the others distinct and shorter.

    Lengths are drawn from ``[S // 2, S - 1]`` (from ``[1, S - 1]`` where that range is too small for
    B - 1 distinct lengths), so every element but the first masks at least one key.
    """
    if B < 1 or S < 2:
        raise ValueError(f"a padding mask needs B >= 1 and S >= 2 (a key to mask and one to keep), got B={B}, S={S}")
    low = max(1, S // 2) if S - max(1, S // 2) >= B - 1 else 1
    if S - low < B - 1:
        raise ValueError(f"a padding mask with {B} different lengths needs S > {B - 1} keys, got S={S}")
    rest = rng.choice(np.arange(low, S), size=B - 1, replace=False)
    return np.concatenate([[S], rest]).astype(int)


def make_mask(cfg: Config, rng: np.random.Generator, alignment: str) -> Array | None:
    """A `(B, T, S)` boolean mask for `cfg` with at least one visible key in every row.

    A padding mask gives every batch element a different length (`padding_lengths`); a random mask
    keeps each entry with probability 0.6. Either masks at least one key that is otherwise visible.
    """
    if cfg.mask is None:
        return None
    if cfg.mask == "padding":
        lengths = padding_lengths(cfg.B, cfg.S, rng)
        mask = np.broadcast_to(np.arange(cfg.S)[None, None, :] < lengths[:, None, None], (cfg.B, cfg.T, cfg.S)).copy()
    else:
        mask = rng.random((cfg.B, cfg.T, cfg.S)) < 0.6
    # Keep a visible key in every row: the first key that causality allows.
    vis = visible_keys(cfg, mask, alignment)
    for b, t in zip(*np.nonzero(~vis.any(axis=-1))):
        allowed = visible_keys(dataclasses.replace(cfg, mask=None), None, alignment)[b, t]
        mask[b, t, int(np.argmax(allowed))] = True
    return mask


def make_inputs(cfg: Config, rng: np.random.Generator, alignment: str = "top_left") -> AttentionInputs:
    """Random inputs for `cfg`, float64."""
    d = cfg.dims
    query = rng.standard_normal((cfg.B, cfg.T, cfg.E_q))
    if cfg.self_attention:
        if cfg.T != cfg.S or d["E_k"] != cfg.E_q or d["E_v"] != cfg.E_q:
            raise ValueError(f"self-attention case needs T == S and equal widths, got {cfg}")
        key = value = query
    else:
        key = rng.standard_normal((cfg.B, cfg.S, d["E_k"]))
        value = rng.standard_normal((cfg.B, cfg.S, d["E_v"]))
    return AttentionInputs(query, key, value, mask=make_mask(cfg, rng, alignment),
                           causal=cfg.causal, scale=cfg.scale)


def seed_for(*parts: str) -> int:
    """A stable seed from names (independent of PYTHONHASHSEED)."""
    import zlib

    return zlib.crc32("/".join(parts).encode())
