"""The specification: scaled dot-product and multi-head attention in NumPy.

No framework is imported here. float64 is the default precision; `dtype=` evaluates the same
math in float32, float16 or (emulated) bfloat16.

The leaf modules (masks, positions, precision, softmax: NumPy and `_checks` only) are imported
here; the names of the modules built on the contract (attention, backward, chunked, error_bound)
load on first use (PEP 562): the contract (`attnconf.contract`) imports the leaf helpers and those
modules import the contract, so importing this package must not import them eagerly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
}

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


def __getattr__(name: str) -> Any:
    """Load a public name from its submodule on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module 'attnconf.reference' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"attnconf.reference.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
