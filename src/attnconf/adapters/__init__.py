"""The adapter contract (base), the registry, and one module per framework."""

from attnconf.contract import (
    Adapter,
    AttentionInputs,
    AttentionOutputs,
    AttentionWeights,
    Capabilities,
    KernelAdapter,
)

__all__ = [
    "Adapter",
    "AttentionInputs",
    "AttentionOutputs",
    "AttentionWeights",
    "Capabilities",
    "KernelAdapter",
]
