"""Adapters: one module per framework API, the registry, placement and the worker; the contract re-exported."""

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
