"""The per-block arithmetic of `attnconf.reference.chunked`: one query block against all keys.

Shapes: a query block has `n` rows; `k1 = [k | 1]` is `(S, D_k + 1)` and `v1 = [v | 1]` is
`(S, D_v + 1)` for one kv head; a score block is `(n, m)` for `m` keys.

float32 / float64 (`attend_fast`), one pass with a lazily updated shift `c` per row:

* the shift is folded into the first product: ``[q * scale | -c] @ [k | 1]^T = s - c``, so no
  pass over the block subtracts it;
* `c` is set from a row's first visible block (its maximum there) and raised only when a later
  block's exponentials sum past `LIMIT`: that row's block is recomputed with the new maximum
  and its accumulator rescaled by ``exp(c_old - c_new)``. Values between the shift and
  ``log(LIMIT)`` above it are exact in floating point (the normalisation divides them out), so
  the result equals the eager-max online softmax up to round-off;
* ``p = exp(s - c)`` is computed in place, and ``p @ [v | 1]`` gives the weighted values and the
  row sum in one product.

float16 / bfloat16 (`attend_rounded`), two passes that reproduce the reference's rounding
steps: the logits are rounded to the precision, pass one finds each row's maximum and sum, pass
two forms the normalised weights, rounds them, and accumulates ``weights @ v`` in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from attnconf.reference.precision import round_to

Array = np.ndarray[Any, Any]
#: A block's row sum of exponentials above this triggers a recomputation with a higher shift;
#: accumulators stay below `LIMIT` times the number of key blocks, far from overflow.
LIMIT = 2.0**32


@dataclass
class Plan:
    """One call's validated arguments. `mask` and `bias` are rank 4, broadcastable to (B, H, T, S)."""

    q: Array  # (B, H, T, D_k)
    mask: Array | None
    bias: Array | None
    offset: int | None  # causal: key j visible to query i when j <= i + offset; None: no causal
    scale: float
    precision: str
    ctype: np.dtype[Any]  # compute dtype
    block_k: int
    fully_masked: str
    S: int

    @property
    def rounded(self) -> bool:
        return self.precision in ("float16", "bfloat16")

    def key_end(self, i1: int) -> int:
        """One past the last key that a query below `i1` may see."""
        return self.S if self.offset is None else max(0, min(self.S, i1 + self.offset))

    def key_blocks(self, i1: int) -> list[tuple[int, int]]:
        end = self.key_end(i1)
        return [(j0, min(j0 + self.block_k, end)) for j0 in range(0, end, self.block_k)]


def _pick(x: Array | None, b: int, h: int, rows: Any, cols: slice) -> Array | None:
    """The (rows, cols) block of a rank-4 broadcastable array, still broadcastable."""
    if x is None:
        return None
    return x[b if x.shape[0] > 1 else 0, h if x.shape[1] > 1 else 0,
             rows if x.shape[2] > 1 else slice(None), cols if x.shape[3] > 1 else slice(None)]


def scores(p: Plan, qx: Array, k: Array, b: int, h: int, rows: Array, j0: int, j1: int, out: Array) -> Array:
    """``qx @ k[j0:j1]^T`` in `out`, rounded and biased as the reference does, hidden entries -inf.

    `rows` are the query indices of the rows of `qx` (consecutive for a whole block).
    """
    s = out[: len(rows) * (j1 - j0)].reshape(len(rows), j1 - j0)
    np.matmul(qx, k[j0:j1].T, out=s)
    if p.rounded:  # the reference scales the product, then rounds the logits
        s *= np.float32(p.scale)
        s[...] = round_to(s, p.precision)
    sel = slice(rows[0], rows[-1] + 1) if rows[-1] - rows[0] + 1 == len(rows) else rows
    bias = _pick(p.bias, b, h, sel, slice(j0, j1))
    if bias is not None:
        s += bias
        if p.rounded:
            s[...] = round_to(s, p.precision)
    mask = _pick(p.mask, b, h, sel, slice(j0, j1))
    if mask is not None:
        np.copyto(s, -np.inf, where=~mask)
    if p.offset is not None and j1 - 1 > rows[0] + p.offset:  # the block reaches above the diagonal
        np.copyto(s, -np.inf, where=np.arange(j0, j1)[None, :] > rows[:, None] + p.offset)
    return s


