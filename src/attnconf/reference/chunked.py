"""Exact attention in O(N*d) memory: blocked products and an online (streaming) softmax.

`chunked_attention` computes what `scaled_dot_product_attention` computes without ever holding
the `(T, S)` score matrix (Milakov & Gimelshein 2018, "Online normalizer calculation for
softmax"; Dao et al. 2022, FlashAttention). Queries are cut into blocks of `block_q` rows, one
task each; a task walks the keys in blocks of `block_k`, carrying per row a shift `c`, and the
unnormalised output and row sum `[acc | l]`::

    s - c = [q_blk * scale | -c] @ [k_blk | 1]^T  [+ bias]  [-inf where hidden]   (block_q, block_k)
    p = exp(s - c)                                                  (in place, in one buffer)
    [acc | l] += p @ [v_blk | 1]                     (the ones column gives the row sum for free)
    out = acc / l

The shift is folded into the product and raised only when a block's sum would grow too large
(the block is then recomputed and the accumulator rescaled): see `attnconf.reference._online`.
Masks, the causal flag (both alignments), grouped-query heads, the scale, an additive bias and
the fully-masked row policy mean exactly what they mean in `attnconf.reference.attention`. Key
blocks that the causal mask hides completely are skipped; only blocks that cross the diagonal
are masked element-wise.

Precision. float64 and float32 compute in that dtype and agree with the plain reference to
round-off (the differences are the summation order and the scale applied to `q` rather than to
the logits). float16 and bfloat16 follow the reference's mixed precision exactly as
`attnconf.reference.precision` defines it (float32 compute, logits and weights rounded to the
precision) in two passes; they match the plain reference up to float32 round-off before the
final rounding. The low-precision path is correct, not fast.

Memory beyond the inputs and the output: per worker thread one `(block_q, block_k)` score buffer
and `(block_q, D + 1)` accumulators, and `[k | 1]`, `[v | 1]` copies of the kv heads in use
(built on first use, dropped after the last task that reads them). A full `(T, S)` mask or bias
given by the caller is read block by block, never copied.

Threads. The tasks run in a thread pool: NumPy releases the GIL inside matmul and ufunc loops,
so `exp`, which NumPy runs on one core, runs on all of them. While the pool runs, NumPy's BLAS
is limited to one thread per call (with `threadpoolctl`, when installed) so that pool threads
and BLAS threads do not oversubscribe the cores. The default block sizes were chosen by
measurement on the project's 2-core machine (docs/benchmarks.md).
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np

from attnconf.contract import AttentionInputs, AttentionOutputs, AttentionWeights
from attnconf.reference import _online
from attnconf.reference._checks import (
    as_bool_array,
    as_float_array,
    check_broadcast,
    invalid,
)
from attnconf.reference.masks import Alignment
from attnconf.reference.precision import compute_dtype, round_to
from attnconf.reference.softmax import FullyMaskedPolicy

Array = np.ndarray[Any, Any]

#: Default block sizes, measured on 2 cores (docs/benchmarks.md): query rows per task and keys
#: per step. Smaller `T` or `S` shrink them.
BLOCK_Q = 512
BLOCK_K = 2048
#: Below this many score entries per call the pool's start-up costs more than it saves.
_SERIAL_BELOW = 1 << 18


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class _KV:
    """`[k | 1]` and `[v | 1]` of each kv head in the compute dtype, built on first use and
    dropped after the last task that reads them."""

    def __init__(self, k: Array, v: Array, ctype: np.dtype[Any], uses: dict[tuple[int, int], int]):
        self.k, self.v, self.ctype, self.uses = k, v, ctype, dict(uses)
        self.cache: dict[tuple[int, int], tuple[Array, Array]] = {}
        self.lock = threading.Lock()

    @staticmethod
    def _ones(x: Array, ctype: np.dtype[Any]) -> Array:
        out = np.empty((x.shape[0], x.shape[1] + 1), dtype=ctype)
        out[:, :-1] = x
        out[:, -1] = 1
        return out

    def get(self, b: int, hk: int) -> tuple[Array, Array]:
        with self.lock:
            if (b, hk) not in self.cache:
                self.cache[b, hk] = (self._ones(self.k[b, hk], self.ctype), self._ones(self.v[b, hk], self.ctype))
            return self.cache[b, hk]

    def release(self, b: int, hk: int) -> None:
        with self.lock:
            self.uses[b, hk] -= 1
            if not self.uses[b, hk]:
                self.cache.pop((b, hk), None)


def _task(p: _online.Plan, kv: _KV, group: int, out: Array, local: threading.local,
          b: int, h: int, i0: int, i1: int) -> None:
    """Attention for queries `i0:i1` of head `h` of batch element `b`, written into `out`."""
    k1, v1 = kv.get(b, h // group)
    size = (i1 - i0) * p.block_k
    if getattr(local, "buf", None) is None or local.buf.size < size:
        local.buf = np.empty(size, dtype=p.ctype)
    rows = np.arange(i0, i1)
    if p.rounded:
        q = np.asarray(p.q[b, h, i0:i1], dtype=p.ctype)
        heads, found = _online.attend_rounded(p, q, k1[:, :-1], v1[:, :-1], b, h, rows, local.buf)
    else:
        q_ext = np.zeros((i1 - i0, k1.shape[1]), dtype=p.ctype)
        np.multiply(p.q[b, h, i0:i1], p.ctype.type(p.scale), out=q_ext[:, :-1], casting="same_kind")
        acc, found = _online.attend_fast(p, q_ext, k1, v1, b, h, rows, local.buf)
        heads = acc[:, :-1] / np.where(found, acc[:, -1], 1)[:, None]
    out[b, h, i0:i1] = _online.finish(p, heads, found, v1[:, :-1])
    kv.release(b, h // group)


_controller: list[Any] = []


def _blas_one_thread() -> Any:
    """A context limiting NumPy's BLAS to one thread (threadpoolctl), or a no-op without it."""
    if not _controller:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - optional dependency
            _controller.append(None)
        else:
            _controller.append(ThreadpoolController())  # scanning the libraries takes a millisecond
    if _controller[0] is None:  # pragma: no cover
        return nullcontext()
    return _controller[0].limit(limits=1, user_api="blas")


