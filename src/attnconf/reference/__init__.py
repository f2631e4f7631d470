"""The specification: scaled dot-product and multi-head attention in NumPy.

No framework is imported here. float64 is the default precision; `dtype=` evaluates the same
math in float32, float16 or (emulated) bfloat16.
"""

from attnconf.reference.attention import (
    multi_head_attention,
    output_projection,
    project_heads,
    scaled_dot_product_attention,
)
from attnconf.reference.backward import multi_head_attention_vjp, scaled_dot_product_attention_vjp
from attnconf.reference.chunked import chunked_attention, chunked_multi_head_attention
from attnconf.reference.error_bound import multi_head_attention_error_bound
from attnconf.reference.masks import (
    ALIGNMENTS,
    additive_to_bool,
    bool_to_additive,
    causal_mask,
    padding_mask,
)
from attnconf.reference.positions import sinusoidal_positions
from attnconf.reference.precision import UNIT_ROUNDOFF, round_to, storage_dtype
from attnconf.reference.softmax import FULLY_MASKED_POLICIES, softmax

__all__ = [
    "ALIGNMENTS",
    "FULLY_MASKED_POLICIES",
    "UNIT_ROUNDOFF",
    "additive_to_bool",
    "bool_to_additive",
    "causal_mask",
    "chunked_attention",
    "chunked_multi_head_attention",
    "multi_head_attention",
    "multi_head_attention_error_bound",
    "multi_head_attention_vjp",
    "output_projection",
    "padding_mask",
    "project_heads",
    "round_to",
    "scaled_dot_product_attention",
    "scaled_dot_product_attention_vjp",
    "sinusoidal_positions",
    "softmax",
    "storage_dtype",
]
