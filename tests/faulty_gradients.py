"""Faulty adapters with gradient bugs: the `gradients` chapter must catch every one of them.

Each adapter has the reference's forward pass and a backward pass with one realistic bug,
written here from the chain rule in float64 (independently of `attnconf.reference.backward`)
and rounded to the requested dtype. `caught_by` names the chapter tests that must fail.
The controls run the same backward without a bug, and must pass: they show that what the
chapter catches is the bug, not this module's arithmetic.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from attnconf.adapters.base import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.adapters.support import AdapterBase, KernelAdapterBase
from attnconf.reference import causal_mask, multi_head_attention, round_to, scaled_dot_product_attention, softmax

Array = np.ndarray[Any, Any]
LAYER = Capabilities(level="layer", gqa=True, kdim_vdim=True, value_dim=True, output_dim=True,
                     custom_scale=True, gradients=True)
KERNEL = Capabilities(level="kernel", gqa=True, value_dim=True, custom_scale=True, returns_weights=False,
                      gradients=True)


def sdpa_vjp(q: Array, k: Array, v: Array, dO: Array, visible: Array, visible_backward: Array,
             scale: float, bug: str | None) -> tuple[Array, Array, Array, Array]:
    """float64 (dq, dk, dv, heads) for q `(B, H, T, D_k)`, k/v `(B, H_kv, S, D)`, dO `(B, H, T, D_v)`.

    `visible` `(B, 1|H, T, S)` is the forward's mask; `visible_backward` the one the backward
    recomputes the weights with (equal to `visible` unless that is the bug).
    """
    B, H, T, _ = q.shape
    H_kv, S = k.shape[1], k.shape[2]
    G = H // H_kv
    kf, vf = np.repeat(k, G, axis=1), np.repeat(v, G, axis=1)
    logits = scale * q @ kf.swapaxes(-1, -2)  # (B, H, T, S)
    heads = softmax(logits, where=visible) @ vf
    P = softmax(logits, where=visible_backward)
    dP = dO @ vf.swapaxes(-1, -2)
    if bug == "missing_softmax_jacobian":
        dL = P * dP  # only the diagonal of diag(P) - P P^T
    else:
        axis = -2 if bug == "jacobian_wrong_axis" else -1
        dL = P * (dP - np.sum(P * dP, axis=axis, keepdims=True))
    s = scale * scale if bug == "scale_twice" else scale
    dq, dkf, dvf = s * dL @ kf, s * dL.swapaxes(-1, -2) @ q, P.swapaxes(-1, -2) @ dO
    if bug == "gqa_first_head":
        dk, dv = dkf[:, ::G], dvf[:, ::G]
    else:
        dk = dkf.reshape(B, H_kv, G, S, -1).sum(axis=2)
        dv = dvf.reshape(B, H_kv, G, S, -1).sum(axis=2)
    return dq, dk, dv, heads


def _visibility(mask: Array | None, causal: bool, T: int, S: int, alignment: str) -> Array:
    vis = np.ones((1, 1, T, S), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return vis & causal_mask(T, S, alignment)[None, None] if causal else vis  # type: ignore[arg-type]


class FaultyLayer(AdapterBase):
    """The reference forward; the backward of `sdpa_vjp` with `bug`, plus the projections'."""

    capabilities = LAYER
    bug: ClassVar[str | None] = None
    caught_by: ClassVar[tuple[str, ...]] = ()

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        return multi_head_attention(inputs, weights, dtype=dtype)

    def multi_head_attention_vjp(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str,
                                 cotangent: Array) -> dict[str, Array]:
        W = {n: np.asarray(a, np.float64) for n, a in weights.arrays().items()}
        x = {n: np.asarray(getattr(inputs, n), np.float64) for n in ("query", "key", "value")}
        proj = {n: np.einsum("bne,ehd->bhnd", x[n], W[f"{n}_kernel"]) + W.get(f"{n}_bias", np.zeros(1))[:, None]
                for n in x}
        T, S, D_k = inputs.query.shape[1], inputs.key.shape[1], weights.key_head_dim
        mask = None if inputs.mask is None else inputs.mask[:, None]
        vis = _visibility(mask, inputs.causal, T, S, "top_left")
        vis_bwd = _visibility(None if self.bug == "mask_dropped_in_backward" else mask,
                              inputs.causal and self.bug != "causal_dropped_in_backward", T, S, "top_left")
        dY = np.asarray(cotangent, np.float64)
        d_heads = np.einsum("bte,hde->bhtd", dY, W["output_kernel"])
        scale = inputs.scale or 1 / math.sqrt(D_k)
        dq, dk, dv, heads = sdpa_vjp(proj["query"], proj["key"], proj["value"], d_heads, vis, vis_bwd, scale, self.bug)
        d = {"query": dq, "key": dk, "value": dv}
        g = {n: np.einsum("bhnd,ehd->bne", d[n], W[f"{n}_kernel"]) for n in d}
        if self.bug == "self_attention_summed" and inputs.key is inputs.query is inputs.value:
            g = dict.fromkeys(g, g["query"] + g["key"] + g["value"])  # one shared tensor's gradient
        for n in d:
            g[f"{n}_kernel"] = np.einsum("bne,bhnd->ehd", x[n], d[n])
            if f"{n}_bias" in W:
                g[f"{n}_bias"] = d[n].sum(axis=(0, 2))
        g["output_kernel"] = np.einsum("bhtd,bte->hde", heads, dY)
        if "output_bias" in W:
            g["output_bias"] = dY.mean(axis=(0, 1)) if self.bug == "output_bias_mean" else dY.sum(axis=(0, 1))
        E, H, D = W["query_kernel"].shape
        if self.bug == "query_kernel_native_layout" and E == H * D:
            # read as torch's (out, in) = (H*D, E) matrix, reshaped without the transpose
            g["query_kernel"] = g["query_kernel"].reshape(E, H * D).T.reshape(E, H, D)
        return {n: round_to(a, dtype) for n, a in g.items()}


