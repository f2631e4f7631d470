"""Adapters with known behaviour, for the audit's own tests (tests/test_audit.py).

Each is the NumPy reference with chosen conventions: a fully-masked-row policy, a causal alignment
(which may differ from the one it declares), a native mask polarity, how it reads float masks, how
it returns weights, its default scale, grouped-query mapping and dropout. The audit must report
exactly these, which proves its outcomes are measured. Others crash, hang, fail to load, break the
contract, or carry HTML in their name and messages.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from waiting import mark_hang_started

from attnconf.adapters.base import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.contract import CONVENTIONS
from attnconf.reference import (
    alibi_bias,
    lengths_to_mask,
    multi_head_attention_vjp,
    output_projection,
    project_heads,
    rotary_embedding,
    scaled_dot_product_attention,
)

Array = np.ndarray[Any, Any]
CAPS = Capabilities(level="layer", gqa=True, kdim_vdim=True, value_dim=True, output_dim=True, custom_scale=True)


class Conventions:
    """A layer on the reference with configurable conventions (class attributes)."""

    name = "faulty.conventions"
    framework = "faulty"
    api = "tests.audit_faulty"
    capabilities = CAPS
    process_group: str | None = None
    environment: dict[str, str] = {}
    policy = "zeros"  # fully masked rows
    alignment = "top_left"  # causal, whatever capabilities.causal_alignment says
    native_bool = "true_attends"  # or "true_masks"
    native_float = "added"  # or "keep" (non-zero entries may attend)
    weights_mode = "per_head"  # or "averaged" or "none"
    scale_power = 0.5  # default scale D_k ** -scale_power
    kv_map = "consecutive"  # or "interleaved"
    dropout_in_inference = False

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def _layer(self, x: AttentionInputs, w: AttentionWeights, dtype: str, mask: Array | None,
               bias: Array | None = None) -> AttentionOutputs:
        q = project_heads(x.query, w.query_kernel, w.query_bias, dtype)
        k = project_heads(x.key, w.key_kernel, w.key_bias, dtype)
        v = project_heads(x.value, w.value_kernel, w.value_bias, dtype)
        H, H_kv = q.shape[1], k.shape[1]
        heads = [h // (H // H_kv) if self.kv_map == "consecutive" else h % H_kv for h in range(H)]
        k, v = k[:, heads], v[:, heads]
        scale = x.scale if x.scale is not None else q.shape[-1] ** -self.scale_power
        out, weights = scaled_dot_product_attention(
            q, k, v, mask=None if mask is None else mask[:, None], bias=None if bias is None else bias[:, None],
            causal=x.causal, alignment=self.alignment, scale=scale, return_weights=True,  # type: ignore[arg-type]
            fully_masked=self.policy, dtype=dtype,  # type: ignore[arg-type]
        )
        y = output_projection(out, w.output_kernel, w.output_bias, dtype)
        if self.weights_mode == "none":
            return AttentionOutputs(y, None)
        if self.weights_mode == "averaged":
            weights = np.broadcast_to(weights.mean(axis=1, keepdims=True), weights.shape).copy()
        return AttentionOutputs(y, weights)

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        return self._layer(inputs, weights, dtype, inputs.mask)

    def native_mask_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                              native_mask: Array) -> AttentionOutputs:
        m = np.asarray(native_mask)
        if m.dtype == np.bool_:
            return self._layer(inputs, weights, dtype, ~m if self.native_bool == "true_masks" else m)
        if self.native_float == "keep":
            return self._layer(inputs, weights, dtype, m != 0)
        return self._layer(inputs, weights, dtype, None, bias=m.astype(np.float64))

    def with_dropout(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                     rate: float) -> AttentionOutputs:
        out = self.multi_head_attention(inputs, weights, dtype)
        if not self.dropout_in_inference:
            return out
        keep = np.random.default_rng(0).random(out.output.shape) >= rate
        return AttentionOutputs(np.where(keep, out.output / (1 - rate), 0.0), out.weights)


class NanBottomRight(Conventions):
    """NaN rows, bottom-right causal while declaring top-left, True masks, averaged weights."""

    name = "faulty.nan_bottom_right"
    policy = "nan"
    alignment = "bottom_right"
    native_bool = "true_masks"
    weights_mode = "averaged"
    dropout_in_inference = True


class UniformTopLeft(Conventions):
    """Uniform rows, top-left causal, float masks read as keep-masks, interleaved kv heads, no weights."""

    name = "faulty.uniform_top_left"
    capabilities = Capabilities(level="layer", gqa=True, kdim_vdim=True, value_dim=True, output_dim=True,
                                custom_scale=True, causal_alignment="bottom_right")
    policy = "uniform"
    native_float = "keep"
    kv_map = "interleaved"
    weights_mode = "none"


class FiniteFill(Conventions):
    """Masks by adding a finite -1e9 to the masked logits (in the compute precision), as many layers do:
    in float32 a fully masked row's logits all round to -1e9 (uniform); in float16 the fill overflows
    to -inf (no finite logit: zeros); in float64 the logits keep their differences, and the row attends
    as if unmasked."""

    name = "faulty.finite_fill"

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        bias = None if inputs.mask is None else np.where(inputs.mask, 0.0, -1e9)
        return self._layer(inputs, weights, dtype, None, bias=bias)


class DecodeFlip(Conventions):
    """Top-left causal, except bottom-right when T = 1 (a decode fast path that flips the diagonal)."""

    name = "faulty.decode_flip"

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        self.alignment = "bottom_right" if inputs.query.shape[1] == 1 else "top_left"
        return self._layer(inputs, weights, dtype, inputs.mask)


class ScaledTwice(Conventions):
    """Zero rows and a default scale of 1/D_k (the 1/sqrt(D_k) applied twice)."""

    name = "faulty.scaled_twice"
    scale_power = 1.0


class PathPlain(Conventions):
    name = "faulty.path"


class PathSame(Conventions):
    name = "faulty.path[same]"


class PathNan(Conventions):
    name = "faulty.path[nan]"
    policy = "nan"


class PathNoHalf(Conventions):
    """Raises for float16 where its sibling runs."""

    name = "faulty.path[nohalf]"

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        if dtype == "float16":
            raise TypeError("float16 is not implemented on this path")
        return super().multi_head_attention(inputs, weights, dtype)


class GradUniform(Conventions):
    """Uniform rows, and the reference's gradients for them."""

    name = "faulty.grad_uniform"
    policy = "uniform"

    def multi_head_attention_vjp(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                                 cotangent: Array) -> dict[str, Array]:
        return multi_head_attention_vjp(inputs, weights, cotangent, fully_masked=self.policy, dtype=dtype)


