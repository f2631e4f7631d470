"""What the measurements share: the fixed probes, seeds, masks and classification tolerances."""

from __future__ import annotations

import functools
import zlib
from typing import Any

import numpy as np

from attnconf.audit import probes

Array = np.ndarray[Any, Any]

#: Max distance for "this measurement is that candidate". Candidates on the probes differ by 0.05 or
#: more (tests/test_audit.py checks the separation), so these are far from both rounding and bugs.
TOL = {"float64": 1e-8, "float32": 1e-4, "float16": 1e-2, "bfloat16": 4e-2}
#: The fully masked row's tolerance: its candidates "zeros" and "uniform" differ by only 1/S = 1/16, so in
#: bfloat16 it is sharper than `TOL` (still over twice the 2^-8 rounding of an effective weight read off an
#: output near 1 in bfloat16: 2^-7 spacing, half of it as error, plus a softmax rounded in bfloat16).
ROW_TOL = {**TOL, "bfloat16": 1.2e-2}


def seed(name: str) -> int:
    """A stable seed from a name (independent of PYTHONHASHSEED)."""
    return zlib.crc32(f"attnconf.audit/{name}".encode())


@functools.cache
def base(dtype: str = "float32") -> probes.Probe:
    """The probe most scenarios share: B = H = 2, T = 4 < S = D = 16 (scale 1/4), E = 32, random query
    and key, no mask. The precision and large-logit probes have the same shapes (compiled layers are reused)."""
    return probes.onehot(f"base.{dtype}", seed("base"), S=16, dtype=dtype)


def two_sided_mask(name: str, shape: tuple[int, int, int]) -> Array:
    """A seeded boolean mask in which every row has at least two True and two False entries."""
    rng = np.random.default_rng(seed(name))
    B, T, S = shape
    mask = np.zeros(shape, dtype=bool)
    for b in range(B):
        for t in range(T):
            k = int(rng.integers(2, S - 1))
            mask[b, t, rng.permutation(S)[:k]] = True
    return mask


@functools.cache
def masked_row(dtype: str = "float32") -> probes.Probe:
    """The base probe with query row 1 of batch element 0 seeing no key (every other entry visible)."""
    p = base(dtype)
    mask = np.ones((p.B, p.T, p.S), dtype=bool)
    mask[0, 1, :] = False
    return p.with_inputs(f"masked_row.{dtype}", mask=mask)


MASKED_ROW = (0, 1)  # (batch, query) of the fully masked row


@functools.cache
def causal_probes() -> dict[str, probes.Probe]:
    """The causal alignment probes, by label: causal=True at T < S (the base probe, T = 4, S = 16), at
    T = 1 (the decode step, S = 16), at T = 8 > S = 6, and at T < S together with a key mask that
    hides key 1 of batch element 0 and keys 12.. of element 1 (a key padding mask: the same for every
    query, and key 0 stays visible, so every row keeps a key under top-left alignment)."""
    b = base()
    mask = np.ones((b.B, b.T, b.S), dtype=bool)
    mask[0, :, 1] = False
    mask[1, :, 12:] = False
    return {
        "T < S": b.with_inputs("causal", causal=True),
        "T = 1": probes.onehot("causal.decode", seed("causal.decode"), T=1, S=16).with_inputs(
            "causal.decode", causal=True),
        "T > S": probes.onehot("causal.wide", seed("causal.wide"), T=8, S=6).with_inputs("causal.wide", causal=True),
        "T < S, with a mask": b.with_inputs("causal.mask", causal=True, mask=mask),
    }


def summary(values: Array, digits: int = 4) -> str:
    """A short description of a row of numbers for a one-line detail."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return "[]"
    if np.isnan(v).all():
        return "all NaN"
    if np.isfinite(v).all() and np.ptp(v) == 0:
        return f"all {v[0]:.{digits}g}"
    shown = ", ".join("nan" if np.isnan(x) else f"{x:.{digits}g}" for x in v[:6])
    return f"[{shown}{', ...' if v.size > 6 else ''}]"
