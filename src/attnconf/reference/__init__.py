"""The specification: scaled dot-product and multi-head attention in NumPy.

No framework is imported here. float64 is the default precision; `dtype=` evaluates the same
math in float32, float16 or (emulated) bfloat16.

The leaf modules (alibi, masks, positions, precision, rotary, softcap, softmax: NumPy and `_checks`
only) are imported here; the names of the modules built on the contract (attention, backward,
chunked, error_bound, kv_cache)
load on first use (PEP 562): the contract (`attnconf.contract`) imports the leaf helpers and those
modules import the contract, so importing this package must not import them eagerly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from attnconf.reference.alibi import alibi_bias, alibi_slopes
from attnconf.reference.masks import (
    ALIGNMENTS,
    Window,
    additive_to_bool,
    aligned_positions,
    bool_to_additive,
    causal_mask,
    lengths_to_mask,
    padding_mask,
    window_mask,
)
from attnconf.reference.positions import sinusoidal_positions
from attnconf.reference.precision import UNIT_ROUNDOFF, round_to, storage_dtype
from attnconf.reference.rotary import (
    ROTARY_LAYOUTS,
    Rotary,
    convert_rotary_layout,
    rotary_embedding,
    rotary_frequencies,
    rotary_layout_permutation,
)
from attnconf.reference.softcap import softcap
from attnconf.reference.softmax import FULLY_MASKED_POLICIES, softmax

if TYPE_CHECKING:
    from attnconf.reference.attention import (
        multi_head_attention,
        output_projection,
        project_heads,
        scaled_dot_product_attention,
    )
    from attnconf.reference.backward import multi_head_attention_vjp, scaled_dot_product_attention_vjp
    from attnconf.reference.chunked import chunked_attention, chunked_multi_head_attention
    from attnconf.reference.error_bound import multi_head_attention_error_bound
    from attnconf.reference.kv_cache import decode_step, decode_step_mask

#: public name -> the submodule built on the contract that defines it (loaded on first use)
_WHERE = {
    "multi_head_attention": "attention",
    "output_projection": "attention",
    "project_heads": "attention",
    "scaled_dot_product_attention": "attention",
    "multi_head_attention_vjp": "backward",
    "scaled_dot_product_attention_vjp": "backward",
    "chunked_attention": "chunked",
    "chunked_multi_head_attention": "chunked",
    "multi_head_attention_error_bound": "error_bound",
    "decode_step": "kv_cache",
    "decode_step_mask": "kv_cache",
}

__all__ = [
    "ALIGNMENTS",
    "FULLY_MASKED_POLICIES",
    "ROTARY_LAYOUTS",
    "UNIT_ROUNDOFF",
    "Rotary",
    "Window",
    "additive_to_bool",
    "alibi_bias",
    "alibi_slopes",
    "aligned_positions",
    "bool_to_additive",
    "causal_mask",
    "chunked_attention",
    "chunked_multi_head_attention",
    "convert_rotary_layout",
    "decode_step",
    "decode_step_mask",
    "lengths_to_mask",
    "multi_head_attention",
    "multi_head_attention_error_bound",
    "multi_head_attention_vjp",
    "output_projection",
    "padding_mask",
    "project_heads",
    "rotary_embedding",
    "rotary_frequencies",
    "rotary_layout_permutation",
    "round_to",
    "scaled_dot_product_attention",
    "scaled_dot_product_attention_vjp",
    "sinusoidal_positions",
    "softcap",
    "softmax",
    "storage_dtype",
    "window_mask",
]


def __getattr__(name: str) -> Any:
    """Load a public name from its submodule on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module 'attnconf.reference' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"attnconf.reference.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