class GradTwice(GradUniform):
    """Gradients twice what its forward pass implies."""

    name = "faulty.grad_twice"

    def multi_head_attention_vjp(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                                 cotangent: Array) -> dict[str, Array]:
        grads = super().multi_head_attention_vjp(inputs, weights, dtype, cotangent)
        return {name: 2 * g for name, g in grads.items()}


class Evil(Conventions):
    """HTML everywhere an adapter can put text."""

    name = "<script>alert(1)</script>"
    framework = "<b>evil</b>"
    api = "<img src=x onerror=alert(3)>"

    def versions(self) -> dict[str, str]:
        return {"<i>numpy</i>": "1.0<script>alert(4)</script>"}

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        raise ValueError("<img src=x onerror=alert(2)> & <b>not bold</b> | `code` *star*")


class DeclaresLimits(Conventions):
    """Declares what it cannot do and does as declared: no returned weights, float16 refused (its
    declared limit), native masks refused with NotImplementedError; a ValueError on T = 1 is a crash."""

    name = "faulty.declares_limits"
    capabilities = Capabilities(level="layer", gqa=True, kdim_vdim=True, value_dim=True, output_dim=True,
                                custom_scale=True, returns_weights=False,
                                dtypes=frozenset({"float64", "float32", "bfloat16"}),
                                limits=(("float16", "raises 'F16 unsupported' in every call (declared)"),
                                        ("returns_weights", "the fused kernel keeps no weights (declared)")))
    weights_mode = "none"

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        if dtype == "float16":
            raise TypeError("F16 unsupported")
        if np.shape(inputs.query)[1] == 1:
            raise ValueError("an undocumented failure at T = 1")
        return super().multi_head_attention(inputs, weights, dtype)

    def native_mask_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                              native_mask: Array) -> AttentionOutputs:
        raise NotImplementedError("native masks are not wired in this adapter")


