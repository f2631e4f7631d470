"""An independent plain-Python attention: explicit loops, `math.exp`, no NumPy in the math.

Written from the definitions, not from attnconf.reference, so that the two can check each other.
Inputs are nested lists; shapes as in the spec: q[b][h][t][d], k[b][g][s][d], v[b][g][s][e].
"""

from __future__ import annotations

import math


def attention(q, k, v, mask=None, causal=False, alignment="top_left", scale=None, bias=None):
    """Returns (out[b][h][t][e], weights[b][h][t][s]); a row with no visible key gives zeros."""
    B, H, T, D = len(q), len(q[0]), len(q[0][0]), len(q[0][0][0])
    G, S, E = len(k[0]), len(k[0][0]), len(v[0][0][0])
    group = H // G
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    out, weights = [], []
    for b in range(B):
        out_b, w_b = [], []
        for h in range(H):
            g = h // group
            out_h, w_h = [], []
            for t in range(T):
                logits, visible = [], []
                for s in range(S):
                    dot = 0.0
                    for d in range(D):
                        dot += q[b][h][t][d] * k[b][g][s][d]
                    x = dot * scale
                    if bias is not None:
                        x += bias[b][h][t][s]
                    ok = True
                    if mask is not None and not mask[b][h][t][s]:
                        ok = False
                    if causal:
                        limit = t if alignment == "top_left" else t + S - T
                        if s > limit:
                            ok = False
                    logits.append(x)
                    visible.append(ok)
                chosen = [x for x, ok in zip(logits, visible) if ok]
                if not chosen:
                    w = [0.0] * S
                else:
                    m = max(chosen)
                    exps = [math.exp(x - m) if ok else 0.0 for x, ok in zip(logits, visible)]
                    total = sum(exps)
                    w = [e / total for e in exps]
                row = []
                for e in range(E):
                    acc = 0.0
                    for s in range(S):
                        acc += w[s] * v[b][g][s][e]
                    row.append(acc)
                out_h.append(row)
                w_h.append(w)
            out_b.append(out_h)
            w_b.append(w_h)
        out.append(out_b)
        weights.append(w_b)
    return out, weights


def project(x, kernel, bias):
    """x[b][n][e] @ kernel[e][h][d] (+ bias[h][d]) -> [b][h][n][d]."""
    E, H, D = len(kernel), len(kernel[0]), len(kernel[0][0])
    res = []
    for xb in x:
        heads = []
        for h in range(H):
            rows = []
            for xn in xb:
                row = []
                for d in range(D):
                    acc = bias[h][d] if bias is not None else 0.0
                    for e in range(E):
                        acc += xn[e] * kernel[e][h][d]
                    row.append(acc)
                rows.append(row)
            heads.append(rows)
        res.append(heads)
    return res


def multi_head(query, key, value, wq, wk, wv, wo, bq=None, bk=None, bv=None, bo=None,
               mask=None, causal=False, alignment="top_left", scale=None):
    """Multi-head attention from nested lists; mask[b][t][s]."""
    q, k, v = project(query, wq, bq), project(key, wk, bk), project(value, wv, bv)
    H = len(wq[0])
    mask4 = None if mask is None else [[mask[b] for _ in range(H)] for b in range(len(mask))]
    heads, weights = attention(q, k, v, mask4, causal, alignment, scale)
    E_out = len(wo[0][0])
    out = []
    for b in range(len(heads)):
        rows = []
        for t in range(len(heads[b][0])):
            row = []
            for e in range(E_out):
                acc = bo[e] if bo is not None else 0.0
                for h in range(H):
                    for d in range(len(wo[h])):
                        acc += heads[b][h][t][d] * wo[h][d][e]
                row.append(acc)
            rows.append(row)
        out.append(rows)
    return out, weights