def _as4(name: str, x: object, target: tuple[int, int, int, int], is_mask: bool) -> Array:
    a = as_bool_array(name, x, (2, 4)) if is_mask else as_float_array(name, x, (2, 4))
    if a.ndim == 2:
        a = a[None, None]
    check_broadcast(name, a, target, "(B, H, T, S)")
    return a


def chunked_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    bias: Array | None = None,
    causal: bool = False,
    alignment: Alignment = "top_left",
    scale: float | None = None,
    fully_masked: FullyMaskedPolicy = "zeros",
    dtype: str | None = None,
    *,
    block_q: int | None = None,
    block_k: int | None = None,
    threads: int | None = None,
) -> Array:
    """``softmax(q @ k^T * scale + bias, where=mask & causal) @ v`` in O((T + S) * D) memory.

    Arguments mean what they mean in `attnconf.reference.scaled_dot_product_attention`; the
    attention weights `(B, H, T, S)` cannot be returned, since they are never formed.

    Args:
        q: queries `(B, H, T, D_k)`.
        k: keys `(B, H_kv, S, D_k)`; query head `h` reads kv head `h // (H // H_kv)`.
        v: values `(B, H_kv, S, D_v)`.
        mask: boolean, True = may attend; `(T, S)` or rank 4 broadcastable to `(B, H, T, S)`.
        bias: additive float bias, same shapes as `mask`; `-inf` entries are masked out.
        causal: apply the causal mask with the named `alignment`.
        alignment: ``"top_left"`` (`j <= i`) or ``"bottom_right"`` (`j <= i + S - T`).
        scale: logit scale; `1/sqrt(D_k)` when None.
        fully_masked: ``"zeros"``, ``"nan"`` or ``"uniform"`` for a row with no visible key.
        dtype: precision; None keeps the dtype of `q`.
        block_q: query rows per task (default `BLOCK_Q`).
        block_k: keys per step (default `BLOCK_K`).
        threads: worker threads (default: the cores this process may use); with 1, or for small
            inputs, the caller's thread does the work and NumPy's BLAS keeps its own threads.

    Returns:
        The output `(B, H, T, D_v)` in the storage dtype of the precision.
    """
    from attnconf.reference.attention import check_attention_args

    q, k, v, scale, precision = check_attention_args(q, k, v, alignment, fully_masked, scale, dtype)
    B, H, T, D_k = q.shape
    H_kv, S = k.shape[1], k.shape[2]
    for name, value in (("block_q", block_q), ("block_k", block_k), ("threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise invalid(name, "a positive integer or None", repr(value))
    target = (B, H, T, S)
    ctype = compute_dtype(precision)
    threads = threads or default_threads()
    bq = min(T, block_q or BLOCK_Q)
    if block_q is None:  # enough tasks to keep every thread busy
        while bq > 128 and B * H * math.ceil(T / bq) < 2 * threads:
            bq = (bq + 1) // 2
    plan = _online.Plan(
        q=q,
        mask=None if mask is None else _as4("mask", mask, target, True),
        bias=None if bias is None else _as4("bias", bias, target, False),
        offset=(0 if alignment == "top_left" else S - T) if causal else None,
        scale=float(scale), precision=precision, ctype=ctype, block_k=min(S, block_k or BLOCK_K),
        fully_masked=fully_masked, S=S,
    )
    out = np.empty((B, H, T, v.shape[3]), dtype=ctype)
    group = H // H_kv
    tasks = [(b, h, i0, min(T, i0 + bq)) for b in range(B) for h in range(H) for i0 in range(0, T, bq)]
    # Largest first within each kv head (causal blocks differ in cost), kv heads in order.
    tasks.sort(key=lambda t: (t[0], t[1] // group, -plan.key_end(t[3])))
    uses: dict[tuple[int, int], int] = {}
    for b, h, _, _ in tasks:
        uses[b, h // group] = uses.get((b, h // group), 0) + 1
    kv = _KV(k, v, ctype, uses)
    local = threading.local()
    if threads == 1 or len(tasks) == 1 or T * S * B * H < _SERIAL_BELOW:
        for t in tasks:
            _task(plan, kv, group, out, local, *t)
    else:
        with _blas_one_thread(), ThreadPoolExecutor(min(threads, len(tasks))) as pool:
            for f in [pool.submit(_task, plan, kv, group, out, local, *t) for t in tasks]:
                f.result()
    return round_to(out, precision) if plan.rounded else out


def chunked_multi_head_attention(
    inputs: AttentionInputs,
    weights: AttentionWeights,
    *,
    alignment: Alignment = "top_left",
    fully_masked: FullyMaskedPolicy = "zeros",
    dtype: str | None = None,
    threads: int | None = None,
    block_k: int | None = None,
) -> AttentionOutputs:
    """`attnconf.reference.multi_head_attention` with the chunked kernel; weights are not returned.

    Args:
        inputs: query `(B, T, E_q)`, key `(B, S, E_k)`, value `(B, S, E_v)`, mask `(B, T, S)`
            or None, causal, scale.
        weights: canonical kernels and optional biases.
        alignment, fully_masked, dtype: as in `multi_head_attention`.
        threads: worker threads of `chunked_attention`.
        block_k: keys per step of `chunked_attention` (another value sums in another order).

    Returns:
        `AttentionOutputs` with output `(B, T, E_out)` and weights None.
    """
    from attnconf.reference.attention import output_projection, project_heads

    precision = dtype if dtype is not None else str(inputs.query.dtype)
    q, k, v = (project_heads(getattr(inputs, n), getattr(weights, f"{n}_kernel"), getattr(weights, f"{n}_bias"),
                             precision) for n in ("query", "key", "value"))
    heads = chunked_attention(
        q, k, v, mask=None if inputs.mask is None else inputs.mask[:, None], causal=inputs.causal,
        alignment=alignment, scale=inputs.scale, fully_masked=fully_masked, dtype=precision, threads=threads,
        block_k=block_k,
    )
    out = output_projection(heads, weights.output_kernel, weights.output_bias, precision)
    return AttentionOutputs(output=out, weights=None)