def _is_causal(inputs: AttentionInputs) -> bool:
    return bool(inputs.causal)


class Aborts(Conventions):
    """os.abort() (SIGABRT) when called with causal=True; must run in a worker."""

    name = "faulty.aborts"
    process_group = "audit-faulty-aborts"

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        if _is_causal(inputs):
            os.abort()
        return super().multi_head_attention(inputs, weights, dtype)


class Hangs(Conventions):
    """Sleeps for an hour when called with causal=True; must run in a worker with a short timeout."""

    name = "faulty.hangs"
    process_group = "audit-faulty-hangs"

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        if _is_causal(inputs):
            mark_hang_started()
            time.sleep(3600)
        return super().multi_head_attention(inputs, weights, dtype)


class FailsToLoad(Conventions):
    """Raises when instantiated (as an adapter whose framework import fails at construction)."""

    name = "faulty.fails_to_load"

    def __init__(self) -> None:
        raise RuntimeError("framework import failed: libfoo.so not found")


class WrongShape(Conventions):
    """Returns one query row too many."""

    name = "faulty.wrong_shape"

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        out = super().multi_head_attention(inputs, weights, dtype)
        return AttentionOutputs(np.concatenate([out.output, out.output[:, :1]], axis=1), None)


class SpecConventions(Conventions):
    """The conventions of docs/spec.md section 13, on the reference; the subclasses below change one
    setting each where the class attributes say (asked layout -> computed layout, positions, decode
    alignment, window widening, cap placement, ALiBi form, padded query rows)."""

    name = "faulty.spec_conventions"
    capabilities = Capabilities(level="layer", gqa=True, kdim_vdim=True, value_dim=True, output_dim=True,
                                custom_scale=True, conventions=frozenset(CONVENTIONS), kv_cache=True,
                                rotary_layouts=frozenset({"half", "interleaved"}))
    rotary_map: dict[str, str] = {}  # asked layout -> the layout computed
    rotary_ignores_positions = False
    decode = "bottom_right"  # or "top_left", "unmasked"
    window_widen = 0  # added to the left bound; None: the window is ignored
    softcap_order = "after"  # or "before", "ignored"
    alibi_form = "spec"  # or "symmetric", "sign_flipped", "geometric"
    padded = "zeros"  # padded query rows: "zeros", "nan", "uniform" or "key_padding_only"

    def rotary_embedding(self, x: Array, positions: Array, dtype: str, *, layout: str, rotary_dim: int | None = None,
                         theta: float = 10000.0) -> Array:
        pos = np.asarray(positions)
        if self.rotary_ignores_positions:
            pos = np.broadcast_to(np.arange(pos.shape[-1]), pos.shape)
        return rotary_embedding(x, pos, layout=self.rotary_map.get(layout, layout),  # type: ignore[arg-type]
                                rotary_dim=rotary_dim, theta=theta, dtype=dtype)

    def decode_step(self, q_new: Array, k_cache: Array, v_cache: Array, k_new: Array, v_new: Array, dtype: str, *,
                    scale: float | None = None, cache_lengths: Array | None = None) -> Array:
        k = np.concatenate([k_cache, k_new], axis=2)
        v = np.concatenate([v_cache, v_new], axis=2)
        return scaled_dot_product_attention(q_new, k, v, causal=self.decode != "unmasked", scale=scale,  # type: ignore[no-any-return]
                                            alignment="top_left" if self.decode == "top_left" else "bottom_right",
                                            dtype=dtype)

    def convention_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                             scale: float | None, dtype: str, *, window: Any = None, logit_softcap: float | None = None,
                             alibi_slopes: Array | None = None, query_lengths: Array | None = None,
                             key_lengths: Array | None = None) -> Array:
        H, T, S = q.shape[1], q.shape[2], k.shape[2]
        alignment = self.capabilities.causal_alignment or "top_left"
        kw: dict[str, Any] = {}
        if window is not None and self.window_widen is not None:
            kw["window"] = (None if window[0] is None else window[0] + self.window_widen, window[1])
        if logit_softcap is not None and self.softcap_order != "ignored":
            s = q.shape[-1] ** -0.5 if scale is None else scale
            # the cap c before the scale s, s * c * tanh(qk / c), is the cap s * c after it
            kw["logit_softcap"] = logit_softcap * (s if self.softcap_order == "before" else 1.0)
        bias = None
        if alibi_slopes is not None:
            slopes = np.exp2(-8.0 * np.arange(1, H + 1) / H) if self.alibi_form == "geometric" else alibi_slopes
            bias = alibi_bias(H, T, S, alignment=alignment, slopes=slopes, symmetric=self.alibi_form == "symmetric")
            bias = (-bias if self.alibi_form == "sign_flipped" else bias)[None]
        if query_lengths is not None:
            q_lens = np.full_like(query_lengths, T) if self.padded == "key_padding_only" else query_lengths
            lengths = lengths_to_mask(q_lens, key_lengths, T, S)[:, None]
            mask = lengths if mask is None else mask & lengths
        policy = self.padded if self.padded in ("zeros", "nan", "uniform") else "zeros"
        return scaled_dot_product_attention(q, k, v, mask=mask, bias=bias, causal=causal, alignment=alignment,  # type: ignore[no-any-return]
                                            scale=scale, fully_masked=policy, dtype=dtype, **kw)  # type: ignore[arg-type]


