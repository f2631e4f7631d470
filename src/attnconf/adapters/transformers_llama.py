"""transformers' `LlamaAttention`: grouped kv heads, one bias switch, rotary embedding set to the identity.

The module is built from a `LlamaConfig` (hidden_size = E_q, num_attention_heads = H,
num_key_value_heads = H_kv, head_dim = D, attention_bias = whether the four projections have biases)
with no download. One adapter per implementation: `transformers.LlamaAttention[eager]`, `[sdpa]`,
`[flex_attention]`.

Canonical -> LLaMA (D = head_dim, free of E_q / H; E_out = hidden_size = E_q):

    self_attn.q_proj.weight (H * D, E)    = query_kernel  (E, H, D).reshape(E, H * D).T
    self_attn.k_proj.weight (H_kv * D, E) = key_kernel    (E, H_kv, D).reshape(E, H_kv * D).T
    self_attn.v_proj.weight (H_kv * D, E) = value_kernel  (E, H_kv, D).reshape(E, H_kv * D).T
    self_attn.o_proj.weight (E, H * D)    = output_kernel (H, D, E).reshape(H * D, E).T
    biases (attention_bias=True): (H * D,), (H_kv * D,), (H_kv * D,), (E,), the heads flattened

Query head h reads kv head ``h // (H // H_kv)`` (`repeat_kv`, torch's `repeat_interleave`), as the
spec. `attention_bias` is one switch: all four biases or none (a partial set raises `ValueError`).

Rotary embedding: `LlamaAttention.forward` takes `position_embeddings=(cos, sin)` from the model's
`LlamaRotaryEmbedding`; the adapter passes cos = 1 and sin = 0, `(B, N, D)`, which makes
`apply_rotary_pos_emb` the identity (``q * 1 + rotate_half(q) * 0``), so the module computes plain
attention; the rotary conventions themselves are a separate topic (positions).

Masks, as `LlamaModel` builds them (`_transformers_common.model_mask`): `create_causal_mask` with no
cache and a 2-D mask `(B, S)` (the key padding mask, or all True) that gives it the keys' length S;
a mask that differs between queries is added with ``and_mask_function``. Causal: the causal mask
function ``kv_idx <= q_idx`` with no cache offset, i.e. top-left when T != S (the cache offset that
makes decoding bottom-right in a model is a cache's, not this call's). Not causal: the same builder
on a config with ``is_causal=False``, transformers' documented switch for running a decoder
bidirectionally (https://github.com/huggingface/transformers/pull/43705); as `LlamaModel` does
(`merge_with_config_defaults`, utils/generic.py), ``is_causal`` also reaches the attention function as
a keyword, which sdpa reads when the mask builder left no mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnconf.adapters import _transformers_common as common
from attnconf.adapters.support import one_bias_switch
from attnconf.contract import AttentionWeights, Capabilities

Array = np.ndarray[Any, Any]

API = "transformers.models.llama.modeling_llama.LlamaAttention"
_PROJ = (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"))


class LlamaAttentionBase(common.TransformersAttention):
    """`LlamaAttention` built from a `LlamaConfig`, its rotary embedding the identity."""

    api = API
    decoder = True

    @classmethod
    def _capabilities(cls) -> Capabilities:
        return common.capabilities(
            cls.implementation,
            causal=True,
            gqa=True,
            head_dim=True,
            eager_softmax_float32=True,
            notes="grouped kv heads; head_dim free; rotary embedding the identity (cos=1, sin=0); biases all or none "
            "(attention_bias); self-attention through forward, cross-attention through the module's "
            "projections and attention function; causal top-left (no cache offset)",
        )

    def _key(self, w: AttentionWeights) -> tuple[Any, ...]:
        return (w.query_dim, w.num_heads, w.num_kv_heads, w.key_head_dim, w.has_bias)

    def _build(self, w: AttentionWeights, dropout: float) -> Any:
        t = common._torch.torch()
        from transformers import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaAttention

        config = LlamaConfig(
            hidden_size=w.query_dim,
            num_attention_heads=w.num_heads,
            num_key_value_heads=w.num_kv_heads,
            head_dim=w.key_head_dim,
            attention_bias=one_bias_switch(w, self.api, "attention_bias"),
            attention_dropout=dropout,
        )
        config._attn_implementation = self.implementation
        return t.nn.ModuleDict({"self_attn": LlamaAttention(config, layer_idx=0)})

    def to_native(self, w: AttentionWeights) -> dict[str, Array]:
        E, D = w.query_dim, w.key_head_dim
        for name, what, got, want in [
            ("value_kernel", "D_v = D_k (LLaMA shares head_dim)", w.value_head_dim, D),
            ("output_kernel", f"E_out = E_q = {E} (o_proj returns hidden_size)", w.output_dim, E),
            ("key_kernel", f"E_k = E_q = {E} (k_proj takes hidden_size)", w.key_dim, E),
            ("value_kernel", f"E_v = E_q = {E} (v_proj takes hidden_size)", w.value_dim, E),
        ]:
            common.require_equal(name, what, got, want, self.api)
        p = {f"self_attn.{proj}.weight": common.linear_weight(getattr(w, f"{n}_kernel")) for proj, n in _PROJ}
        p["self_attn.o_proj.weight"] = common.output_weight(w.output_kernel)
        if one_bias_switch(w, self.api, "attention_bias"):
            p.update({f"self_attn.{proj}.bias": np.asarray(getattr(w, f"{n}_bias")).reshape(-1) for proj, n in _PROJ})
            p["self_attn.o_proj.bias"] = np.asarray(w.output_bias)
        return p

    def from_native(self, p: dict[str, Array], w: AttentionWeights) -> AttentionWeights:
        E, H, H_kv, D = w.query_dim, w.num_heads, w.num_kv_heads, w.key_head_dim
        heads = {"query": H, "key": H_kv, "value": H_kv}
        out: dict[str, Array] = {
            f"{n}_kernel": p[f"self_attn.{proj}.weight"].T.reshape(E, heads[n], D) for proj, n in _PROJ
        }
        out["output_kernel"] = p["self_attn.o_proj.weight"].T.reshape(H, D, E)
        if "self_attn.o_proj.bias" in p:
            out.update({f"{n}_bias": p[f"self_attn.{proj}.bias"].reshape(heads[n], D) for proj, n in _PROJ})
            out["output_bias"] = p["self_attn.o_proj.bias"]
        return AttentionWeights(**out)

    def _attention_module(self, m: Any) -> Any:
        return m["self_attn"]

    @staticmethod
    def _identity_rotary(x: Any, head_dim: int) -> tuple[Any, Any]:
        """(cos, sin) `(B, N, D)` = (1, 0): `apply_rotary_pos_emb` leaves q and k as they are."""
        t = common._torch.torch()
        shape = (x.shape[0], x.shape[1], head_dim)
        return t.ones(shape, dtype=x.dtype), t.zeros(shape, dtype=x.dtype)

    def _forward(self, m: Any, x: Any, mask: Any, **kwargs: Any) -> tuple[Any, Any]:
        a = m["self_attn"]
        return a(x, position_embeddings=self._identity_rotary(x, a.head_dim), attention_mask=mask, **kwargs)

    def _project(self, m: Any, q: Any, k: Any, v: Any) -> tuple[Any, Any, Any]:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        a = m["self_attn"]
        D = a.head_dim
        qh, kh, vh = common.heads(a.q_proj(q), D), common.heads(a.k_proj(k), D), common.heads(a.v_proj(v), D)
        qh, _ = apply_rotary_pos_emb(qh, qh, *self._identity_rotary(q, D))  # as forward does, on each length
        _, kh = apply_rotary_pos_emb(kh, kh, *self._identity_rotary(k, D))
        return qh, kh, vh

    def _finish(self, m: Any, context: Any) -> Any:
        return m["self_attn"].o_proj(context)


class LlamaAttentionEager(LlamaAttentionBase):
    name = "transformers.LlamaAttention[eager]"
    implementation = "eager"


class LlamaAttentionSdpa(LlamaAttentionBase):
    name = "transformers.LlamaAttention[sdpa]"
    implementation = "sdpa"


class LlamaAttentionFlex(common.FlexMixin, LlamaAttentionBase):
    name = "transformers.LlamaAttention[flex_attention]"
    implementation = "flex_attention"
