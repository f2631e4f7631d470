"""Helpers for writing adapters: versions, availability, and the layer built on a kernel.

Nothing here is part of the public contract (base.py is); adapters may use it or not.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any, ClassVar

import numpy as np

from attnconf.adapters.base import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.reference._checks import invalid
from attnconf.reference.attention import output_projection, project_heads

Array = np.ndarray[Any, Any]

#: The four optional biases of the canonical weights, in projection order.
BIASES = ("query_bias", "key_bias", "value_bias", "output_bias")


class lazy_capabilities:  # noqa: N801 - used like `property`
    """A class attribute computed on first read: the class's `_capabilities()`, cached per class.

    `AdapterBase.capabilities` is one. Reading `capabilities` on an adapter class or instance calls
    the classmethod `_capabilities()` of that class once and keeps the result in the class's own
    ``__dict__`` (so a subclass computes, and caches, its own). Nothing runs when the module is
    imported: `_capabilities()` may read the installed framework, its API's signature with
    `inspect.signature` (importing the framework, in the process that reads the capabilities) and
    its release with `release_in` (metadata only).

    To compute them again, e.g. in a test that fakes another installed release, call
    ``lazy_capabilities.clear(cls)``: it forgets the values cached for `cls` and its subclasses.
    A class may instead assign ``capabilities = Capabilities(...)`` in its body, which replaces
    the descriptor with that fixed value.
    """

    _CACHE = "_cached_capabilities"

    def __get__(self, obj: object, owner: type[Any]) -> Capabilities:
        cached = owner.__dict__.get(self._CACHE)
        if cached is None:
            compute = getattr(owner, "_capabilities", None)
            if compute is None:
                raise AttributeError(f"{owner.__name__} declares no capabilities: assign `capabilities` or "
                                     "define the classmethod `_capabilities()`")
            cached = compute()
            if not isinstance(cached, Capabilities):
                raise TypeError(f"{owner.__name__}._capabilities() must return a Capabilities, "
                                f"got {type(cached).__name__}")
            setattr(owner, self._CACHE, cached)
        return cached

    @classmethod
    def clear(cls, owner: type[Any]) -> None:
        """Forget the capabilities cached for `owner` and every subclass of it."""
        pending = [owner]
        while pending:
            klass = pending.pop()
            if cls._CACHE in klass.__dict__:
                delattr(klass, cls._CACHE)
            pending.extend(klass.__subclasses__())


class AdapterBase:
    """Common attributes of this package's adapters.

    Class attributes:
        name: the adapter name shown in test ids.
        capabilities: what it can take; computed on first read by the classmethod
            `_capabilities()` and cached per class (`lazy_capabilities`), or assigned.
        framework: a short framework label for reports ("torch", "keras", "jax", ...).
        api: the framework API exercised, e.g. "torch.nn.MultiheadAttention".
        distributions: PyPI distributions whose versions are reported.
        modules: import names that must be importable (checked without importing them).
        process_group: adapters with the same group may share a worker process; None runs
            in the calling process.
        environment: environment variables the worker process needs (e.g. KERAS_BACKEND).
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = lazy_capabilities()  # type: ignore[assignment]
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
                return f"{distribution} {importlib.metadata.version(distribution)} {lack}"
        return None


def distribution_versions(distributions: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of `distributions` (missing ones are left out)."""
    out: dict[str, str] = {}
    for dist in distributions:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def release_in(distribution: str, specifier: str) -> bool:
    """Whether the installed `distribution` is a release in `specifier` (e.g. ``">=3.5,<3.7"``).

    False when it is not installed. Reads package metadata only, imports nothing: adapters use
    it to declare capabilities that a framework gained or lost in a known release.
    """
    from packaging.specifiers import SpecifierSet

    try:
        installed = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return SpecifierSet(specifier).contains(installed, prereleases=True)


def present_biases(weights: AttentionWeights) -> tuple[str, ...]:
    """The names in `BIASES` that `weights` has (not None), in projection order."""
    return tuple(n for n in BIASES if getattr(weights, n) is not None)


def one_bias_switch(weights: AttentionWeights, api: str, switch: str = "use_bias") -> bool:
    """The value of a layer's single bias switch (`switch`, e.g. Keras's and Flax's ``use_bias``) for
    `weights`: True with all four biases, False with none.

    Raises `ValueError` (argument `weights`; expected all four or none; received the ones present)
    for a partial set, which such a layer cannot hold.
    """
    present = present_biases(weights)
    if present and len(present) != len(BIASES):
        raise invalid("weights", f"all four biases or none ({api} has one `{switch}` switch)",
                      f"biases {list(present)} only")
    return bool(present)


class KernelAdapterBase(AdapterBase):
    """A kernel-level adapter; its layer is the NumPy projections around the framework kernel.

    Subclasses implement `dot_product_attention`. `multi_head_attention` projects with the
    reference in the requested precision, calls the kernel, and applies the reference's output
    projection (`kernel_layer`), so the layer-level chapters test the kernel on exactly the
    reference's projections; a `native_mask_attention` hands its own mask to `kernel_layer`.
    """

    def dot_product_attention(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
        scale: float | None, dtype: str,
    ) -> Array:
        raise NotImplementedError

    def multi_head_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str
    ) -> AttentionOutputs:
        """The layer: the kernel between the reference's projections; the mask `(B, T, S)` reaches
        the kernel as `(B, H, T, S)`."""
        mask = None
        if inputs.mask is not None:
            B, T, S = inputs.mask.shape
            mask = np.broadcast_to(inputs.mask[:, None], (B, weights.num_heads, T, S)).copy()
        return self.kernel_layer(inputs, weights, dtype, mask)

    def kernel_layer(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, mask: Array | None
    ) -> AttentionOutputs:
        """`dot_product_attention(q, k, v, mask, ...)` between the reference's input projections
        (`project_heads`) and output projection (`output_projection`), in precision `dtype`.

        `mask` goes to the kernel as given (`(B, H, T, S)`, or a kernel's own layout such as
        `(B, 1, T, S)` for a native-mask test); `inputs.mask` is not read. Returns the output
        `(B, T, E_out)` and no weights.
        """
        q = project_heads(inputs.query, weights.query_kernel, weights.query_bias, dtype)
        k = project_heads(inputs.key, weights.key_kernel, weights.key_bias, dtype)
        v = project_heads(inputs.value, weights.value_kernel, weights.value_bias, dtype)
        heads = np.asarray(self.dot_product_attention(q, k, v, mask, inputs.causal, inputs.scale, dtype))
        return AttentionOutputs(output=output_projection(heads, weights.output_kernel, weights.output_bias, dtype),
                                weights=None)
