"""The public module for adapter authors: the contract (`attnconf.contract`) and the kernel-adapter base.

Everything a third-party adapter is written against is importable from here: the dataclasses that
cross the contract, `Capabilities`, the `Adapter` / `KernelAdapter` protocols, the optional methods,
`AdapterBase` (every member with its default) and `KernelAdapterBase` (a kernel adapter whose
`multi_head_attention` is the reference's projections around `dot_product_attention`).
docs/writing-an-adapter.md is the guide.
"""

from attnconf.adapters.support import KernelAdapterBase
from attnconf.contract import (
    CONVENTIONS,
    FLOAT_DTYPES,
    ROTARY_LAYOUTS,
    Adapter,
    AdapterBase,
    Array,
    AttentionInputs,
    AttentionOutputs,
    AttentionWeights,
    Capabilities,
    KernelAdapter,
    Level,
    OptionalMethods,
    distribution_versions,
    release_in,
)

__all__ = [
    "CONVENTIONS",
    "FLOAT_DTYPES",
    "ROTARY_LAYOUTS",
    "Adapter",
    "AdapterBase",
    "Array",
    "AttentionInputs",
    "AttentionOutputs",
    "AttentionWeights",
    "Capabilities",
    "KernelAdapter",
    "KernelAdapterBase",
    "Level",
    "OptionalMethods",
    "distribution_versions",
    "release_in",
]
