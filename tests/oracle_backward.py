"""A plain-Python oracle for the backward pass of scaled dot-product attention.

Independent of `attnconf.reference`: nested loops over Python floats, one query row at a time,
written from the chain rule for ``O = softmax(scale * q k^T + bias, where=visible) @ v``.
Only for tiny cases. A row with no visible key gives zeros (the "zeros" policy).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _zeros(*shape: int) -> Any:
    if len(shape) == 1:
        return [0.0] * shape[0]
    return [_zeros(*shape[1:]) for _ in range(shape[0])]


def sdpa_vjp_loops(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, cotangent: np.ndarray,
    mask: np.ndarray | None = None, bias: np.ndarray | None = None, causal: bool = False,
    alignment: str = "top_left", scale: float | None = None,
) -> dict[str, np.ndarray]:
    """q `(B, H, T, D_k)`, k `(B, H_kv, S, D_k)`, v `(B, H_kv, S, D_v)`, cotangent `(B, H, T, D_v)`.

    mask `(B, H, T, S)` bool (True = may attend) and bias `(B, H, T, S)` float, or None.
    Returns {"q", "k", "v"} gradients as float64 arrays; kv gradients summed over each group.
    """
    B, H, T, D_k = q.shape
    H_kv, S, D_v = v.shape[1], v.shape[2], v.shape[3]
    scale = 1.0 / math.sqrt(D_k) if scale is None else scale
    offset = 0 if alignment == "top_left" else S - T
    Q, K, V, dO = q.tolist(), k.tolist(), v.tolist(), cotangent.tolist()
    dq, dk, dv = _zeros(B, H, T, D_k), _zeros(B, H_kv, S, D_k), _zeros(B, H_kv, S, D_v)
    for b in range(B):
        for h in range(H):
            g = h // (H // H_kv)
            for t in range(T):
                keys = [s for s in range(S)
                        if (mask is None or mask[b, h, t, s])
                        and (not causal or s <= t + offset)
                        and (bias is None or bias[b, h, t, s] != -math.inf)]
                if not keys:
                    continue
                logit = {}
                for s in keys:
                    logit[s] = scale * sum(Q[b][h][t][d] * K[b][g][s][d] for d in range(D_k))
                    if bias is not None:
                        logit[s] += float(bias[b, h, t, s])
                top = max(logit.values())
                e = {s: math.exp(logit[s] - top) for s in keys}
                total = sum(e.values())
                p = {s: e[s] / total for s in keys}
                # d loss / d p[s] = sum_d dO[t, d] * v[s, d]
                dp = {s: sum(dO[b][h][t][d] * V[b][g][s][d] for d in range(D_v)) for s in keys}
                mean = sum(p[s] * dp[s] for s in keys)
                for s in keys:
                    dlogit = p[s] * (dp[s] - mean)
                    for d in range(D_k):
                        dq[b][h][t][d] += scale * dlogit * K[b][g][s][d]
                        dk[b][g][s][d] += scale * dlogit * Q[b][h][t][d]
                    for d in range(D_v):
                        dv[b][g][s][d] += p[s] * dO[b][h][t][d]
    return {"q": np.array(dq), "k": np.array(dk), "v": np.array(dv)}
