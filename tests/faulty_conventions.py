"""Faulty adapters for the conventions of current models: variants of the numpy adapter.

The numpy adapter (`attnconf.adapters.numpy_ref`) implements every convention through the
reference; it is the control of these faults, and each subclass below changes one step the way a
port has shipped it or plausibly could, and names in `caught_by` the chapter that must catch it
(`attnconf/conformance/test_<chapter>.py`). tests/faulty.py lists them in its catalog
(`faulty.FAULTY`), so tests/test_power.py proves each is caught, in every dtype of `caught_in`,
on the numbers. Run one with::

    PYTHONPATH=tests pytest --pyargs attnconf.conformance --adapter faulty:WindowOneWider --dtype float32
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from attnconf.adapters.numpy_ref import NumpyAdapter
from attnconf.reference import scaled_dot_product_attention
from attnconf.reference.kv_cache import decode_step_mask
from attnconf.reference.masks import Window

Array = np.ndarray[Any, Any]
ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")


class ConventionFault(NumpyAdapter):
    """The numpy adapter with one convention wrong (the attributes tests/faulty.py's catalog reads)."""

    name = "faulty.convention"
    api = "tests/faulty_conventions.py"
    caught_by: ClassVar[tuple[str, ...]] = ()
    caught_in: ClassVar[tuple[str, ...]] = ALL_DTYPES
    pending: ClassVar[dict[str, str]] = {}
    raises: ClassVar[bool] = False
    source: ClassVar[str] = ""


class RotaryOtherLayout(ConventionFault):
    """The rotary embedding in the other layout than the one asked for (interleaved pairs for rotate-half
    and back): the weights of a model converted between GPT-J / Meta LLaMA and GPT-NeoX / Hugging Face
    LLaMA without the feature permutation. huggingface/transformers#47328: a model's cos/sin tables built
    for one layout and its rotation written for the other."""

    name = "faulty.rotary_other_layout"
    caught_by = ("rotary",)
    source = "https://github.com/huggingface/transformers/issues/47328"

    def rotary_embedding(self, x: Array, positions: Array, dtype: str, *, layout: str,
                         rotary_dim: int | None = None, theta: float = 10000.0) -> Array:
        other = "interleaved" if layout == "half" else "half"
        return super().rotary_embedding(x, positions, dtype, layout=other, rotary_dim=rotary_dim, theta=theta)


class WindowOneWider(ConventionFault):
    """The sliding window's left bound one key wider (left + 1): a window size read as excluding the
    diagonal where the spec's bound includes it. sgl-project/sglang#26147: passing the inclusive
    window to an exclusive kernel gave a window one token larger than intended."""

    name = "faulty.window_one_wider"
    caught_by = ("windows",)
    source = "https://github.com/sgl-project/sglang/pull/26147"

    def convention_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                             scale: float | None, dtype: str, *, window: Window | None = None,
                             **conventions: Any) -> Array:
        if window is not None and window[0] is not None:
            window = (window[0] + 1, window[1])
        return super().convention_attention(q, k, v, mask, causal, scale, dtype, window=window, **conventions)


class SoftcapBeforeScale(ConventionFault):
    """The soft cap applied to the raw logits, the scale after it: ``s * c * tanh(q.k / c)``, which is the
    spec's cap at ``c * s`` of the scaled logits. huggingface/trl#5691 (review): softcapping placed
    before the logit scale, ``softcap * tanh(raw / softcap) * scale``."""

    name = "faulty.softcap_before_scale"
    caught_by = ("softcap",)
    source = "https://github.com/huggingface/trl/pull/5691"

    def convention_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                             scale: float | None, dtype: str, *, logit_softcap: float | None = None,
                             **conventions: Any) -> Array:
        if logit_softcap is not None:  # s * c * tanh(x / c) == (c s) * tanh(x s / (c s))
            logit_softcap = logit_softcap * (scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
        return super().convention_attention(q, k, v, mask, causal, scale, dtype, logit_softcap=logit_softcap,
                                            **conventions)


class AlibiPowerOfTwoSlopes(ConventionFault):
    """ALiBi slopes computed from the head count as ``2**(-8k/n)`` for every `n`, ignoring the slopes
    given: the paper's rule for a power of two, applied to 6 or 12 heads as well (the paper interleaves
    the slopes of the next power of two there). ofirpress/attention_with_linear_biases#17: the 12-head
    slopes are not the geometric sequence one expects."""

    name = "faulty.alibi_power_of_two_slopes"
    caught_by = ("alibi",)
    source = "https://github.com/ofirpress/attention_with_linear_biases/issues/17"

    def convention_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                             scale: float | None, dtype: str, *, alibi_slopes: Array | None = None,
                             **conventions: Any) -> Array:
        if alibi_slopes is not None:
            n = q.shape[1]
            alibi_slopes = np.exp2(-8.0 * np.arange(1, n + 1) / n)
        return super().convention_attention(q, k, v, mask, causal, scale, dtype, alibi_slopes=alibi_slopes,
                                            **conventions)


class DecodeTopLeft(ConventionFault):
    """A decode step as causal attention over the cached plus new keys with the top-left diagonal (torch's
    ``is_causal``): new token `t` sees keys ``0 .. t`` instead of the cache and the new keys up to its
    own. onnx/onnx#8068: the Attention operator's ``is_causal`` was top-left aligned against an external
    KV cache, masking out valid past keys."""

    name = "faulty.decode_top_left"
    caught_by = ("decode",)
    source = "https://github.com/onnx/onnx/pull/8068"

    def decode_step(self, q_new: Array, k_cache: Array, v_cache: Array, k_new: Array, v_new: Array, dtype: str,
                    *, scale: float | None = None, cache_lengths: Array | None = None) -> Array:
        B, T_new, S_past = q_new.shape[0], q_new.shape[2], k_cache.shape[2]
        valid = decode_step_mask(cache_lengths, B, S_past, T_new)  # padding of the cache stays hidden
        valid = valid | (np.arange(S_past + T_new) >= S_past)[None, None]  # every new key: the causal flag decides
        k, v = np.concatenate([k_cache, k_new], axis=2), np.concatenate([v_cache, v_new], axis=2)
        return scaled_dot_product_attention(q_new, k, v, mask=valid[:, None], causal=True, alignment="top_left",
                                            scale=scale, dtype=dtype, fully_masked="zeros")


class KeyLengthsOffByOne(ConventionFault):
    """A ragged batch's key lengths read one too long (``s <= length`` for ``s < length``): each element
    attends to its first padded key. jax-ml/jax#23349: `dot_product_attention` not respecting
    `key_value_seq_lengths`, a ragged batch attending to padded keys."""

    name = "faulty.key_lengths_off_by_one"
    caught_by = ("lengths",)
    source = "https://github.com/jax-ml/jax/issues/23349"

    def convention_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                             scale: float | None, dtype: str, *, key_lengths: Array | None = None,
                             **conventions: Any) -> Array:
        if key_lengths is not None:
            key_lengths = np.minimum(np.asarray(key_lengths) + 1, k.shape[2])
        return super().convention_attention(q, k, v, mask, causal, scale, dtype, key_lengths=key_lengths,
                                            **conventions)


#: The catalog's convention faults (tests/faulty.py adds them to `FAULTY`).
CONVENTION_FAULTS: tuple[type[ConventionFault], ...] = (
    RotaryOtherLayout,
    WindowOneWider,
    SoftcapBeforeScale,
    AlibiPowerOfTwoSlopes,
    DecodeTopLeft,
    KeyLengthsOffByOne,
)
