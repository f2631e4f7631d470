"""Hypothesis strategies of the invariant chapters: shapes, heads, masks, dtypes, logit magnitudes.

Shapes are drawn from a small fixed set of buckets, the shapes of the agreement chapter
(`cases.CONFIGS`), so a framework that compiles per shape (JAX, XLA) compiles a handful of
functions for the whole suite, not one per example. Array contents come from a drawn seed:
they are random normal arrays as in `cases`, and a failure shows the seed that reproduces them.
Masks are drawn element by element (they shrink to the smallest failing pattern) and always
keep at least one visible key in every query row, causal masking included: a fully masked row
has no defined output and the chapters never rely on it.

Tests label their draws (``data.draw(strategy, label="mask")``) so that a falsifying example
reads as "Draw 1 (shape): Shape(B=2, T=3, S=7, H=4, H_kv=2, D=8)".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from attnconf.conformance.cases import Config
from attnconf.contract import Capabilities
from attnconf.reference._checks import FLOAT_DTYPES
from attnconf.reference.masks import causal_mask

Array = np.ndarray[Any, Any]

#: Input width of every bucket (E_q = E_k = E_v = E_out).
WIDTH = 16


@dataclass(frozen=True)
class Shape:
    """Sizes of one drawn case: batch B, queries T, keys S, heads H, kv heads H_kv, head width D."""

    B: int
    T: int
    S: int
    H: int
    H_kv: int
    D: int
    E: int = WIDTH

    def config(self, **options: Any) -> Config:
        """The `cases.Config` of this shape (for `cases.make_weights` / `make_inputs`)."""
        return Config(B=self.B, T=self.T, S=self.S, E_q=self.E, H=self.H, H_kv=self.H_kv, D_k=self.D, **options)

    @property
    def tied(self) -> bool:
        """H * D == E: fits adapters that derive the head width from the input width."""
        return self.H * self.D == self.E

    def __repr__(self) -> str:
        return f"Shape(B={self.B}, T={self.T}, S={self.S}, H={self.H}, H_kv={self.H_kv}, D={self.D})"


#: The shape buckets. JAX and XLA compile once per shape, dtype and mask/causal combination, so
#: the buckets are shapes of the agreement chapter (`cases.CONFIGS`: H = 4 heads of width 4 over
#: E = 16, the layout every layer takes), whose compiled functions the invariant chapters then reuse:
#: "padding_mask" and "causal" are 6 x 6, "random_mask" and "causal_cross" 4 x 7, "gqa" and "mqa".
#: The workload buckets add the decode step (T = 1, S = 7: "decode", "decode_causal"), more queries
#: than keys (T = 7 > S = 4: "more_queries"), a single key (S = 1: "single_key") and a longer row
#: (B = 3, T = 8, S = 32: "padded_rows_32"). Chapters that change a width (scaling doubles D_k,
#: heads slices one head) add their own shapes.
#:
#: Not every bucket fits every draw: under bottom-right alignment a causal row of T > S has no
#: visible key (`fits_causal`), and a mask can hide nothing on a single key or beside a top-left
#: causal mask at T = 1 (`maskable`); `shapes` and `optional_masks` leave those out.
BASE = (Shape(2, 6, 6, 4, 4, 4), Shape(2, 4, 7, 4, 4, 4))
WORKLOAD = (Shape(2, 1, 7, 4, 4, 4), Shape(2, 7, 4, 4, 4, 4), Shape(2, 4, 1, 4, 4, 4), Shape(3, 8, 32, 4, 4, 4))
GQA = (Shape(2, 4, 6, 4, 2, 4), Shape(2, 5, 5, 4, 1, 4))
SHAPES = BASE + WORKLOAD + GQA

#: Largest logit magnitudes drawn per precision ("1e4 and beyond"). float16 stays below its
#: range (65504) even before the 1/sqrt(D) scale is applied.
LARGE_LOGITS = {"float64": (1e4, 1e6), "float32": (1e4, 1e6), "bfloat16": (1e4, 1e5), "float16": (1e3, 1e4)}
#: Constant shifts of a row's logits per precision: large where the precision keeps the O(1)
#: differences between logits, moderate where rounding a shifted logit would erase them.
SHIFTS = {"float64": (1e2, 1e5), "float32": (1e2, 1e4), "bfloat16": (1.0, 10.0), "float16": (10.0, 1e2)}


def fits_causal(shape: Shape, alignment: str | None) -> bool:
    """Whether every query row of `shape` keeps a visible key under a causal mask with `alignment`
    (None: not causal). Bottom-right alignment with T > S leaves the first T - S rows with none."""
    return alignment != "bottom_right" or shape.T <= shape.S


def maskable(shape: Shape, alignment: str | None = None) -> bool:
    """Whether a mask on `shape` can hide a key that the causal mask (`alignment`, None: none) allows
    while every row keeps a visible key: S >= 2, and under top-left causality T >= 2 (at T = 1 the
    only query sees key 0 alone)."""
    return fits_causal(shape, alignment) and shape.S >= 2 and (alignment != "top_left" or shape.T >= 2)


def shapes(caps: Capabilities, *, square: bool = False, gqa: bool | None = None, causal: str | None = None,
           masked: bool = False, min_keys: int = 1) -> st.SearchStrategy[Shape]:
    """Shape buckets that an adapter with `caps` takes.

    Args:
        square: only T == S (self-attention).
        gqa: True: only H_kv < H; False: only H_kv == H; None: H_kv < H too where `caps.gqa`.
        causal: the alignment of a causal mask the test will apply: only shapes where it leaves every
            row a visible key (`fits_causal`).
        masked: only shapes on which a mask can hide something (`maskable`, with `causal`).
        min_keys: only S >= min_keys.
    """
    found = [s for s in SHAPES if (not square or s.T == s.S) and (caps.head_dim or s.tied)
             and ((s.H_kv < s.H) == gqa if gqa is not None else (s.H_kv == s.H or caps.gqa))
             and (s.H_kv > 1 or s.H == 1 or caps.mqa)
             and fits_causal(s, causal) and (not masked or maskable(s, causal)) and s.S >= min_keys]
    if not found:
        raise ValueError(f"no shape bucket fits square={square}, gqa={gqa}, causal={causal}, masked={masked}, "
                         f"min_keys={min_keys} and {caps}")
    return st.sampled_from(found)


def causal_flags(caps: Capabilities, shape: Shape, *, with_mask: bool = False) -> st.SearchStrategy[bool]:
    """Whether to set the causal flag on `shape`: False, or True too where the adapter has a causal
    flag and its alignment leaves every row a visible key (`fits_causal`). `with_mask`: the test will
    also apply a mask, so the adapter must take both and the mask must still hide something (`maskable`)."""
    alignment = caps.causal_alignment
    if not caps.causal or not fits_causal(shape, alignment) or (
            with_mask and not (caps.causal_with_mask and maskable(shape, alignment))):
        return st.just(False)
    return st.booleans()


def seeds() -> st.SearchStrategy[int]:
    """Seeds of the random array contents (`numpy.random.default_rng(seed)`)."""
    return st.integers(0, 2**32 - 1)


def dtypes(caps: Capabilities, selected: tuple[str, ...] = FLOAT_DTYPES) -> st.SearchStrategy[str]:
    """Precisions that an adapter with `caps` runs, among `selected`."""
    return st.sampled_from([d for d in FLOAT_DTYPES if d in caps.dtypes and d in selected])


def visible_rows(mask: Array, causal: str | None) -> Array:
    """`(B, T, S)` visibility of `mask` combined with a causal alignment (None: not causal)."""
    if causal is None:
        return mask
    return mask & causal_mask(mask.shape[1], mask.shape[2], causal)[None]  # type: ignore[arg-type]


def _keep_a_visible_key(mask: Array, causal: str | None) -> Array:
    """Make the first causally allowed key of every row that has none visible, visible."""
    mask = mask.copy()
    B, T, S = mask.shape
    allowed = causal_mask(T, S, causal) if causal else np.ones((T, S), dtype=bool)  # type: ignore[arg-type]
    empty = ~visible_rows(mask, causal).any(axis=-1)
    for b, t in np.argwhere(empty):
        mask[b, t, int(np.argmax(allowed[t]))] = True
    return mask


def hides_something(mask: Array, causal: str | None = None) -> bool:
    """Whether `mask` `(B, T, S)` hides a key that the causal mask (`causal`: its alignment) allows."""
    B, T, S = mask.shape
    allowed = np.ones((B, T, S), dtype=bool)
    return bool((visible_rows(allowed, causal) & ~mask).any())


@st.composite
def masks(draw: st.DrawFn, B: int, T: int, S: int, causal: str | None = None) -> Array:
    """A boolean `(B, T, S)` mask, True = may attend, that hides something, with a visible key in every row.

    Either a padding mask (the first `length[b]` keys of each element) or an arbitrary pattern.
    `causal` names the alignment the mask will be combined with, if any; then the mask is a
    padding mask, the one kind every adapter takes together with a causal flag (torch's
    `is_causal` requires `attn_mask` to be the causal mask itself, so a mask goes to
    `key_padding_mask`). A draw that would hide no key the causal mask allows is repaired: the last
    batch element's length becomes 1 (padding), or its last entry False (pattern). Raises
    `ValueError` where no mask can hide anything (`maskable`).
    """
    shape = Shape(B, T, S, 1, 1, 1)
    if not maskable(shape, causal):
        raise ValueError(f"no mask can hide a key on T={T}, S={S} with causal={causal} and keep one in every row")
    if causal is not None or draw(st.booleans()):
        lengths = np.array(draw(st.lists(st.integers(1, S), min_size=B, max_size=B)))
        mask = np.broadcast_to(np.arange(S)[None, None, :] < lengths[:, None, None], (B, T, S)).copy()
        if not hides_something(mask, causal):
            mask[-1, :, 1:] = False  # length 1: hides key 1 from the last query row under either alignment
    else:
        mask = draw(hnp.arrays(np.bool_, (B, T, S)))
    mask = _keep_a_visible_key(mask, causal)
    if not hides_something(mask, causal):  # only an all-True pattern gets here (no causal flag)
        mask[-1, -1, -1] = False
    return mask


def optional_masks(caps: Capabilities, shape: Shape, causal: str | None = None) -> st.SearchStrategy[Array | None]:
    """None, or a mask where the adapter takes one (with the causal flag too, if `causal`) and a mask
    can hide something on `shape` (`maskable`)."""
    if not caps.boolean_mask or (causal and not caps.causal_with_mask) or not maskable(shape, causal):
        return st.none()
    return st.none() | masks(shape.B, shape.T, shape.S, causal)


def logit_magnitudes(dtype: str, extreme: bool = True) -> st.SearchStrategy[float]:
    """The largest |logit| of a case: bounded (1), moderate (10), or extreme for `dtype`."""
    bounded = (1.0, 10.0)
    return st.sampled_from(bounded + (LARGE_LOGITS[dtype] if extreme else ()))


def large_logits(dtype: str) -> st.SearchStrategy[float]:
    """Extreme logit magnitudes for `dtype` (1e4 and beyond where the precision allows it)."""
    return st.sampled_from(LARGE_LOGITS[dtype])


def shifts(dtype: str) -> st.SearchStrategy[float]:
    """Signed constant shifts of a row's logits for `dtype`."""
    return st.sampled_from(SHIFTS[dtype]).flatmap(lambda m: st.sampled_from((m, -m)))


def permutations(n: int) -> st.SearchStrategy[list[int]]:
    """Permutations of `range(n)` other than the identity."""
    return st.permutations(range(n)).filter(lambda p: list(p) != list(range(n)))