class FaultyKernel(KernelAdapterBase):
    """A kernel-level adapter: the reference kernel forward, `sdpa_vjp` with `bug` as backward."""

    capabilities = KERNEL
    bug: ClassVar[str | None] = None
    alignment: ClassVar[str] = "top_left"
    caught_by: ClassVar[tuple[str, ...]] = ()

    def dot_product_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                              scale: float | None, dtype: str) -> Array:
        return scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, scale=scale, dtype=dtype)

    def dot_product_attention_vjp(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                                  scale: float | None, dtype: str, cotangent: Array) -> dict[str, Array]:
        q, k, v, dO = (np.asarray(a, np.float64) for a in (q, k, v, cotangent))
        T, S = q.shape[2], k.shape[2]
        vis = _visibility(mask, causal, T, S, "top_left")
        vis_bwd = _visibility(mask, causal, T, S, self.alignment)
        dq, dk, dv, _ = sdpa_vjp(q, k, v, dO, vis, vis_bwd, scale or 1 / math.sqrt(q.shape[-1]), self.bug)
        return {"q": round_to(dq, dtype), "k": round_to(dk, dtype), "v": round_to(dv, dtype)}


def _layer(name: str, bug: str | None, caught_by: tuple[str, ...], doc: str) -> type[FaultyLayer]:
    attrs = {"name": f"faulty.gradients.{name}", "bug": bug, "caught_by": caught_by, "__doc__": doc}
    return type(name, (FaultyLayer,), attrs)


AGREE, KERNEL_AGREE = "test_gradients", "test_kernel_gradients"
MASKED, CAUSAL = "test_gradients_masked_keys_zero", "test_gradients_causal_no_flow_back"

ControlLayer = _layer("ControlLayer", None, (), "This module's backward without a bug (must pass).")
MissingSoftmaxJacobian = _layer(
    "MissingSoftmaxJacobian", "missing_softmax_jacobian", (AGREE,),
    "dL = P * dP: the softmax Jacobian's -P P^T term is dropped, as if softmax were elementwise.")
ScaleTwice = _layer(
    "ScaleTwice", "scale_twice", (AGREE,),
    "The logit scale is applied twice in the backward pass (once fused into q, once to dL).")
JacobianWrongAxis = _layer(
    "JacobianWrongAxis", "jacobian_wrong_axis", (AGREE,),
    "The softmax Jacobian's row sum is taken over the query axis instead of the key axis.")
MaskDroppedInBackward = _layer(
    "MaskDroppedInBackward", "mask_dropped_in_backward", (AGREE, MASKED),
    "The backward recomputes the weights (as memory-efficient kernels do) but forgets the mask.")
CausalDroppedInBackward = _layer(
    "CausalDroppedInBackward", "causal_dropped_in_backward", (AGREE, CAUSAL),
    "The backward recomputes the weights without the causal mask.")
GqaFirstHead = _layer(
    "GqaFirstHead", "gqa_first_head", (AGREE,),
    "Grouped-query attention: kv gradients taken from the first query head of each group, not summed.")
SelfAttentionSummed = _layer(
    "SelfAttentionSummed", "self_attention_summed", (AGREE,),
    "Self-attention: the gradient of the one shared tensor is reported for query, key and value.")
OutputBiasMean = _layer(
    "OutputBiasMean", "output_bias_mean", (AGREE,),
    "The output bias gradient is averaged over batch and time instead of summed.")
QueryKernelNativeLayout = _layer(
    "QueryKernelNativeLayout", "query_kernel_native_layout", (AGREE,),
    "The query kernel gradient is read out in torch's (H*D, E) layout and reshaped without a transpose.")


def _kernel(name: str, bug: str | None, alignment: str, caught_by: tuple[str, ...], doc: str) -> type[FaultyKernel]:
    attrs = {"name": f"faulty.gradients.{name}", "bug": bug, "alignment": alignment,
             "caught_by": caught_by, "__doc__": doc}
    return type(name, (FaultyKernel,), attrs)


ControlKernel = _kernel("ControlKernel", None, "top_left", (), "The kernel backward without a bug (must pass).")
KernelMissingSoftmaxJacobian = _kernel(
    "KernelMissingSoftmaxJacobian", "missing_softmax_jacobian", "top_left", (KERNEL_AGREE,),
    "Kernel level: the softmax Jacobian's -P P^T term is dropped.")
KernelBackwardBottomRight = _kernel(
    "KernelBackwardBottomRight", None, "bottom_right", (KERNEL_AGREE, CAUSAL),
    "Kernel level: the forward is causal top-left as declared, the backward recomputes bottom-right.")

CONTROLS = (ControlLayer, ControlKernel)
FAULTY = (MissingSoftmaxJacobian, ScaleTwice, JacobianWrongAxis, MaskDroppedInBackward, CausalDroppedInBackward,
          GqaFirstHead, SelfAttentionSummed, OutputBiasMean, QueryKernelNativeLayout,
          KernelMissingSoftmaxJacobian, KernelBackwardBottomRight)
