"""Plain-Python oracles for the conventions of modern attention: explicit loops, `math`, no NumPy.

Written from the definitions in docs/spec.md (section 13), not from attnconf.reference. Inputs are
nested lists: x[b][h][n][d], q[b][h][t][d], k[b][g][s][d], v[b][g][s][e].
"""

from __future__ import annotations

import math


def query_position(t, T, S, alignment):
    """Position of query t: t (top_left) or t + S - T (bottom_right); key s is at s."""
    return t if alignment == "top_left" else t + S - T


def rope(x, positions, layout="half", rotary_dim=None, theta=10000.0):
    """Rotate x[b][h][n][:r] pairwise; positions is a list (N) or a list of lists (B x N)."""
    out = []
    for b, xb in enumerate(x):
        out_b = []
        for xh in xb:
            out_h = []
            for n, row in enumerate(xh):
                D = len(row)
                r = D if rotary_dim is None else rotary_dim
                p = positions[b][n] if isinstance(positions[0], list) else positions[n]
                new = list(row)
                for i in range(r // 2):
                    if layout == "half":
                        ia, ib = i, i + r // 2
                    else:
                        ia, ib = 2 * i, 2 * i + 1
                    angle = p * theta ** (-2.0 * i / r)
                    a, c = row[ia], row[ib]
                    new[ia] = a * math.cos(angle) - c * math.sin(angle)
                    new[ib] = c * math.cos(angle) + a * math.sin(angle)
                out_h.append(new)
            out_b.append(out_h)
        out.append(out_b)
    return out


def alibi_slopes(n):
    """The paper's rule: slopes of the largest power of two m <= n, then every other slope of 2m."""
    m = 1
    while m * 2 <= n:
        m *= 2
    slopes = [2.0 ** (-8.0 * k / m) for k in range(1, m + 1)]
    extra = [2.0 ** (-8.0 * k / (2 * m)) for k in range(1, 2 * m + 1, 2)]
    return slopes + extra[: n - m]


def alibi_bias(slopes, T, S, alignment="top_left", symmetric=False):
    """bias[h][t][s] = -slope_h * (p_q - p_k) (or * |p_q - p_k|)."""
    out = []
    for m in slopes:
        rows = []
        for t in range(T):
            pq = query_position(t, T, S, alignment)
            row = []
            for s in range(S):
                d = pq - s
                if symmetric:
                    d = abs(d)
                row.append(-m * d)
            rows.append(row)
        out.append(rows)
    return out


def window_visible(t, s, T, S, left, right, alignment="top_left"):
    """True when p_q - left <= p_k <= p_q + right (None: that side unbounded)."""
    pq = query_position(t, T, S, alignment)
    if left is not None and s < pq - left:
        return False
    if right is not None and s > pq + right:
        return False
    return True


def softcap(x, cap):
    return cap * math.tanh(x / cap)


def attention(
    q,
    k,
    v,
    *,
    mask=None,
    causal=False,
    alignment="top_left",
    scale=None,
    cap=None,
    bias=None,
    window=None,
    fully_masked="zeros",
):
    """Output out[b][h][t][e]: scale, cap, + bias (bias[b][h][t][s] or None), mask, softmax, sum.

    mask[b][t][s] (shared by the heads); window = (left, right) or None. A row with no visible key
    gives zeros ("zeros") or NaN ("nan").
    """
    B, H, T, D = len(q), len(q[0]), len(q[0][0]), len(q[0][0][0])
    G, S, E = len(k[0]), len(k[0][0]), len(v[0][0][0])
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    out = []
    for b in range(B):
        out_b = []
        for h in range(H):
            g = h // (H // G)
            out_h = []
            for t in range(T):
                pq = query_position(t, T, S, alignment)
                logits, ok = [], []
                for s in range(S):
                    x = sum(q[b][h][t][d] * k[b][g][s][d] for d in range(D)) * scale
                    if cap is not None:
                        x = softcap(x, cap)
                    if bias is not None:
                        x += bias[b][h][t][s]
                    visible = True
                    if mask is not None and not mask[b][t][s]:
                        visible = False
                    if causal and s > pq:
                        visible = False
                    if window is not None and not window_visible(t, s, T, S, *window, alignment):
                        visible = False
                    logits.append(x)
                    ok.append(visible)
                chosen = [x for x, o in zip(logits, ok) if o]
                if not chosen:
                    fill = 0.0 if fully_masked == "zeros" else math.nan
                    out_h.append([fill] * E)
                    continue
                top = max(chosen)
                w = [math.exp(x - top) if o else 0.0 for x, o in zip(logits, ok)]
                total = sum(w)
                out_h.append([sum(w[s] / total * v[b][g][s][e] for s in range(S)) for e in range(E)])
            out_b.append(out_h)
        out.append(out_b)
    return out


def decode(q_new, k_cache, v_cache, k_new, v_new, cache_lengths=None, scale=None):
    """New token t of element b (at position L_b + t) sees cached keys j < L_b and new keys u <= t."""
    B, H, T_new, D = len(q_new), len(q_new[0]), len(q_new[0][0]), len(q_new[0][0][0])
    G = len(k_new[0])
    S_past = 0 if k_cache is None else len(k_cache[0][0])
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    out = []
    for b in range(B):
        L = S_past if cache_lengths is None else cache_lengths[b]
        keys = [] if k_cache is None else [[k_cache[b][g][j] for j in range(L)] for g in range(G)]
        vals = [] if v_cache is None else [[v_cache[b][g][j] for j in range(L)] for g in range(G)]
        if not keys:
            keys, vals = [[] for _ in range(G)], [[] for _ in range(G)]
        out_b = []
        for h in range(H):
            g = h // (H // G)
            out_h = []
            for t in range(T_new):
                ks = keys[g] + [k_new[b][g][u] for u in range(t + 1)]
                vs = vals[g] + [v_new[b][g][u] for u in range(t + 1)]
                logits = [sum(a * c for a, c in zip(q_new[b][h][t], key)) * scale for key in ks]
                top = max(logits)
                w = [math.exp(x - top) for x in logits]
                total = sum(w)
                out_h.append([sum(w[i] / total * vs[i][e] for i in range(len(vs))) for e in range(len(vs[0]))])
            out_b.append(out_h)
        out.append(out_b)
    return out