def attend_fast(p: Plan, q_ext: Array, k1: Array, v1: Array, b: int, h: int, rows: Array,
                buf: Array) -> tuple[Array, Array]:
    """float32/float64: `([acc | l], found)` for the rows; `q_ext` is `[q * scale | 0]`, updated."""
    n, shift_col = len(rows), q_ext.shape[1] - 1
    acc = np.zeros((n, v1.shape[1]), dtype=p.ctype)
    step = np.empty_like(acc)
    c = np.zeros(n, dtype=p.ctype)  # the shift: q_ext[:, -1] == -c
    found = np.zeros(n, dtype=bool)  # rows whose shift is set (a visible key has been seen)
    for j0, j1 in p.key_blocks(int(rows[-1]) + 1):
        s = scores(p, q_ext, k1, b, h, rows, j0, j1, buf)
        if not found.all():
            todo = np.flatnonzero(~found)
            block = s if len(todo) == n else s[todo]
            top = block.max(axis=1)
            seen = ~np.isneginf(top)  # NaN counts as seen: the row is NaN, as in the reference
            block -= np.where(seen, top, 0)[:, None]
            if len(todo) < n:
                s[todo] = block
            c[todo[seen]] = top[seen]
            q_ext[todo[seen], shift_col] = -top[seen]
            found[todo[seen]] = True
        with np.errstate(over="ignore"):  # a sum past LIMIT is recomputed below
            np.exp(s, out=s)
            np.matmul(s, v1[j0:j1], out=step)
        over = np.flatnonzero(~(step[:, -1] <= LIMIT))  # large, inf or NaN
        if len(over):
            _raise_shift(p, q_ext, k1, v1, b, h, rows, over, j0, j1, c, acc, step)
        acc += step
    return acc, found


def _raise_shift(p: Plan, q_ext: Array, k1: Array, v1: Array, b: int, h: int, rows: Array, over: Array,
                 j0: int, j1: int, c: Array, acc: Array, step: Array) -> None:
    """Recompute rows `over` of a block whose exponentials grew past `LIMIT`, with a higher shift."""
    s = scores(p, q_ext[over], k1, b, h, rows[over], j0, j1, np.empty(len(over) * (j1 - j0), p.ctype))
    top = s.max(axis=1)
    up = top > 0  # False for NaN rows, which stay NaN
    if up.any():
        r = over[up]
        acc[r] *= np.exp(-top[up])[:, None]
        c[r] += top[up]
        q_ext[r, -1] = -c[r]
        s[up] -= top[up][:, None]
    np.exp(s, out=s)
    step[over] = s @ v1[j0:j1]


def attend_rounded(p: Plan, q: Array, k: Array, v: Array, b: int, h: int, rows: Array,
                   buf: Array) -> tuple[Array, Array]:
    """float16/bfloat16: `(sum_j round(softmax) v_j, found)` in float32; `k`, `v` without ones."""
    n = len(rows)
    m = np.full(n, -np.inf, dtype=p.ctype)
    total = np.zeros(n, dtype=p.ctype)
    for j0, j1 in p.key_blocks(int(rows[-1]) + 1):  # pass 1: row maximum and sum
        s = scores(p, q, k, b, h, rows, j0, j1, buf)
        m_new = np.maximum(m, s.max(axis=1))
        shift = np.where(np.isneginf(m_new), 0, m_new)
        total *= np.exp(m - shift)
        s -= shift[:, None]
        total += np.exp(s, out=s).sum(axis=1)
        m = m_new
    found = ~np.isneginf(m)
    shift = np.where(found, m, 0)[:, None]
    safe = np.where(total == 0, 1, total)[:, None]
    acc = np.zeros((n, v.shape[1]), dtype=p.ctype)
    for j0, j1 in p.key_blocks(int(rows[-1]) + 1):  # pass 2: rounded weights times values
        s = scores(p, q, k, b, h, rows, j0, j1, buf)
        s -= shift
        np.exp(s, out=s)
        s /= safe
        s[...] = round_to(s, p.precision)
        acc += s @ v[j0:j1]
    return acc, found


def finish(p: Plan, heads: Array, found: Array, v: Array) -> Array:
    """Apply the fully-masked policy to rows with no visible key; `v` is the kv head's `(S, D_v)`."""
    empty = ~found
    if empty.any():
        if p.fully_masked == "nan":
            heads[empty] = np.nan
        elif p.fully_masked == "uniform":  # weights 1/S, rounded to the precision as in `softmax`
            weight = round_to(np.asarray(1.0 / v.shape[0], dtype=p.ctype), p.precision)
            heads[empty] = p.ctype.type(weight) * v.sum(axis=0, dtype=p.ctype)
        else:
            heads[empty] = 0
    return heads