class ConventionsSwapped(SpecConventions):
    """The other rotary layout, positions from 0, a decode step aligned top-left, a window one wider,
    the cap before the scale, symmetric ALiBi, NaN in padded query rows."""

    name = "faulty.conventions_swapped"
    rotary_map = {"half": "interleaved", "interleaved": "half"}
    rotary_ignores_positions = True
    decode = "top_left"
    window_widen = 1
    softcap_order = "before"
    alibi_form = "symmetric"
    padded = "nan"


class ConventionsHalfOnly(SpecConventions):
    """Rotate-half whatever layout is asked, an unmasked decode step, a window one narrower, the cap
    ignored, ALiBi with the sign flipped, uniform padded query rows."""

    name = "faulty.conventions_half_only"
    rotary_map = {"interleaved": "half"}
    decode = "unmasked"
    window_widen = -1
    softcap_order = "ignored"
    alibi_form = "sign_flipped"
    padded = "uniform"


class ConventionsPartial(SpecConventions):
    """Declares only the rotate-half layout and no KV cache; ignores the window, uses the geometric
    slopes 2**(-8k/H) for every head count, and lets padded query rows attend like real ones."""

    name = "faulty.conventions_partial"
    capabilities = Capabilities(level="layer", gqa=True, kdim_vdim=True, value_dim=True, output_dim=True,
                                custom_scale=True, conventions=frozenset(CONVENTIONS),
                                rotary_layouts=frozenset({"half"}))
    window_widen = None
    alibi_form = "geometric"
    padded = "key_padding_only"


class ConventionsNoise(SpecConventions):
    """Seeded noise of the right shape from every convention method."""

    name = "faulty.conventions_noise"

    def rotary_embedding(self, x: Array, positions: Array, dtype: str, **kw: Any) -> Array:
        return np.random.default_rng(1).random(np.shape(x))

    def decode_step(self, q_new: Array, k_cache: Array, v_cache: Array, k_new: Array, v_new: Array, dtype: str,
                    **kw: Any) -> Array:
        return np.random.default_rng(2).random((*np.shape(q_new)[:3], np.shape(v_new)[-1]))

    def convention_attention(self, q: Array, k: Array, v: Array, *args: Any, **kw: Any) -> Array:
        return np.random.default_rng(3).random((*np.shape(q)[:3], np.shape(v)[-1]))


