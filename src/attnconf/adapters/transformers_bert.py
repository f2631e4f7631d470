"""transformers' BERT self-attention: `BertSelfAttention` and the output projection of `BertSelfOutput`.

A BERT layer's attention is `BertAttention`: `BertSelfAttention` (query/key/value `nn.Linear`, the
attention function of ``config._attn_implementation``) followed by `BertSelfOutput`, whose `dense`
`nn.Linear` is the output projection and whose LayerNorm and residual belong to the layer around
attention, not to attention. The adapter composes the two modules as a model port does (checkpoint
names ``attention.self.*`` and ``attention.output.dense.*``) and leaves the LayerNorm out. One
adapter per implementation: `transformers.BertSelfAttention[eager]`, `[sdpa]`, `[flex_attention]`.

Canonical -> BERT (E = hidden_size = H * D, D = hidden_size / num_attention_heads; no kv heads):

    self.query.weight    (E, E) = query_kernel  (E, H, D).reshape(E, E).T     bias (E,) = query_bias.reshape(E)
    self.key.weight      (E, E) = key_kernel    (E, H, D).reshape(E, E).T     bias (E,) = key_bias.reshape(E)
    self.value.weight    (E, E) = value_kernel  (E, H, D).reshape(E, E).T     bias (E,) = value_bias.reshape(E)
    output.dense.weight  (E, E) = output_kernel (H, D, E).reshape(E, E).T     bias (E,) = output_bias

Every `nn.Linear` of BERT has a bias: an absent canonical bias is loaded as zeros and left out again
of `round_trip_weights` and the gradients. Masks: BERT's encoder builds its mask with
`create_bidirectional_mask` (`_transformers_common.model_mask`): the additive `(B, 1, T, S)` float
mask (0 or the dtype's minimum) for eager, a boolean `(B, 1, T, S)` mask (or None when nothing is
masked) for sdpa, a `BlockMask` for flex_attention. BERT's encoder has no causal flag
(``causal=False``; its decoder mode is another configuration).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters import _transformers_common as common
from attnconf.contract import AttentionWeights, Capabilities

Array = np.ndarray[Any, Any]

API = "transformers.models.bert.modeling_bert.BertSelfAttention + BertSelfOutput.dense"


class BertSelfAttentionBase(common.TransformersAttention):
    """`BertSelfAttention` then `BertSelfOutput.dense`, built from a `BertConfig` (no download)."""

    api = API
    decoder = False

    @classmethod
    def _capabilities(cls) -> Capabilities:
        return common.capabilities(
            cls.implementation,
            causal=False,
            gqa=False,
            head_dim=False,
            eager_softmax_float32=False,
            notes="E_q = H * D_k (D = hidden_size / H); self-attention through forward, cross-attention through the "
            "module's projections and attention function; absent biases are zeros; no causal flag (encoder)",
        )

    def _key(self, w: AttentionWeights) -> tuple[Any, ...]:
        return (w.query_dim, w.num_heads)

    def _build(self, w: AttentionWeights, dropout: float) -> Any:
        t = common._torch.torch()
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertSelfAttention, BertSelfOutput

        config = BertConfig(
            hidden_size=w.query_dim,
            num_attention_heads=w.num_heads,
            attention_probs_dropout_prob=dropout,
            hidden_dropout_prob=0.0,
        )
        config._attn_implementation = self.implementation
        return t.nn.ModuleDict({"self": BertSelfAttention(config), "output": BertSelfOutput(config)})

    def to_native(self, w: AttentionWeights) -> dict[str, Array]:
        E, H, D = w.query_dim, w.num_heads, w.key_head_dim
        for name, what, got, want in [
            ("key_kernel", "H_kv = H (BERT has no kv heads)", w.num_kv_heads, H),
            ("value_kernel", "D_v = D_k (BERT shares the head width)", w.value_head_dim, D),
            ("query_kernel", f"H * D_k = E_q = {E} (BERT sets D = hidden_size / H)", H * D, E),
            ("output_kernel", f"E_out = E_q = {E} (the output is hidden_size wide)", w.output_dim, E),
            ("key_kernel", f"E_k = E_q = {E} (BERT's key layer takes hidden_size)", w.key_dim, E),
            ("value_kernel", f"E_v = E_q = {E} (BERT's value layer takes hidden_size)", w.value_dim, E),
        ]:
            common.require_equal(name, what, got, want, self.api)
        dt = w.query_kernel.dtype
        p = {f"self.{n}.weight": common.linear_weight(getattr(w, f"{n}_kernel")) for n in ("query", "key", "value")}
        p.update({f"self.{n}.bias": _bias(getattr(w, f"{n}_bias"), E, dt) for n in ("query", "key", "value")})
        p["output.dense.weight"] = common.output_weight(w.output_kernel)
        p["output.dense.bias"] = _bias(w.output_bias, E, dt)
        return p

    def from_native(self, p: dict[str, Array], w: AttentionWeights) -> AttentionWeights:
        E, H = w.query_dim, w.num_heads
        D = E // H
        out: dict[str, Array] = {
            f"{n}_kernel": p[f"self.{n}.weight"].T.reshape(E, H, D) for n in ("query", "key", "value")
        }
        out.update({f"{n}_bias": p[f"self.{n}.bias"].reshape(H, D) for n in ("query", "key", "value")})
        out["output_kernel"] = p["output.dense.weight"].T.reshape(H, D, E)
        out["output_bias"] = p["output.dense.bias"]
        return AttentionWeights(**out)

    def _attention_module(self, m: Any) -> Any:
        return m["self"]

    def _forward(self, m: Any, x: Any, mask: Any, **kwargs: Any) -> tuple[Any, Any]:
        context, weights = m["self"](x, attention_mask=mask, **kwargs)
        return m["output"].dense(context), weights

    def _project(self, m: Any, q: Any, k: Any, v: Any) -> tuple[Any, Any, Any]:
        a = m["self"]
        D = a.attention_head_size
        return common.heads(a.query(q), D), common.heads(a.key(k), D), common.heads(a.value(v), D)

    def _finish(self, m: Any, context: Any) -> Any:
        return m["output"].dense(context)


def _bias(b: Array | None, E: int, dtype: Any) -> Array:
    return np.zeros(E, dtype) if b is None else np.asarray(b).reshape(E)


class BertSelfAttentionEager(BertSelfAttentionBase):
    name = "transformers.BertSelfAttention[eager]"
    implementation = "eager"


class BertSelfAttentionSdpa(BertSelfAttentionBase):
    name = "transformers.BertSelfAttention[sdpa]"
    implementation = "sdpa"


class BertSelfAttentionFlex(common.FlexMixin, BertSelfAttentionBase):
    name = "transformers.BertSelfAttention[flex_attention]"
    implementation = "flex_attention"
