"""Fixed, seeded inputs for the audit, built so that any layer's attention weights can be read off its output.

The one-hot probe, with H query heads, H_kv key/value heads, S keys and model width E = H * S:

    value input   (B, S, E)       value[b, j] = e_j (unit vector j; channels S.. are zero)
    value_kernel  (E, H_kv, S)    value_kernel[j, g, j] = 1: every kv head's value j is e_j
    value_bias    (H_kv, S)       zeros
    output_kernel (H, S, E)       output_kernel[h, j, h * S + j] = 1: head h lands in its own channels
    output_bias   (E,)            a constant c

so ``output[b, t, h * S + j] = weights[b, h, t, j] + c`` exactly (products by 1, sums of zeros):
`Probe.effective` recovers the effective attention weights `(B, H, T, S)` of any adapter, whether or
not it returns weights. Query and key are random (seeded, logits O(1)) with random kernels, or, for the
``exact`` probes, small integers with block-identity kernels (``q[b, h, t, d] = query[b, t, h * S + d]``)
so that every logit is exactly representable in the precision under test.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnconf.contract import AttentionInputs, AttentionWeights
from attnconf.reference.attention import project_heads, scaled_dot_product_attention

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Probe:
    """Inputs and weights in float64 (values already representable in `dtype`), and how they were made."""

    name: str
    inputs: AttentionInputs
    weights: AttentionWeights
    dtype: str
    output_bias: float
    recipe: dict[str, Any]

    @property
    def B(self) -> int:
        return int(self.inputs.query.shape[0])

    @property
    def T(self) -> int:
        return int(self.inputs.query.shape[1])

    @property
    def S(self) -> int:
        return int(self.inputs.key.shape[1])

    @property
    def H(self) -> int:
        return self.weights.num_heads

    def cast(self) -> tuple[AttentionInputs, AttentionWeights]:
        """Inputs and weights rounded to the probe's dtype, as the adapter receives them."""
        return self.inputs.astype(self.dtype), self.weights.astype(self.dtype)

    def with_inputs(self, name: str, **changes: Any) -> Probe:
        """The same probe with some `AttentionInputs` fields replaced (mask, causal, scale, arrays)."""
        recipe = {**self.recipe, **{k: _describe(v) for k, v in changes.items()}}
        return dataclasses.replace(self, name=name, inputs=dataclasses.replace(self.inputs, **changes), recipe=recipe)

    def effective(self, output: Array) -> Array:
        """Effective attention weights `(B, H, T, S)` from a layer output `(B, T, E)` (channels H * S.. unused)."""
        out = np.asarray(output, dtype=np.float64)[..., : self.H * self.S] - self.output_bias
        return np.asarray(out.reshape(self.B, self.T, self.H, self.S).transpose(0, 2, 1, 3))

    # -- the reference on this probe ------------------------------------------------------

    def heads(self) -> tuple[Array, Array, Array]:
        """Projected q `(B, H, T, S)`, k and v `(B, H_kv, S, S)` in float64 from the rounded inputs."""
        x, w = self.cast()
        q = project_heads(_f64(x.query), _f64(w.query_kernel), _f64o(w.query_bias), "float64")
        k = project_heads(_f64(x.key), _f64(w.key_kernel), _f64o(w.key_bias), "float64")
        v = project_heads(_f64(x.value), _f64(w.value_kernel), _f64o(w.value_bias), "float64")
        return q, k, v

    def logits(self) -> Array:
        """Unscaled logits ``q . k`` `(B, H, T, S)` in float64 (kv heads grouped as in the spec)."""
        q, k, _ = self.heads()
        k = np.repeat(k, self.H // k.shape[1], axis=1)
        return np.asarray(np.einsum("bhtd,bhsd->bhts", q, k))

    def reference(
        self, *, mask: Array | None | str = "inputs", bias: Array | None = None, causal: bool | None = None,
        alignment: str = "top_left", fully_masked: str = "zeros", scale: float | None | str = "inputs",
        kv_heads: list[int] | None = None, dtype: str = "float64",
    ) -> Array:
        """Reference weights `(B, H, T, S)`; mask/causal/scale default to the probe's inputs.

        `mask` `(B, T, S)` bool; `bias` `(B, T, S)` additive; `kv_heads[h]` names the kv head that
        query head h reads (default: the spec's grouping); `dtype` evaluates in that precision.
        """
        q, k, v = self.heads()
        m = self.inputs.mask if isinstance(mask, str) else mask
        c = self.inputs.causal if causal is None else causal
        s = self.inputs.scale if isinstance(scale, str) else scale
        if kv_heads is not None:
            k, v = k[:, kv_heads], v[:, kv_heads]
        _, weights = scaled_dot_product_attention(  # type: ignore[call-overload]
            q, k, v, mask=None if m is None else np.asarray(m)[:, None],
            bias=None if bias is None else np.asarray(bias, dtype=np.float64)[:, None],
            causal=c, alignment=alignment, scale=s, return_weights=True, fully_masked=fully_masked, dtype=dtype,
        )
        return np.asarray(weights, dtype=np.float64)


def _f64(a: Array) -> Array:
    return np.asarray(a, dtype=np.float64)


def _f64o(a: Array | None) -> Array | None:
    return None if a is None else _f64(a)


def _describe(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return f"array{tuple(v.shape)} {v.dtype}"
    return v


def onehot(
    name: str, seed: int, *, B: int = 2, H: int = 2, H_kv: int | None = None, T: int = 4, S: int = 6,
    dtype: str = "float32", exact: bool = False, output_bias: float = 0.5,
) -> Probe:
    """The one-hot probe (module docstring). `exact`: integer query/key with block-identity kernels.

    Shapes: query `(B, T, E)`, key `(B, S, E)`, value `(B, S, E)` with E = H * S, D_k = D_v = S.
    """
    H_kv = H if H_kv is None else H_kv
    E, D = H * S, S
    rng = np.random.default_rng(seed)
    if exact:
        # Entries in {-1, 0, 1}: every logit is a small integer times 1/sqrt(D).
        query = rng.choice([-1.0, 0.0, 0.0, 1.0], size=(B, T, E))
        key = rng.choice([-1.0, 0.0, 0.0, 1.0], size=(B, S, E))
        wq = np.zeros((E, H, D))
        wk = np.zeros((E, H_kv, D))
        for h in range(H):
            wq[h * S:(h + 1) * S, h, :] = np.eye(S)
        for g in range(H_kv):
            wk[g * S:(g + 1) * S, g, :] = np.eye(S)
        bq, bk = np.zeros((H, D)), np.zeros((H_kv, D))
    else:
        query = rng.standard_normal((B, T, E))
        key = rng.standard_normal((B, S, E))
        wq = rng.standard_normal((E, H, D)) / math.sqrt(E)
        wk = rng.standard_normal((E, H_kv, D)) / math.sqrt(E)
        bq = rng.standard_normal((H, D)) * 0.25
        bk = rng.standard_normal((H_kv, D)) * 0.25
    value = np.zeros((B, S, E))
    value[:, np.arange(S), np.arange(S)] = 1.0
    wv = np.zeros((E, H_kv, D))
    wv[np.arange(S), :, np.arange(S)] = 1.0
    wo = np.zeros((H, D, E))
    for h in range(H):
        wo[h, np.arange(S), h * S + np.arange(S)] = 1.0
    weights = AttentionWeights(
        query_kernel=wq, key_kernel=wk, value_kernel=wv, output_kernel=wo,
        query_bias=bq, key_bias=bk, value_bias=np.zeros((H_kv, D)), output_bias=np.full(E, output_bias),
    )
    inputs = AttentionInputs(query=query, key=key, value=value)
    recipe = {"probe": "onehot", "seed": seed, "B": B, "H": H, "H_kv": H_kv, "T": T, "S": S, "E": E,
              "D_k": D, "D_v": D, "dtype": dtype, "exact": exact, "output_bias": output_bias}
    probe = Probe(name, inputs, weights, dtype, output_bias, recipe)
    x, w = probe.cast()  # the float64 arrays must already be representable in dtype
    return dataclasses.replace(
        probe, inputs=dataclasses.replace(inputs, query=_f64(x.query), key=_f64(x.key), value=_f64(x.value)),
        weights=AttentionWeights(**{n: _f64(a) for n, a in w.arrays().items()}),
    )


def large_logits(name: str, seed: int, *, dtype: str, base: float, B: int = 2, H: int = 2, T: int = 4,
                 S: int = 16) -> Probe:
    """The exact one-hot probe (D = S = 16, so the scale is exactly 1/4) with logits near ``±base``.

    In every head, query row t is ``c_t * e_0`` with c_t in {4, -4, 2, -2} and key j is
    ``(base + step_j) * e_0``, the steps multiples of ``max(spacing of dtype at base, 1/2)``: every
    logit ``c_t / 4 * (base + step_j)`` is exact in `dtype`, and a softmax that does not subtract the
    row maximum overflows. Same shapes as `onehot(..., S=16)`, so adapters reuse their compiled layer.
    """
    probe = onehot(name, seed, B=B, H=H, T=T, S=S, dtype=dtype, exact=True, output_bias=0.0)
    rng = np.random.default_rng(seed)
    if dtype == "bfloat16":
        spacing = 2.0 ** (math.floor(math.log2(base)) - 7)
    else:
        spacing = float(np.spacing(np.asarray(base, dtype=np.float16 if dtype == "float16" else np.float32)))
    step = max(spacing, 0.5)
    query = np.zeros_like(probe.inputs.query)
    key = np.zeros_like(probe.inputs.key)
    for h in range(H):
        query[:, :, h * S] = np.resize([4.0, -4.0, 2.0, -2.0], T)
        key[:, :, h * S] = base + step * rng.integers(-3, 4, size=(B, S))
    recipe = {**probe.recipe, "probe": "large_logits", "base": base, "step": step}
    return dataclasses.replace(probe, inputs=dataclasses.replace(probe.inputs, query=query, key=key), recipe=recipe)
