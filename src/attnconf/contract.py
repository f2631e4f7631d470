"""The contract: what an adapter is, what crosses it, and what it declares it can take.

This module is the ground floor of attention-conformance. The specification (`attnconf.reference`)
takes and returns these dataclasses; the adapters implement these protocols (usually through
`AdapterBase`); the conformance chapters, the audit and the commands read only what is declared
here. It imports NumPy, `packaging` and the reference's leaf helpers (`attnconf.reference._checks`,
`attnconf.reference.precision`), nothing above them.

The names and shapes here are the public contract (docs/writing-an-adapter.md, CHANGELOG.md) and do
not change without a deprecation path. All arrays crossing the contract are NumPy arrays. bfloat16
arrays travel as float32 arrays holding bfloat16-representable values
(`attnconf.reference.round_to(x, "bfloat16")`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from attnconf.reference._checks import (
    FLOAT_DTYPES,
    as_bool_array,
    as_float_array,
    expect_dim,
    invalid,
)
from attnconf.reference.precision import UNIT_ROUNDOFF, round_to

__all__ = [
    "FLOAT_DTYPES",
    "Adapter",
    "AdapterBase",
    "AttentionInputs",
    "AttentionOutputs",
    "AttentionWeights",
    "CONVENTIONS",
    "Capabilities",
    "ROTARY_LAYOUTS",
    "KernelAdapter",
    "Level",
    "OptionalMethods",
    "distribution_versions",
    "installed_version",
    "lazy_capabilities",
    "release_in",
]

Array = np.ndarray[Any, Any]
Level = Literal["layer", "kernel", "rotary"]
#: The conventions of current models an adapter's `convention_attention` may take (docs/spec.md,
#: section 13): a sliding window, a logit soft cap, ALiBi slopes, ragged lengths.
CONVENTIONS = ("window", "softcap", "alibi", "lengths")
#: The two rotary layouts (`attnconf.reference.rotary_embedding`).
ROTARY_LAYOUTS = ("half", "interleaved")


def _check_lower_precision(field_name: str, entries: tuple[tuple[str, str, str], ...], dtypes: frozenset[str]) -> None:
    """Each entry a ``(dtype, lower, why)`` triple: a dtype in `dtypes` once, a less precise float dtype, a reason."""
    seen: set[str] = set()
    for entry in entries:
        if not (isinstance(entry, tuple) and len(entry) == 3 and all(isinstance(x, str) and x for x in entry)):
            raise invalid(field_name, "(dtype, lower precision, why) triples of non-empty strings", repr(entry))
        dtype, lower = entry[0], entry[1]
        if dtype not in dtypes or dtype in seen:
            raise invalid(field_name, "a dtype in dtypes, declared once", repr(entry))
        if lower not in FLOAT_DTYPES or UNIT_ROUNDOFF[lower] <= UNIT_ROUNDOFF[dtype]:
            raise invalid(field_name, f"a float dtype less precise than {dtype!r}", repr(entry))
        seen.add(dtype)


@dataclass(frozen=True)
class Capabilities:
    """What an adapter can take. A test that needs more is skipped with the reason.

    Attributes:
        level: ``"layer"`` (`multi_head_attention`), ``"kernel"`` (`dot_product_attention`), or
            ``"rotary"``: a rotary position embedding only (`rotary_embedding`), no attention; the
            attention chapters skip it and the rotary chapter runs.
        dtypes: the precisions it runs, from float64, float32, float16, bfloat16.
        boolean_mask: takes a boolean mask.
        causal: has a causal flag; `causal_alignment` names where its diagonal sits.
        causal_alignment: ``"top_left"`` or ``"bottom_right"`` when T != S; None if no causal.
        causal_with_mask: takes a causal flag and a mask together.
        returns_weights: returns the attention weights `(B, H, T, S)`.
        gqa: takes fewer key/value heads than query heads.
        mqa: with `gqa`, also takes a single key/value head for all query heads (H_kv = 1).
        kdim_vdim: takes key and value widths that differ from the query width (layer).
        value_dim: takes a value head width D_v different from D_k.
        head_dim: takes a key head width D_k other than E_q / H (layer; torch ties them).
        output_dim: takes an output width E_out different from E_q (layer).
        bias_free: runs without projection biases (layer).
        custom_scale: takes a logit scale other than 1/sqrt(D_k).
        weight_round_trip: implements `round_trip_weights` (layer).
        gradients: implements `multi_head_attention_vjp` / `dot_product_attention_vjp`.
        fused: attends without holding the `(B, H, T, S)` scores (a flash-style kernel: memory
            O((T + S) * D)); False (the default, the safe assumption): the scores are materialised,
            and the long chapter estimates a case's memory as three `(B, H, T, S)` intermediates.
        conventions: which of `CONVENTIONS` the kernel's `convention_attention` takes: "window"
            (a sliding window ``(left, right)``, bounds inclusive, positions aligned as
            `causal_alignment` says, top-left when None), "softcap" (``cap * tanh(logits / cap)``
            after the scale), "alibi" (per-head slopes, bias ``-slope * (p_q - p_k)``),
            "lengths" (a ragged batch as query and key lengths). Empty: no such method.
        kv_cache: implements `decode_step` (new queries against cached plus new keys and values,
            bottom-right aligned).
        rotary_layouts: the layouts its `rotary_embedding` implements, from `ROTARY_LAYOUTS`
            ("half": rotate-half, GPT-NeoX and Hugging Face LLaMA; "interleaved": pairs
            ``(2i, 2i+1)``, GPT-J and Meta's LLaMA).
        rotary_partial: its `rotary_embedding` rotates only the first `rotary_dim` of D.
        rotary_theta: its `rotary_embedding` takes a base `theta` other than 10000 (False: the
            framework fixes the base, e.g. GPT-J's table; `theta` is then always 10000.0).
        notes: free text shown by `attnconf list`.
        limits: ``(what, why)`` pairs for what the framework cannot do at all, each a dtype left
            out of `dtypes` or a flag above that is False (``("float16", "raises ... (link)")``):
            the chapters skip it with `why`, `attnconf list` shows it, and the audit still runs
            its scenarios there, to measure what happens.
        precision: ``(dtype, as_accurate_as, why)`` triples for a dtype the framework takes and
            returns but computes (in part) in a lower precision, e.g. ``("float64", "float32",
            "casts q, k, v to float32 (link)")``: it cannot deliver that dtype's accuracy at all.
            The chapters still run in `dtype` (inputs and outputs stay in it) and hold the result
            to the tolerance derived for an honest evaluation in `as_accurate_as`, so an error
            bigger than that precision's still fails; `attnconf list` and the run summary show
            the declaration and `why`, and the audit measures the effective precision. Computed
            per framework release, like every capability (declare it only for the releases
            measured).
        scale_precision: ``(dtype, scale_dtype, why)`` triples for a dtype whose evaluation is
            honest except that the logit scale (or its square root) is computed in the lower
            `scale_dtype`, e.g. ``("float64", "float32", "tf.cast of a Python float (link)")``:
            the error model then grants each logit that rounding
            (`multi_head_attention_error_bound(..., scale_dtype=...)`) and nothing more, so the
            rest of the evaluation is still held to `dtype`'s accuracy. Chapters without the
            error model (gradients, row sums, the long chapter) are not widened: declare their
            failures as bounded departures.
    """

    level: Level = "layer"
    dtypes: frozenset[str] = frozenset(FLOAT_DTYPES)
    boolean_mask: bool = True
    causal: bool = True
    causal_alignment: Literal["top_left", "bottom_right"] | None = "top_left"
    causal_with_mask: bool = True
    returns_weights: bool = True
    gqa: bool = False
    mqa: bool = True
    kdim_vdim: bool = False
    value_dim: bool = False
    head_dim: bool = True
    output_dim: bool = False
    bias_free: bool = True
    custom_scale: bool = False
    weight_round_trip: bool = False
    gradients: bool = False
    fused: bool = False
    conventions: frozenset[str] = frozenset()
    kv_cache: bool = False
    rotary_layouts: frozenset[str] = frozenset()
    rotary_partial: bool = False
    rotary_theta: bool = True
    notes: str = ""
    limits: tuple[tuple[str, str], ...] = ()
    precision: tuple[tuple[str, str, str], ...] = ()
    scale_precision: tuple[tuple[str, str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.level not in ("layer", "kernel", "rotary"):
            raise invalid("level", "'layer', 'kernel' or 'rotary'", repr(self.level))
        if set(self.conventions) - set(CONVENTIONS):
            raise invalid("conventions", f"a subset of {CONVENTIONS}", sorted(self.conventions))
        if set(self.rotary_layouts) - set(ROTARY_LAYOUTS):
            raise invalid("rotary_layouts", f"a subset of {ROTARY_LAYOUTS}", sorted(self.rotary_layouts))
        if self.level == "rotary" and not self.rotary_layouts:
            raise invalid("rotary_layouts", "at least one layout for level='rotary'", "an empty set")
        unknown = set(self.dtypes) - set(FLOAT_DTYPES)
        if unknown:
            raise invalid("dtypes", f"a subset of {FLOAT_DTYPES}", sorted(unknown))
        if self.causal and self.causal_alignment not in ("top_left", "bottom_right"):
            raise invalid(
                "causal_alignment", "'top_left' or 'bottom_right' when causal=True",
                repr(self.causal_alignment),
            )
        for entry in self.limits:
            if not (isinstance(entry, tuple) and len(entry) == 2 and all(isinstance(x, str) and x for x in entry)):
                raise invalid("limits", "(what, why) pairs of non-empty strings", repr(entry))
            what = entry[0]
            flag = getattr(self, what, None) if what in self.__dataclass_fields__ else None
            if what in FLOAT_DTYPES:
                if what in self.dtypes:
                    raise invalid("limits", f"a dtype left out of dtypes ({what!r} is in dtypes)", repr(entry))
            elif flag is not False:
                raise invalid("limits", "a dtype left out of dtypes or a capability flag that is False", repr(entry))
        _check_lower_precision("precision", self.precision, self.dtypes)
        _check_lower_precision("scale_precision", self.scale_precision, self.dtypes)

    def limit(self, what: str) -> str | None:
        """Why the framework cannot do `what` (a dtype or a capability), or None if not declared."""
        return next((why for name, why in self.limits if name == what), None)

    def accuracy(self, dtype: str) -> str:
        """The precision whose honest evaluation bounds this adapter's errors in `dtype`: `dtype`
        itself unless `precision` declares a lower one."""
        return next((lower for name, lower, _ in self.precision if name == dtype), dtype)

    def precision_reason(self, dtype: str) -> str | None:
        """Why results in `dtype` only have a lower precision's accuracy, or None if not declared."""
        return next((why for name, _, why in self.precision if name == dtype), None)

    def scale_accuracy(self, dtype: str) -> str | None:
        """The precision the logit scale is computed in for `dtype`, when declared lower; else None."""
        return next((lower for name, lower, _ in self.scale_precision if name == dtype), None)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dtypes"] = [t for t in FLOAT_DTYPES if t in self.dtypes]
        d["conventions"] = [c for c in CONVENTIONS if c in self.conventions]
        d["rotary_layouts"] = [r for r in ROTARY_LAYOUTS if r in self.rotary_layouts]
        d["limits"] = dict(self.limits)
        d["precision"] = {name: {"as_accurate_as": lower, "why": why} for name, lower, why in self.precision}
        d["scale_precision"] = {name: {"scale_in": lower, "why": why} for name, lower, why in self.scale_precision}
        return d


@dataclass(frozen=True)
class AttentionInputs:
    """query `(B, T, E_q)`, key `(B, S, E_k)`, value `(B, S, E_v)`, mask `(B, T, S)` or None.

    `mask` is boolean, True = may attend. `causal` applies the causal mask with the alignment the
    adapter declares. `scale` is the logit scale, `1/sqrt(D_k)` when None.
    """

    query: Array
    key: Array
    value: Array
    mask: Array | None = None
    causal: bool = False
    scale: float | None = None

    def __post_init__(self) -> None:
        q = as_float_array("query", self.query, 3)
        k = as_float_array("key", self.key, 3)
        v = as_float_array("value", self.value, 3)
        expect_dim("key", k, 0, q.shape[0], "batch B, as in query")
        expect_dim("value", v, 0, q.shape[0], "batch B, as in query")
        expect_dim("value", v, 1, k.shape[1], "keys S, as in key")
        if self.mask is not None:
            m = as_bool_array("mask", self.mask, 3)
            if m.shape != (q.shape[0], q.shape[1], k.shape[1]):
                raise invalid("mask", f"shape (B, T, S)={(q.shape[0], q.shape[1], k.shape[1])}", m.shape)
        if not isinstance(self.causal, (bool, np.bool_)):
            raise invalid("causal", "a bool", repr(self.causal))
        if self.scale is not None and (
            isinstance(self.scale, bool) or not np.isfinite(self.scale) or self.scale <= 0
        ):
            raise invalid("scale", "a positive finite float or None", repr(self.scale))

    @property
    def shape(self) -> dict[str, int]:
        B, T, E_q = self.query.shape
        return {"B": B, "T": T, "S": self.key.shape[1], "E_q": E_q,
                "E_k": self.key.shape[2], "E_v": self.value.shape[2]}

    def astype(self, dtype: str) -> AttentionInputs:
        """Inputs rounded to precision `dtype` (bfloat16 kept in float32)."""
        rounded: dict[int, Array] = {}

        def rnd(a: Array) -> Array:  # keeps self-attention's shared arrays shared
            if id(a) not in rounded:
                rounded[id(a)] = round_to(a, dtype)
            return rounded[id(a)]

        return dataclasses.replace(self, query=rnd(self.query), key=rnd(self.key), value=rnd(self.value))


_WEIGHT_SHAPES = {
    "query_kernel": "(E_q, H, D_k)",
    "key_kernel": "(E_k, H_kv, D_k)",
    "value_kernel": "(E_v, H_kv, D_v)",
    "output_kernel": "(H, D_v, E_out)",
    "query_bias": "(H, D_k)",
    "key_bias": "(H_kv, D_k)",
    "value_bias": "(H_kv, D_v)",
    "output_bias": "(E_out,)",
}


@dataclass(frozen=True)
class AttentionWeights:
    """Canonical multi-head attention weights, einsum layout (`x @ W`).

    query_kernel `(E_q, H, D_k)`, key_kernel `(E_k, H_kv, D_k)`, value_kernel `(E_v, H_kv, D_v)`,
    output_kernel `(H, D_v, E_out)`; biases query_bias `(H, D_k)`, key_bias `(H_kv, D_k)`,
    value_bias `(H_kv, D_v)`, output_bias `(E_out,)`, each optional. `H_kv` divides `H`.
    """

    query_kernel: Array
    key_kernel: Array
    value_kernel: Array
    output_kernel: Array
    query_bias: Array | None = None
    key_bias: Array | None = None
    value_bias: Array | None = None
    output_bias: Array | None = None

    NAMES: ClassVar[tuple[str, ...]] = tuple(_WEIGHT_SHAPES)

    def __post_init__(self) -> None:
        wq = as_float_array("query_kernel", self.query_kernel, 3)
        wk = as_float_array("key_kernel", self.key_kernel, 3)
        wv = as_float_array("value_kernel", self.value_kernel, 3)
        wo = as_float_array("output_kernel", self.output_kernel, 3)
        H, D_k = wq.shape[1], wq.shape[2]
        H_kv, D_v = wv.shape[1], wv.shape[2]
        expect_dim("key_kernel", wk, 2, D_k, "D_k, as in query_kernel")
        expect_dim("value_kernel", wv, 1, wk.shape[1], "H_kv, as in key_kernel")
        expect_dim("output_kernel", wo, 0, H, "H, as in query_kernel")
        expect_dim("output_kernel", wo, 1, D_v, "D_v, as in value_kernel")
        if H % H_kv:
            raise invalid("key_kernel", f"a number of kv heads H_kv that divides H={H}", H_kv)
        expected = {"query_bias": (H, D_k), "key_bias": (H_kv, D_k),
                    "value_bias": (H_kv, D_v), "output_bias": (wo.shape[2],)}
        for name, shape in expected.items():
            b = getattr(self, name)
            if b is not None:
                b = as_float_array(name, b, len(shape))
                if b.shape != shape:
                    raise invalid(name, f"shape {_WEIGHT_SHAPES[name]}={shape}", b.shape)

    @property
    def num_heads(self) -> int:
        return int(self.query_kernel.shape[1])

    @property
    def num_kv_heads(self) -> int:
        return int(self.key_kernel.shape[1])

    @property
    def key_head_dim(self) -> int:
        return int(self.query_kernel.shape[2])

    @property
    def value_head_dim(self) -> int:
        return int(self.value_kernel.shape[2])

    @property
    def query_dim(self) -> int:
        return int(self.query_kernel.shape[0])

    @property
    def key_dim(self) -> int:
        return int(self.key_kernel.shape[0])

    @property
    def value_dim(self) -> int:
        return int(self.value_kernel.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.output_kernel.shape[2])

    @property
    def has_bias(self) -> bool:
        return any(getattr(self, n) is not None for n in ("query_bias", "key_bias", "value_bias", "output_bias"))

    def arrays(self) -> dict[str, Array]:
        """The arrays that are present, by canonical name."""
        return {n: getattr(self, n) for n in self.NAMES if getattr(self, n) is not None}

    def astype(self, dtype: str) -> AttentionWeights:
        """Weights rounded to precision `dtype` (bfloat16 kept in float32)."""
        return dataclasses.replace(self, **{n: round_to(a, dtype) for n, a in self.arrays().items()})


@dataclass(frozen=True)
class AttentionOutputs:
    """output `(B, T, E_out)` and weights `(B, H, T, S)` or None."""

    output: Array
    weights: Array | None = None
    extras: dict[str, Any] = field(default_factory=dict)



@runtime_checkable
class Adapter(Protocol):
    """One framework's attention behind the contract: every member the project reads.

    Layer-level adapters implement `multi_head_attention`; kernel-level adapters implement
    `dot_product_attention` on `(B, H, T, D)` arrays and declare ``level="kernel"`` (and, to run
    the layer-level chapters, a `multi_head_attention` around it: `KernelAdapterBase` in
    `attnconf.adapters.base` provides it). `AdapterBase` gives every attribute but `name`,
    `capabilities` and the attention method a documented default.

    Attributes:
        name: the adapter name shown in test ids and reports, unique in the registry.
        capabilities: what it can take (`Capabilities`).
        framework: a short framework label for reports ("torch", "keras", "jax", ...).
        api: the framework API exercised, e.g. "torch.nn.MultiheadAttention".
        distributions: PyPI distributions whose installed versions are reported.
        modules: import names that must be importable for the adapter to run.
        process_group: adapters with the same group share a worker process; None runs in the
            calling process (pure NumPy only: a framework belongs in a worker).
        environment: environment variables its worker process needs (e.g. KERAS_BACKEND).
        first_release: ``(distribution, release, what older releases lack)`` or None.
    """

    name: str
    capabilities: Capabilities
    framework: str
    api: str
    distributions: tuple[str, ...]
    modules: tuple[str, ...]
    process_group: str | None
    environment: dict[str, str]
    first_release: tuple[str, str, str] | None

    def versions(self) -> dict[str, str]:
        """Installed versions of `distributions`, by distribution name."""
        ...

    def missing(self) -> str | None:
        """Why the adapter cannot run here (a sentence), or None; must import nothing."""
        ...

    def multi_head_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str
    ) -> AttentionOutputs:
        """Multi-head attention on the canonical weights, in precision `dtype`: output `(B, T, E_out)`
        and, if `capabilities.returns_weights`, the attention weights `(B, H, T, S)`."""
        ...


@runtime_checkable
class KernelAdapter(Adapter, Protocol):
    """A kernel-level adapter (``capabilities.level == "kernel"``).

    `dot_product_attention` takes q `(B, H, T, D_k)`, k `(B, H_kv, S, D_k)`, v `(B, H_kv, S, D_v)`,
    mask `(B, H, T, S)` boolean (True = may attend) or None, the causal flag (with the alignment the
    capabilities declare), the logit scale (None: ``1/sqrt(D_k)``) and the precision; it returns the
    heads' outputs `(B, H, T, D_v)`. `multi_head_attention` is still required: the layer-level
    chapters call it (`KernelAdapterBase` builds it from the reference's projections).
    """

    def dot_product_attention(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
        scale: float | None, dtype: str,
    ) -> Array:
        """The heads' outputs `(B, H, T, D_v)` in precision `dtype`."""
        ...


class OptionalMethods(Protocol):
    """Optional methods an adapter may implement (each guarded by `hasattr` where used).

    round_trip_weights(weights, dtype) -> AttentionWeights
        Load canonical weights into the native layer, read them back out of it. Declared by
        ``capabilities.weight_round_trip``.
    native_mask_attention(inputs, weights, dtype, native_mask) -> AttentionOutputs
        Like `multi_head_attention`, but `native_mask` (a NumPy array `(B, T, S)`, boolean or
        float) is handed to the framework's own mask argument unconverted: no polarity flip, no
        additive conversion. The audit uses it to observe the native API's conventions.
    with_dropout(inputs, weights, dtype, rate) -> AttentionOutputs
        The layer built with attention dropout `rate`, called the framework's documented way
        for inference (e.g. `module.eval()`, `training=False`, `deterministic=True`).
    multi_head_attention_vjp(inputs, weights, dtype, cotangent) -> dict[str, ndarray]
        Gradients of `sum(output * cotangent)` (cotangent `(B, T, E_out)`) with respect to
        "query", "key", "value" and every present canonical weight name, each in the shape of its
        input (canonical layout). Declared by ``capabilities.gradients``.
    dot_product_attention_vjp(q, k, v, mask, causal, scale, dtype, cotangent) -> dict
        The kernel-level counterpart (cotangent `(B, H, T, D_v)`): keys "q", "k", "v", each in
        the shape of its input.
    convention_attention(q, k, v, mask, causal, scale, dtype, *, window=None, logit_softcap=None,
                         alibi_slopes=None, query_lengths=None, key_lengths=None) -> ndarray
        The kernel with the conventions of current models (``capabilities.conventions`` says
        which; only those are passed): q `(B, H, T, D_k)`, k `(B, H_kv, S, D_k)`, v
        `(B, H_kv, S, D_v)`, mask `(B, H, T, S)` or None, as `dot_product_attention`; `window`
        ``(left, right)`` ints or None (unbounded), inclusive; `logit_softcap` a positive float;
        `alibi_slopes` `(H,)`; `query_lengths`, `key_lengths` `(B,)` ints. Returns
        `(B, H, T, D_v)`; the spec is `attnconf.reference.scaled_dot_product_attention` with the
        same keywords (padded query rows are compared only where they have a visible key).
    decode_step(q_new, k_cache, v_cache, k_new, v_new, dtype, *, scale=None, cache_lengths=None)
        One decode step against a KV cache (``capabilities.kv_cache``): q_new `(B, H, T_new, D_k)`,
        k_cache `(B, H_kv, S_past, D_k)`, v_cache `(B, H_kv, S_past, D_v)`, k_new and v_new
        `(B, H_kv, T_new, D)`, cache_lengths `(B,)` valid past entries of a padded cache or None.
        Returns `(B, H, T_new, D_v)`; the spec is `attnconf.reference.decode_step`.
    rotary_embedding(x, positions, dtype, *, layout, rotary_dim=None, theta=10000.0) -> ndarray
        The framework's rotary position embedding (``capabilities.rotary_layouts``): x
        `(B, H, N, D)`, positions `(B, N)` ints, `layout` one of the declared layouts,
        `rotary_dim` (passed only with ``capabilities.rotary_partial``), `theta` the base (other
        than 10000.0 only with ``capabilities.rotary_theta``).
        Returns `(B, H, N, D)`; the spec is `attnconf.reference.rotary_embedding`.
    expected_differences (attribute)
        The adapter's own declared departures, a list of dicts in the format of
        `attnconf/conformance/expected/*.toml` (docs/writing-an-adapter.md).
    """

    expected_differences: list[dict[str, Any]]

    def round_trip_weights(self, weights: AttentionWeights, dtype: str) -> AttentionWeights: ...

    def native_mask_attention(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, native_mask: Array
    ) -> AttentionOutputs: ...

    def with_dropout(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, rate: float
    ) -> AttentionOutputs: ...

    def multi_head_attention_vjp(
        self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str, cotangent: Array
    ) -> dict[str, Array]: ...

    def dot_product_attention_vjp(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
        scale: float | None, dtype: str, cotangent: Array,
    ) -> dict[str, Array]: ...

    def convention_attention(
        self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool, scale: float | None, dtype: str,
        *, window: tuple[int | None, int | None] | None = None, logit_softcap: float | None = None,
        alibi_slopes: Array | None = None, query_lengths: Array | None = None, key_lengths: Array | None = None,
    ) -> Array: ...

    def decode_step(
        self, q_new: Array, k_cache: Array, v_cache: Array, k_new: Array, v_new: Array, dtype: str,
        *, scale: float | None = None, cache_lengths: Array | None = None,
    ) -> Array: ...

    def rotary_embedding(
        self, x: Array, positions: Array, dtype: str, *, layout: str, rotary_dim: int | None = None,
        theta: float = 10000.0,
    ) -> Array: ...


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
    """The public base class of adapters: every `Adapter` member but the attention method, with defaults.

    Subclass it, set `name` and `capabilities` (and the attributes below that differ from the
    defaults), and implement `multi_head_attention` (or derive from `KernelAdapterBase` in
    `attnconf.adapters.base` and implement `dot_product_attention`).

    Class attributes (defaults in brackets):
        name: the adapter name shown in test ids [required].
        capabilities: what it can take [required]: assigned, or computed on first read by the
            classmethod `_capabilities()` and cached per class (`lazy_capabilities`).
        framework: a short framework label for reports ("torch", "keras", "jax", ...) ["numpy"].
        api: the framework API exercised, e.g. "torch.nn.MultiheadAttention" [""].
        distributions: PyPI distributions whose versions are reported [("numpy",)].
        modules: import names that must be importable (checked without importing them) [("numpy",)].
        process_group: adapters with the same group may share a worker process; None runs
            in the calling process [None: set it for any adapter that imports a framework].
        environment: environment variables the worker process needs (e.g. KERAS_BACKEND) [{}].
        first_release: ``(distribution, release, what older releases lack)`` [None].
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
