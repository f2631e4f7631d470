"""Helpers for writing adapters: versions, availability, and the layer built on a kernel.

Nothing here is part of the public contract (base.py is); adapters may use it or not.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any, ClassVar

import numpy as np

from attnconf.adapters.base import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.reference.attention import project_heads
from attnconf.reference.precision import in_compute, round_to

Array = np.ndarray[Any, Any]


class AdapterBase:
    """Common attributes of this package's adapters.

    Class attributes:
        name: the adapter name shown in test ids.
        capabilities: what it can take.
        framework: a short framework label for reports ("torch", "keras", "jax", ...).
        api: the framework API exercised, e.g. "torch.nn.MultiheadAttention".
        distributions: PyPI distributions whose versions are reported.
        modules: import names that must be importable (checked without importing them).
        process_group: adapters with the same group may share a worker process; None runs
            in the calling process.
        environment: environment variables the worker process needs (e.g. KERAS_BACKEND).
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    framework: ClassVar[str] = "numpy"
    api: ClassVar[str] = ""
    distributions: ClassVar[tuple[str, ...]] = ("numpy",)
    modules: ClassVar[tuple[str, ...]] = ("numpy",)
    process_group: ClassVar[str | None] = None
    environment: ClassVar[dict[str, str]] = {}

    def versions(self) -> dict[str, str]:
        return distribution_versions(self.distributions)

    #: ``(distribution, first release, what older releases lack)`` when the API the adapter wraps
    #: appeared in a known release; older installed releases make the adapter unavailable.
    first_release: ClassVar[tuple[str, str, str] | None] = None

    @classmethod
    def missing(cls) -> str | None:
        """The reason the adapter cannot run here, or None; imports nothing."""
        for module in cls.modules:
            if importlib.util.find_spec(module) is None:
                return f"module {module!r} is not installed"
        if cls.first_release is not None:
            distribution, first, lack = cls.first_release
            if release_in(distribution, f"<{first}"):
                return f"{distribution} {installed_version(distribution)} {lack}"
        return None


#: Distributions that install a framework's importable package under another name; a version is
#: reported under the framework's own name (``tensorflow``) whichever of them installed it.
ALTERNATIVE_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow-cpu", "tensorflow-intel", "tensorflow-macos", "tensorflow-gpu", "tf-nightly",
                   "tf-nightly-cpu", "tf-nightly-intel", "tf-nightly-macos"),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "ort-nightly"),
    "torch": ("torch-nightly",),
}


def installed_version(distribution: str) -> str | None:
    """The installed version of `distribution`, or of the first alternative distribution that
    installs the same package (`ALTERNATIVE_DISTRIBUTIONS`: ``tensorflow-cpu`` for ``tensorflow``);
    None when none is installed. Reads package metadata only."""
    for name in (distribution, *ALTERNATIVE_DISTRIBUTIONS.get(distribution, ())):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def distribution_versions(distributions: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of `distributions` by name (missing ones are left out; see `installed_version`)."""
    found = {dist: installed_version(dist) for dist in distributions}
    return {dist: version for dist, version in found.items() if version is not None}


def release_in(distribution: str, specifier: str) -> bool:
    """Whether the installed `distribution` is a release in `specifier` (e.g. ``">=3.5,<3.7"``).

    False when it is not installed. Reads package metadata only, imports nothing: adapters use
    it to declare capabilities that a framework gained or lost in a known release.
    """
    from packaging.specifiers import SpecifierSet

    installed = installed_version(distribution)
    return installed is not None and SpecifierSet(specifier).contains(installed, prereleases=True)


class KernelAdapterBase(AdapterBase):
    """A kernel-level adapter; its layer is the NumPy projections around the framework kernel.

    Subclasses implement `dot_product_attention`. `multi_head_attention` projects with the
    reference in the requested precision, calls the kernel, and applies the output projection,
    so the layer-level chapters test the kernel on exactly the reference's projections.
    """

    def dot_product_attention(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
        scale: float | None, dtype: str,
    ) -> Array:
        raise NotImplementedError

    def multi_head_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str
    ) -> AttentionOutputs:
        q = project_heads(inputs.query, weights.query_kernel, weights.query_bias, dtype)
        k = project_heads(inputs.key, weights.key_kernel, weights.key_bias, dtype)
        v = project_heads(inputs.value, weights.value_kernel, weights.value_bias, dtype)
        H = weights.num_heads
        mask = None
        if inputs.mask is not None:
            B, T, S = inputs.mask.shape
            mask = np.broadcast_to(inputs.mask[:, None], (B, H, T, S)).copy()
        heads = np.asarray(
            self.dot_product_attention(q, k, v, mask, inputs.causal, inputs.scale, dtype)
        )
        out = np.einsum("bhtd,hde->bte", in_compute(heads, dtype), in_compute(weights.output_kernel, dtype))
        out = round_to(out, dtype)
        if weights.output_bias is not None:
            out = round_to(in_compute(out, dtype) + in_compute(weights.output_bias, dtype), dtype)
        return AttentionOutputs(output=out, weights=None)
