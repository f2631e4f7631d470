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
from attnconf.reference import multi_head_attention_vjp, output_projection, project_heads, scaled_dot_product_attention

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