class RotaryOnly:
    """A rotary embedding only (level "rotary"), on the reference: no attention method at all."""

    name = "faulty.rotary_only"
    framework = "faulty"
    api = "tests.audit_faulty"
    capabilities = Capabilities(level="rotary", rotary_layouts=frozenset({"interleaved"}))

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def rotary_embedding(self, x: Array, positions: Array, dtype: str, *, layout: str, rotary_dim: int | None = None,
                         theta: float = 10000.0) -> Array:
        return rotary_embedding(x, positions, layout=layout, theta=theta, dtype=dtype)  # type: ignore[arg-type]


EXPECTED_CONVENTIONS = {
    # adapter class: convention scenario -> the outcome its conventions must produce
    "SpecConventions": {
        "rotary_layout.half": "half", "rotary_layout.interleaved": "interleaved", "rotary_offset": "offset_ok",
        "decode_alignment": "bottom_right", "window_bounds": "inclusive", "softcap_placement": "after_scale",
        "alibi_slopes": "spec", "ragged_padded_rows": "zeros",
    },
    "ConventionsSwapped": {
        "rotary_layout.half": "interleaved", "rotary_layout.interleaved": "half", "rotary_offset": "offset_ignored",
        "decode_alignment": "top_left", "window_bounds": "one_wider", "softcap_placement": "before_scale",
        "alibi_slopes": "symmetric", "ragged_padded_rows": "nan",
    },
    "ConventionsHalfOnly": {
        "rotary_layout.half": "half", "rotary_layout.interleaved": "half", "rotary_offset": "offset_ok",
        "decode_alignment": "unmasked", "window_bounds": "exclusive", "softcap_placement": "ignored",
        "alibi_slopes": "sign_flipped", "ragged_padded_rows": "uniform",
    },
    "ConventionsPartial": {
        "rotary_layout.half": "half", "rotary_layout.interleaved": "unsupported", "rotary_offset": "offset_ok",
        "decode_alignment": "unsupported", "window_bounds": "ignored", "softcap_placement": "after_scale",
        "alibi_slopes": "geometric_slopes", "ragged_padded_rows": "key_padding_only",
    },
    "ConventionsNoise": {
        "rotary_layout.half": "other", "rotary_layout.interleaved": "other", "rotary_offset": "other",
        "decode_alignment": "other", "window_bounds": "other", "softcap_placement": "other",
        "alibi_slopes": "other", "ragged_padded_rows": "other",
    },
    # declares none of the conventions: every scenario is skipped, with the reason
    "Conventions": dict.fromkeys(("rotary_layout.half", "rotary_layout.interleaved", "rotary_offset",
                                  "decode_alignment", "window_bounds", "softcap_placement", "alibi_slopes",
                                  "ragged_padded_rows"), "unsupported"),
}

EXPECTED = {
    # adapter class: scenario -> the outcome its conventions must produce
    "NanBottomRight": {
        "fully_masked_row": "nan", "fully_masked_row.float16": "nan", "fully_masked_row.float64": "nan",
        "fully_masked_row.bfloat16": "nan", "causal_alignment": "bottom_right",
        "mask_polarity": "true_masks", "additive_mask": "added", "mask_broadcast": "per_batch",
        "returned_weights": "averaged", "default_scale": "inv_sqrt_d_k", "custom_scale": "honoured",
        "dropout_inference": "active", "gqa": "consecutive", "nan_masked_key": "none",
    },
    "UniformTopLeft": {
        "fully_masked_row": "uniform", "fully_masked_row.float16": "uniform", "causal_alignment": "top_left",
        "mask_polarity": "true_attends", "additive_mask": "inverted", "returned_weights": "none",
        "gqa": "interleaved", "dropout_inference": "inactive",
    },
    "FiniteFill": {"fully_masked_row": "uniform", "fully_masked_row.float16": "zeros",
                   "fully_masked_row.bfloat16": "uniform", "fully_masked_row.float64": "unmasked"},
    "DecodeFlip": {"causal_alignment": "inconsistent"},
    "ScaledTwice": {"fully_masked_row": "zeros", "default_scale": "inv_d_k", "custom_scale": "honoured"},
    "GradUniform": {"fully_masked_row": "uniform", "grad_fully_masked_row": "finite"},
    "GradTwice": {"fully_masked_row": "uniform", "grad_fully_masked_row": "inconsistent"},
}
