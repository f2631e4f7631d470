"""Faulty adapters: realistic attention bugs that the conformance chapters must catch.

`Pipeline` is multi-head attention written step by step from the reference's pieces
(`project_heads`, `softmax`, `causal_mask`, `round_to`), evaluated in the requested precision
like the reference. It is the control: it must pass every chapter, which shows that what the
chapters catch in its subclasses is the bug, not this module's arithmetic. Each subclass
overrides one step with a bug someone has shipped or could, and names in `caught_by` the
chapters (conformance modules `test_<chapter>.py`) that must catch it. The faults of the conventions
of current models (rotary layouts, windows, soft caps, ALiBi slopes, the decode step, ragged lengths)
are variants of the numpy adapter, in tests/faulty_conventions.py; the catalog includes them.

Run the suite on one of them with (from the repository root)::

    PYTHONPATH=tests pytest --pyargs attnconf.conformance --adapter faulty:ScaleOverD --dtype float32

`run_catalog` runs the whole catalog in one pytest subprocess; tests/test_power.py and
scripts/faulty_table.py use it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from faulty_conventions import (  # noqa: F401 - the catalog's adapters are `faulty:<name>`
    CONVENTION_FAULTS,
    AlibiPowerOfTwoSlopes,
    ConventionFault,
    DecodeTopLeft,
    KeyLengthsOffByOne,
    RotaryOtherLayout,
    SoftcapBeforeScale,
    WindowOneWider,
)
from hypothesis import Phase, settings

from attnconf.adapters.base import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.adapters.support import AdapterBase
from attnconf.conformance import profiles
from attnconf.reference import causal_mask, output_projection, project_heads, round_to, softmax
from attnconf.reference.precision import in_compute

Array = np.ndarray[Any, Any]
LAYER = Capabilities(
    level="layer", gqa=True, kdim_vdim=True, value_dim=True, output_dim=True, custom_scale=True, notes="tests/faulty.py"
)

LOW_PRECISION = ("float16", "bfloat16")
#: Why PvAccumulatedInStorage is not caught (its `pending` entries; measured with the per-element tolerances):
#: rounding the running sum to float16/bfloat16 once per key adds about sqrt(S) unit roundoffs of the
#: row's values, 0.01-0.2 of the derived bound at the cases' S <= 128 (the first-order model of an
#: honest evaluation, logit errors included, is larger); it would take rows of thousands of keys.
PV_PENDING = "its error stays within the per-element bound (0.01-0.2 of it) at S <= 128"


class Pipeline(AdapterBase):
    """The control: multi-head attention step by step, with no bug."""

    name = "faulty.control"
    api = "tests/faulty.py"
    capabilities = LAYER
    alignment: ClassVar[str] = "top_left"
    caught_by: ClassVar[tuple[str, ...]] = ()
    #: The precisions in which `caught_by` must catch the bug (a low-precision bug: float16, bfloat16).
    caught_in: ClassVar[tuple[str, ...]] = ("float64", "float32", "float16", "bfloat16")
    #: {dtype: why} where the chapters do not catch the bug yet: test_power expects the miss (strict
    #: xfail), so an entry must go as soon as the chapters catch it.
    pending: ClassVar[dict[str, str]] = {}
    #: The chapters may catch the bug through the adapter's own exception (as a framework that refuses
    #: the shapes would), not only through a failed comparison.
    raises: ClassVar[bool] = False
    #: Where the bug comes from: an upstream issue or pull request that shows it (or the kernel shortcut).
    source: ClassVar[str] = ""

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        p, H = dtype, weights.num_heads
        q = self.split(inputs.query, weights.query_kernel, weights.query_bias, p)  # (B, H, T, D_k)
        k = self.split(inputs.key, weights.key_kernel, weights.key_bias, p)  # (B, H_kv, S, D_k)
        v = self.split(inputs.value, weights.value_kernel, self.value_bias(weights), p)  # (B, H_kv, S, D_v)
        k, v = self.kv_heads(k, H), self.kv_heads(v, H)  # (B, H, S, D)
        scale = self.scale(inputs.scale, q.shape[-1])
        logits = round_to(np.einsum("bhtd,bhsd->bhts", in_compute(q, p), in_compute(k, p)) * scale, p)
        visible = self.visible(inputs, q.shape[2], k.shape[2])  # (B, 1, T, S)
        attn = round_to(self.softmax(in_compute(logits, p), visible, p), p)  # (B, H, T, S)
        heads = self.weighted_sum(self.dropout(attn), v, logits, visible, p)  # (B, H, T, D_v)
        out = self.merge(heads, weights, p)  # (B, T, E_out)
        return AttentionOutputs(output=out, weights=self.returned(attn, logits, p))

    # -- the steps a bug can hide in -------------------------------------------------------

    def split(self, x: Array, kernel: Array, bias: Array | None, p: str) -> Array:
        return project_heads(x, kernel, bias, p)

    def value_bias(self, weights: AttentionWeights) -> Array | None:
        return weights.value_bias

    def kv_heads(self, x: Array, H: int) -> Array:
        return np.repeat(x, H // x.shape[1], axis=1)  # query head h reads kv head h // group

    def scale(self, given: float | None, D_k: int) -> float:
        return given if given is not None else 1.0 / math.sqrt(D_k)

    def visible(self, inputs: AttentionInputs, T: int, S: int) -> Array:
        vis = np.ones((1, 1, T, S), dtype=bool) if inputs.mask is None else inputs.mask[:, None]
        if inputs.causal:
            vis = vis & causal_mask(T, S, self.alignment)[None, None]  # type: ignore[arg-type]
        return vis

    def softmax(self, logits: Array, visible: Array, p: str) -> Array:
        return softmax(logits, where=visible)

    def dropout(self, attn: Array) -> Array:
        return attn

    def weighted_sum(self, attn: Array, v: Array, logits: Array, visible: Array, p: str) -> Array:
        """`attn @ v`: `(B, H, T, S) x (B, H, S, D_v) -> (B, H, T, D_v)` (`logits`, `visible` for fused kernels)."""
        return round_to(np.einsum("bhts,bhsd->bhtd", in_compute(attn, p), in_compute(v, p)), p)

    def merge(self, heads: Array, weights: AttentionWeights, p: str) -> Array:
        return output_projection(heads, weights.output_kernel, weights.output_bias, p)

    def returned(self, attn: Array, logits: Array, p: str) -> Array:
        return attn


# -- scale ----------------------------------------------------------------------------------


class ScaleOverD(Pipeline):
    """Logits scaled by 1/D_k instead of 1/sqrt(D_k)."""

    name = "faulty.scale_over_d"
    caught_by = ("scaling",)

    def scale(self, given: float | None, D_k: int) -> float:
        return given if given is not None else 1.0 / D_k


class NoScale(Pipeline):
    """Logits not scaled at all (scale 1) unless a scale is given."""

    name = "faulty.no_scale"
    caught_by = ("scaling",)

    def scale(self, given: float | None, D_k: int) -> float:
        return given if given is not None else 1.0


class GivenScaleIgnored(Pipeline):
    """A custom scale is accepted and ignored: always 1/sqrt(D_k)."""

    name = "faulty.given_scale_ignored"
    caught_by = ("scaling",)

    def scale(self, given: float | None, D_k: int) -> float:
        return 1.0 / math.sqrt(D_k)


# -- softmax --------------------------------------------------------------------------------


class SoftmaxWrongAxis(Pipeline):
    """Softmax over the query axis instead of the key axis."""

    name = "faulty.softmax_wrong_axis"
    caught_by = ("softmax", "convexity")

    def softmax(self, logits: Array, visible: Array, p: str) -> Array:
        return softmax(logits, axis=-2, where=visible)


class NoMaxSubtraction(Pipeline):
    """exp(logits) / sum(exp(logits)) without subtracting the row maximum: overflows on large logits."""

    name = "faulty.no_max_subtraction"
    caught_by = ("softmax",)

    def softmax(self, logits: Array, visible: Array, p: str) -> Array:
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.where(visible, np.exp(logits), 0.0).astype(logits.dtype)
            return e / e.sum(axis=-1, keepdims=True)


# -- masks ----------------------------------------------------------------------------------


class MaskInverted(Pipeline):
    """The boolean mask read with the opposite polarity (True = masked, as torch's)."""

    name = "faulty.mask_inverted"
    caught_by = ("masking", "causality")

    def visible(self, inputs: AttentionInputs, T: int, S: int) -> Array:
        inverted = None if inputs.mask is None else ~inputs.mask
        return super().visible(AttentionInputs(inputs.query, inputs.key, inputs.value, inverted, inputs.causal), T, S)


class FiniteMaskFill(Pipeline):
    """Masked logits get an additive -1e4 (BERT's extended attention mask), not excluded."""

    name = "faulty.finite_mask_fill"
    caught_by = ("masking",)
    # float16: the fill leaks only where a masked logit exceeds the visible ones by about 1e4, beyond
    # the float16 logits the chapters draw (at most 1e4); below that its weights are exactly 0, as the spec's
    caught_in = ("float64", "float32", "bfloat16")

    def softmax(self, logits: Array, visible: Array, p: str) -> Array:
        return softmax(logits + np.where(visible, 0.0, -1e4).astype(logits.dtype))


class WeightsBeforeMask(Pipeline):
    """The returned weights are the softmax before the mask was applied (the output is right)."""

    name = "faulty.weights_before_mask"
    caught_by = ("masking",)

    def returned(self, attn: Array, logits: Array, p: str) -> Array:
        return round_to(softmax(in_compute(logits, p)), p)


# -- causal ---------------------------------------------------------------------------------


class CausalOffByOne(Pipeline):
    """The causal mask lets query i see key i + 1 (`j <= i + 1`)."""

    name = "faulty.causal_off_by_one"
    caught_by = ("causality",)

    def visible(self, inputs: AttentionInputs, T: int, S: int) -> Array:
        vis = np.ones((1, 1, T, S), dtype=bool) if inputs.mask is None else inputs.mask[:, None]
        if inputs.causal:
            vis = vis & (np.arange(S)[None, :] <= np.arange(T)[:, None] + 1)
        return vis


class CausalBottomRight(Pipeline):
    """Declares the top-left causal alignment, applies bottom-right (visible when T != S)."""

    name = "faulty.causal_bottom_right"
    alignment = "bottom_right"
    caught_by = ("causality",)


class CausalAlwaysOn(Pipeline):
    """The causal mask is applied whether or not the causal flag is set (a hard-coded decoder)."""

    name = "faulty.causal_always_on"
    caught_by = ("permutation",)

    def visible(self, inputs: AttentionInputs, T: int, S: int) -> Array:
        return super().visible(AttentionInputs(inputs.query, inputs.key, inputs.value, inputs.mask, True), T, S)


class CausalDropsMask(Pipeline):
    """With the causal flag set, the mask is silently dropped (one or the other, as some kernels take)."""

    name = "faulty.causal_drops_mask"
    caught_by = ("causality",)

    def visible(self, inputs: AttentionInputs, T: int, S: int) -> Array:
        mask = None if inputs.causal else inputs.mask
        return super().visible(AttentionInputs(inputs.query, inputs.key, inputs.value, mask, inputs.causal), T, S)


# -- heads ----------------------------------------------------------------------------------


class HeadsReversed(Pipeline):
    """Heads concatenated in reverse order before the output projection."""

    name = "faulty.heads_reversed"
    caught_by = ("heads",)

    def merge(self, heads: Array, weights: AttentionWeights, p: str) -> Array:
        return super().merge(heads[:, ::-1], weights, p)


class HeadSplitWrongAxis(Pipeline):
    """Projections `(.., H * D)` split as `(.., D, H)`: head h gets features h, h + H, h + 2H, ..."""

    name = "faulty.head_split_wrong_axis"
    caught_by = ("heads",)

    def split(self, x: Array, kernel: Array, bias: Array | None, p: str) -> Array:
        E, H, D = kernel.shape
        flat_bias = None if bias is None else bias.reshape(1, H * D)
        y = project_heads(x, kernel.reshape(E, 1, H * D), flat_bias, p)[:, 0]  # (B, N, H * D)
        return y.reshape(y.shape[0], y.shape[1], D, H).transpose(0, 3, 1, 2)


class OutputKernelTransposed(Pipeline):
    """The output kernel flattened to `(H * D_v, E_out)` is used transposed when it is square."""

    name = "faulty.output_kernel_transposed"
    caught_by = ("heads",)

    def merge(self, heads: Array, weights: AttentionWeights, p: str) -> Array:
        H, D_v, E = weights.output_kernel.shape
        if H * D_v != E:
            return super().merge(heads, weights, p)
        wo = weights.output_kernel.reshape(E, E).T.reshape(H, D_v, E)
        return super().merge(
            heads,
            AttentionWeights(
                weights.query_kernel, weights.key_kernel, weights.value_kernel, wo, output_bias=weights.output_bias
            ),
            p,
        )


class WeightsAveragedOverHeads(Pipeline):
    """The returned weights are averaged over heads (torch's default) and repeated per head."""

    name = "faulty.weights_averaged_over_heads"
    caught_by = ("heads",)

    def returned(self, attn: Array, logits: Array, p: str) -> Array:
        return np.broadcast_to(attn.mean(axis=1, keepdims=True), attn.shape).copy()


class GqaTiled(Pipeline):
    """Grouped-query kv heads tiled (query head h reads kv head h % H_kv) instead of repeated."""

    name = "faulty.gqa_tiled"
    caught_by = ("heads",)

    def kv_heads(self, x: Array, H: int) -> Array:
        return np.tile(x, (1, H // x.shape[1], 1, 1))


# -- values and inputs ----------------------------------------------------------------------


class ValueBiasDropped(Pipeline):
    """The value projection's bias is never added."""

    name = "faulty.value_bias_dropped"
    caught_by = ("convexity",)

    def value_bias(self, weights: AttentionWeights) -> Array | None:
        return None


class QueryKeySwapped(Pipeline):
    """Query and key handed over in the wrong order (as `attention(key, query, value)`)."""

    name = "faulty.query_key_swapped"
    caught_by = ("permutation",)
    raises = True  # where T != S it refuses the shapes, as torch does; the permutation chapter catches that

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        if inputs.query.shape[1] != inputs.key.shape[1]:
            raise ValueError(f"value has {inputs.value.shape[1]} positions but key has {inputs.query.shape[1]}")
        swapped = AttentionInputs(inputs.key, inputs.query, inputs.value, inputs.mask, inputs.causal, inputs.scale)
        return super().multi_head_attention(swapped, weights, dtype)


class BatchFirstForgotten(Pipeline):
    """Batch-first arrays handed to a sequence-first layer: attention runs across the batch axis."""

    name = "faulty.batch_first_forgotten"
    capabilities = Capabilities(
        level="layer",
        gqa=True,
        custom_scale=True,
        boolean_mask=False,
        causal=False,
        causal_alignment=None,
        causal_with_mask=False,
        notes="tests/faulty.py",
    )
    caught_by = ("batches",)

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        q, k, v = (x.swapaxes(0, 1) for x in (inputs.query, inputs.key, inputs.value))
        out = super().multi_head_attention(AttentionInputs(q, k, v, scale=inputs.scale), weights, dtype)
        return AttentionOutputs(out.output.swapaxes(0, 1), None)


class BatchPacked(Pipeline):
    """Batch elements packed into one sequence without a block-diagonal mask: keys leak across elements."""

    name = "faulty.batch_packed"
    caught_by = ("batches",)

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        B, T, S = inputs.query.shape[0], inputs.query.shape[1], inputs.key.shape[1]
        own = np.ones((B, T, S), bool) if inputs.mask is None else inputs.mask
        if inputs.causal:
            own = own & causal_mask(T, S, self.alignment)[None]  # type: ignore[arg-type]
        mask = np.ones((B, T, B, S), dtype=bool)  # every other element's keys visible
        mask[np.arange(B), :, np.arange(B)] = own
        key, value = (
            np.broadcast_to(x.reshape(1, B * S, -1), (B, B * S, x.shape[2])) for x in (inputs.key, inputs.value)
        )
        out = super().multi_head_attention(
            AttentionInputs(inputs.query, key, value, mask.reshape(B, T, B * S), False, inputs.scale), weights, dtype
        )
        w = out.weights.reshape(B, -1, T, B, S)  # (B, H, T, B, S): every element's keys
        return AttentionOutputs(out.output, w[np.arange(B), :, :, np.arange(B)])  # (B, H, T, S): its own


# -- randomness -----------------------------------------------------------------------------


class DropoutLeftOn(Pipeline):
    """Attention dropout (rate 0.1) left on in inference: the layer is still in training mode."""

    name = "faulty.dropout_left_on"
    caught_by = ("determinism",)
    rate: ClassVar[float] = 0.1

    def dropout(self, attn: Array) -> Array:
        keep = np.random.default_rng().random(attn.shape) >= self.rate
        return (attn * keep / (1 - self.rate)).astype(attn.dtype)

    def with_dropout(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, rate: float
    ) -> AttentionOutputs:
        return self.multi_head_attention(inputs, weights, dtype)


# -- low precision and the shapes real workloads use ------------------------------------------
#
# Each of these computes exactly what the control computes except in some precisions or some
# shapes: a half-precision fast path, a decode step (T = 1), a tall causal block (T > S), a long
# row of keys (S > 16), a head width that fused kernels take (64 or 128).


class PvAccumulatedInStorage(Pipeline):
    """In float16 and bfloat16, P·V is accumulated in the storage precision (one rounding per key), not in float32.

    Tensor-core MMAs with a half-precision accumulator run about twice as fast, and kernels have
    shipped or proposed them (Dao-AILab/flash-attention#543; the native MHA fast path's fp16
    accumulation, pytorch/pytorch#176559; philipturner/metal-flash-attention#8).
    """

    name = "faulty.pv_accumulated_in_storage"
    pending = dict.fromkeys(LOW_PRECISION, PV_PENDING)
    caught_by = ("agreement",)
    caught_in = LOW_PRECISION
    source = "https://github.com/Dao-AILab/flash-attention/issues/543"

    def weighted_sum(self, attn: Array, v: Array, logits: Array, visible: Array, p: str) -> Array:
        if p not in LOW_PRECISION:
            return super().weighted_sum(attn, v, logits, visible, p)
        a, w = in_compute(attn, p), in_compute(v, p)
        acc = np.zeros(attn.shape[:3] + v.shape[-1:], dtype=a.dtype)  # (B, H, T, D_v)
        for s in range(attn.shape[-1]):  # one fused multiply-add per key, rounded to p
            acc = in_compute(round_to(acc + a[..., s, None] * w[:, :, None, s, :], p), p)
        return round_to(acc, p)


class FixedMaxSoftmax(Pipeline):
    """In float16 and bfloat16, the softmax subtracts a fixed bound (10) instead of the row maximum and
    exponentiates in the storage precision: exp overflows once a logit exceeds 21 (float16) or 98 (bfloat16).

    HabanaAI/vllm-fork#275: the bf16 `block_softmax` kernel subtracted a hard-coded maximum of 10,
    and logits of 2000+ overflowed.
    """

    name = "faulty.fixed_max_softmax"
    caught_by = ("softmax",)
    caught_in = LOW_PRECISION
    source = "https://github.com/HabanaAI/vllm-fork/issues/275"
    bound: ClassVar[float] = 10.0

    def softmax(self, logits: Array, visible: Array, p: str) -> Array:
        if p not in LOW_PRECISION:
            return super().softmax(logits, visible, p)
        with np.errstate(over="ignore", invalid="ignore"):
            e = in_compute(round_to(np.exp(round_to(logits - self.bound, p)), p), p)
            e = np.where(visible, e, 0.0).astype(logits.dtype)
            return e / in_compute(round_to(e.sum(axis=-1, keepdims=True), p), p)


class CausalBottomRightAtDecode(Pipeline):
    """With one query (T = 1, a decode step), the causal flag is applied bottom-right, as a kv-cache kernel
    does: the query sees every key, not key 0 only (the declared alignment is top-left).

    flash-attention's single-token decode ran without a causal mask (Dao-AILab/flash-attention#351),
    and 2.1 moved its causal flag to bottom-right (Dao-AILab/flash-attention#951).
    """

    name = "faulty.causal_bottom_right_at_decode"
    caught_by = ("agreement",)
    source = "https://github.com/Dao-AILab/flash-attention/issues/351"

    def visible(self, inputs: AttentionInputs, T: int, S: int) -> Array:
        vis = super().visible(inputs, T, S)
        if inputs.causal and T == 1:
            vis = np.ones_like(vis) if inputs.mask is None else inputs.mask[:, None].copy()
        return vis


class MaskDroppedAtDecode(Pipeline):
    """With one query (T = 1, a decode step), the mask is dropped: padded keys are attended.

    ml-explore/mlx-lm#1906: `create_attention_mask` returns no mask when N == 1, so every decode
    step of a left-padded batch attends to its pads (also OpenNMT/OpenNMT-py#2532).
    """

    name = "faulty.mask_dropped_at_decode"
    caught_by = ("agreement",)
    source = "https://github.com/ml-explore/mlx-lm/issues/1906"

    def visible(self, inputs: AttentionInputs, T: int, S: int) -> Array:
        if T == 1 and inputs.mask is not None:
            inputs = AttentionInputs(inputs.query, inputs.key, inputs.value, None, inputs.causal, inputs.scale)
        return super().visible(inputs, T, S)


class CausalTallBottomRight(Pipeline):
    """When T > S, the causal key bound assumes T <= S (`j <= i + S - T` is applied too): the first T - S
    queries see no key (zeros) and the others lose T - S keys. Correct for T <= S.

    Dao-AILab/flash-attention#1778: with seqlen_q > seqlen_k and causal, the key-block bound
    goes negative and the top rows of the output stay 0.
    """

    name = "faulty.causal_tall_bottom_right"
    caught_by = ("agreement",)
    source = "https://github.com/Dao-AILab/flash-attention/issues/1778"

    def visible(self, inputs: AttentionInputs, T: int, S: int) -> Array:
        vis = super().visible(inputs, T, S)
        if inputs.causal and T > S:
            vis = vis & causal_mask(T, S, "bottom_right")[None, None]
        return vis


class OnlineSoftmaxNoRescale(Pipeline):
    """Blocked (online) softmax over blocks of 16 keys that rescales the running sum but not the running
    output when a later block raises the row maximum. Exact when S <= 16 (one block).

    The FlashAttention recurrence (Dao et al. 2022, arXiv:2205.14135, Algorithm 1) rescales both;
    kernels that get one of the two wrong are correct on every row that fits one block
    (FluxML/NNkernels.jl#16 fixed a missing bound in its online softmax).
    """

    name = "faulty.online_softmax_no_rescale"
    caught_by = ("agreement",)
    source = "https://arxiv.org/abs/2205.14135"
    block: ClassVar[int] = 16

    def weighted_sum(self, attn: Array, v: Array, logits: Array, visible: Array, p: str) -> Array:
        x, w = in_compute(logits, p), in_compute(v, p)  # (B, H, T, S), (B, H, S, D_v)
        vis = np.broadcast_to(visible, x.shape)
        m = np.full(x.shape[:3] + (1,), -np.inf, dtype=x.dtype)
        total = np.zeros_like(m)
        acc = np.zeros(x.shape[:3] + w.shape[-1:], dtype=x.dtype)
        for start in range(0, x.shape[-1], self.block):
            xb, vb = x[..., start : start + self.block], vis[..., start : start + self.block]
            m_new = np.maximum(m, np.max(xb, axis=-1, where=vb, initial=-np.inf, keepdims=True))
            safe = np.where(np.isfinite(m_new), m_new, 0.0)
            e = np.exp(xb - safe, where=vb, out=np.zeros_like(xb))
            total = total * np.exp(np.where(np.isfinite(m), m - safe, -np.inf)) + e.sum(axis=-1, keepdims=True)
            acc = acc + e @ w[:, :, start : start + self.block]  # the bug: acc is not rescaled by exp(m - m_new)
            m = m_new
        return round_to(acc / np.where(total > 0, total, 1.0), p)


class FusedHeadDimDropsScale(Pipeline):
    """At head widths 64 and 128 (the widths a fused kernel is built for) the logits are not scaled
    by 1/sqrt(D_k); every other width takes the unfused path and is right.

    BobMcDear/attorch#14: the fused layer path (head widths {16, 32, 64, 128} only) passed a
    hard-coded softmax scale; pytorch/pytorch#176559: torch's MHA fast path picks its kernel by head width.
    """

    name = "faulty.fused_head_dim_drops_scale"
    caught_by = ("agreement",)
    source = "https://github.com/BobMcDear/attorch/issues/14"

    def scale(self, given: float | None, D_k: int) -> float:
        return 1.0 if given is None and D_k in (64, 128) else super().scale(given, D_k)


CONTROLS: tuple[type[Pipeline], ...] = (Pipeline,)
#: The faults that only show in low precision or in the shapes real workloads use (each cites its source).
PRECISION_AND_SHAPES: tuple[type[Pipeline], ...] = (
    PvAccumulatedInStorage,
    FixedMaxSoftmax,
    CausalBottomRightAtDecode,
    MaskDroppedAtDecode,
    CausalTallBottomRight,
    OnlineSoftmaxNoRescale,
    FusedHeadDimDropsScale,
)
FAULTY: tuple[type[Pipeline] | type[ConventionFault], ...] = (
    ScaleOverD,
    NoScale,
    GivenScaleIgnored,
    SoftmaxWrongAxis,
    NoMaxSubtraction,
    MaskInverted,
    FiniteMaskFill,
    WeightsBeforeMask,
    CausalOffByOne,
    CausalBottomRight,
    CausalAlwaysOn,
    CausalDropsMask,
    HeadsReversed,
    HeadSplitWrongAxis,
    OutputKernelTransposed,
    WeightsAveragedOverHeads,
    GqaTiled,
    ValueBiasDropped,
    QueryKeySwapped,
    BatchFirstForgotten,
    BatchPacked,
    DropoutLeftOn,
    *PRECISION_AND_SHAPES,
    *CONVENTION_FAULTS,
)

#: The chapters the catalog runs: every invariant chapter, and agreement for comparison.
CHAPTERS = (
    "scaling",
    "softmax",
    "convexity",
    "masking",
    "causality",
    "permutation",
    "heads",
    "batches",
    "determinism",
    "rotary",
    "windows",
    "softcap",
    "alibi",
    "decode",
    "lengths",
    "agreement",
)
#: The precisions the catalog runs in.
DTYPES = ("float64", "float32", "float16", "bfloat16")
#: The precision in which every faulty adapter runs every chapter (the table's "caught by"). In the
#: others, a faulty adapter runs only the chapters that must catch it, in the precisions where they
#: must (`caught_in`); numpy and the controls run every chapter in every precision.
FULL_DTYPE = "float32"


def plan(dtypes: tuple[str, ...] = DTYPES, chapters: tuple[str, ...] = CHAPTERS) -> dict[str, dict[str, list[str]]]:
    """{adapter name: {dtype: [chapters]}}: what the catalog runs (see FULL_DTYPE)."""
    out: dict[str, dict[str, list[str]]] = {"numpy": {d: list(chapters) for d in dtypes}}
    for c in CONTROLS:
        out[c.name] = {d: list(chapters) for d in dtypes}
    for c in FAULTY:
        runs = {d: [ch for ch in chapters if ch in c.caught_by] for d in dtypes if d in c.caught_in}
        if FULL_DTYPE in runs:
            runs[FULL_DTYPE] = list(chapters)
        out[c.name] = {d: chs for d, chs in runs.items() if chs}
    return out


# -- pytest plugin (`-p faulty`): run only what `--faulty-plan FILE` (JSON of `plan()`) lists --


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--faulty-plan", default=None, help="JSON {adapter: {dtype: [chapters]}}: deselect the rest")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    path = config.getoption("faulty_plan", None)
    if not path:
        return
    wanted = json.loads(Path(path).read_text())
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        adapter, dtype = params.get("adapter"), params.get("dtype")
        chapter = item.module.__name__.rpartition(".test_")[2]
        runs = wanted.get(getattr(adapter, "name", None), {})
        (keep if adapter is None or chapter in runs.get(dtype, ()) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def chapter_tests(chapters: tuple[str, ...] = CHAPTERS) -> dict[str, str]:
    """{test function name: chapter} for the conformance modules `test_<chapter>.py`."""
    import importlib

    return {
        name: c
        for c in chapters
        for name in vars(importlib.import_module(f"attnconf.conformance.test_{c}"))
        if name.startswith("test_")
    }


#: The ci profile without its shrink phase: the same derandomised examples, so the same bugs are
#: found, without the time spent minimising each failing example (the catalog run only counts).
settings.register_profile("ci-noshrink", profiles.PROFILES["ci"], phases=(Phase.explicit, Phase.reuse, Phase.generate))


def run_catalog(
    workdir: Path,
    adapters: list[str] | None = None,
    dtypes: tuple[str, ...] = DTYPES,
    chapters: tuple[str, ...] = CHAPTERS,
    profile: str = "ci-noshrink",
    timeout: float = 900,
) -> dict[str, Any]:
    """Run the chapters over the numpy adapter, the controls and the faulty adapters, in one pytest.

    What runs is `plan(dtypes, chapters)`: every chapter for numpy and the controls in every
    dtype; a faulty adapter every chapter in FULL_DTYPE, and its `caught_by` chapters in the other
    dtypes of its `caught_in`.

    Returns {"wall": seconds, "command": [...], "log": tail of the output, "plan": plan, "adapters":
    {name: {"failed": {chapter: [test ids]}, "passed": n, "skipped": n, "seconds": total test time,
    "durations": {test id: seconds}, "messages": {test id: message}, "dtypes": {test id: dtype}}}}.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "results.json"
    specs = adapters or ["numpy", *(f"faulty:{c.__name__}" for c in (*CONTROLS, *FAULTY))]
    plan_file = workdir / "plan.json"
    plan_file.write_text(json.dumps(plan(dtypes, chapters)))
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        *(f"attnconf.conformance.test_{c}" for c in chapters),
        "-q",
        "-p",
        "no:randomly",
        "-W",
        "ignore",
        "-p",
        "faulty",
        "--hypothesis-profile",
        profile,
        "--attnconf-json",
        str(out),
        "--faulty-plan",
        str(plan_file),
        *(f"--adapter={a}" for a in specs),
        *(f"--dtype={d}" for d in dtypes),
    ]
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=workdir, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=timeout
    )
    wall = time.perf_counter() - start
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    if not out.exists():
        raise RuntimeError(f"the catalog run wrote no results (exit {proc.returncode}):\n{log}")
    by: dict[str, Any] = {}
    chapter = chapter_tests(chapters)
    for t in json.loads(out.read_text())["tests"]:
        a = by.setdefault(
            t["adapter"],
            {"failed": {}, "passed": 0, "skipped": 0, "seconds": 0.0, "messages": {}, "durations": {}, "dtypes": {}},
        )
        a["seconds"] += t["duration"] or 0.0
        test_id = t["nodeid"].split("::")[-1]
        a["durations"][test_id] = t["duration"] or 0.0
        a["dtypes"][test_id] = t["dtype"]
        if t["outcome"] == "failed":
            a["failed"].setdefault(chapter[t["test"]], []).append(test_id)
            a["messages"][test_id] = t["message"]
        elif t["outcome"] in ("passed", "skipped"):
            a[t["outcome"]] += 1
    return {
        "wall": wall,
        "command": cmd,
        "log": log,
        "adapters": by,
        "returncode": proc.returncode,
        "plan": json.loads(plan_file.read_text()),
    }
