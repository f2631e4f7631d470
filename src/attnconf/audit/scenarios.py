"""The catalog of audit scenarios: stable ids, groups, what each measures, and its possible outcomes.

A scenario id never changes meaning once released (reports from different versions are merged by
id). `spec` is the outcome the specification defines (`attnconf.reference`), or None where
it defines none (a fully masked row has no mathematically defined output). Outcomes are observed by
the functions in `attnconf.audit.measure`; nothing here says what any adapter does.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from attnconf.audit.measure import conventions, gradients, heads, masks, nonfinite, outputs, precision
from attnconf.audit.observe import Context, Result

GROUPS: dict[str, str] = {
    "masking": "Masks",
    "outputs": "Returned weights, scale and dropout",
    "precision": "Precision and stability",
    "nonfinite": "NaN and inf from one key",
    "heads": "Heads and widths",
    "paths": "Code paths of one layer",
    "gradients": "Gradients",
    "conventions": "Conventions of current models",
}

#: Outcomes every scenario can have besides its own.
COMMON_OUTCOMES: dict[str, str] = {
    "unsupported": "the adapter lacks the method or capability the scenario needs (the reason says which)",
    "rejected": "the call raised a documented refusal: where the adapter declares it cannot go (a dtype left "
                "out of its capabilities or a capability flag False, the reason in capabilities.limits), or "
                "NotImplementedError; the detail has the reason and the message",
    "invalid": "the adapter returned something the contract does not allow",
    "crashed": "the call raised an exception that is not a documented refusal (the evidence has its type and "
               "message), or the adapter's worker process crashed or hung during this scenario",
    "not_run": "not run: the adapter's worker crashed in an earlier scenario",
    "audit_error": "the audit itself failed here (a bug in attnconf, not the adapter)",
}

_FULLY_MASKED = {
    "nan": "the row is NaN",
    "zeros": "the row's attention output is zero (a layer's output row equals its output bias)",
    "uniform": "the row attends to every key equally (the mean of the values)",
    "unmasked": "the row attends as if it had no mask",
    "other": "none of the above (see the evidence)",
}
_SPREAD = {
    "all_rows": "every query row of the poisoned batch element is non-finite",
    "some_rows": "some query rows of it are non-finite",
    "none": "no output is non-finite",
    "other_batches": "rows of other batch elements turn non-finite too",
}
_PRECISION = {
    "float32": "the softmax runs wider than the input and is rounded once (error within 0.5 ulp)",
    "indistinct": "the probe could not tell the precisions apart on this input",
    "other": "more error than a softmax evaluated entirely in the input precision",
}
_STABILITY = {
    "stable": "agrees with the float64 reference within the derived tolerance",
    "overflow": "NaN or inf in the weights (the softmax overflowed)",
    "inaccurate": "finite, but beyond the derived tolerance",
}


@dataclass(frozen=True)
class Scenario:
    """One behaviour to observe. `measure(ctx)` returns a `Result`; `cross` scenarios are measured
    across adapters after the per-adapter pass (their `measure` is unused)."""

    id: str
    group: str
    title: str
    description: str
    outcomes: dict[str, str]
    measure: Callable[[Context], Result]
    spec: str | None = None
    spec_note: str = ""
    on_error: str = "crashed"
    setup: dict[str, Any] = field(default_factory=dict)
    cross: bool = False
    #: `Capabilities` flags the scenario exercises (besides its dtype, `setup["dtype"]`): where the
    #: adapter declares one False, its cell is reported as not applicable.
    requires: tuple[str, ...] = ()

    def all_outcomes(self) -> dict[str, str]:
        """The scenario's own outcomes, then the common ones it does not describe itself."""
        return {**self.outcomes, **{k: v for k, v in COMMON_OUTCOMES.items() if k not in self.outcomes}}

    def needs(self) -> tuple[str, ...]:
        """The dtype and the capability flags the scenario exercises."""
        dtype = self.setup.get("dtype")
        return ((dtype,) if isinstance(dtype, str) else ()) + self.requires


def _cross(ctx: Context) -> Result:  # pragma: no cover - cross scenarios are measured by the runner
    raise AssertionError("cross scenarios are measured across adapters")


_BASE = {"probe": "one-hot (attnconf.audit.probes.onehot)", "B": 2, "H": 2, "T": 4, "S": 16, "D_k": 16, "E": 32,
         "dtype": "float32"}

_CONV = {"dtype": "float32", "probe": "seeded normal q, k (rounded to float32); one-hot values, so the output is "
                                      "the weights (attnconf.audit.measure.conventions)"}
_ROTARY = {"half": "rotate-half: pairs (i, i + D/2) (attnconf.reference.rotary_embedding, layout='half')",
           "interleaved": "pairs (2i, 2i + 1) (layout='interleaved')",
           "other": "neither layout at the given positions (see the distances)"}


def _rotary_layout(layout: str) -> Scenario:
    return Scenario(f"rotary_layout.{layout}", "conventions", f"Rotary layout asked for {layout!r}",
                    f"rotary_embedding(x, positions 0 .. 3, layout={layout!r}) on x (B, H, N, D) = (2, 2, 4, 8), "
                    "float32, compared with the reference in both layouts: which one it computes.",
                    _ROTARY, conventions.rotary_layout(layout), spec=layout,
                    spec_note="docs/spec.md 13.2: the layout asked for",
                    setup={**_CONV, "probe": "seeded normal x (2, 2, 4, 8)", "layout": layout})


def _fully_masked_row(dtype: str, description: str) -> Scenario:
    """The fully masked row scenario in `dtype` (float32's id has no suffix: it came first)."""
    suffix = "" if dtype == "float32" else f".{dtype}"
    return Scenario(f"fully_masked_row{suffix}", "masking", "Fully masked query row" + (f", {dtype}" if suffix else ""),
                    description, _FULLY_MASKED, masks.fully_masked_row(dtype),
                    spec_note="the spec defines no output for a row that sees no key",
                    setup={**_BASE, "dtype": dtype})


CATALOG: tuple[Scenario, ...] = (
    _fully_masked_row("float32", "One query row (batch 0, query 1) with every key masked out, in float32."),
    _fully_masked_row("float16", "The fully masked row in float16, where finite fill values such as -1e9 overflow."),
    _fully_masked_row("float64", "The fully masked row in float64, where a finite fill value such as -1e9 no longer "
                                 "swamps the logits (the row then attends as if unmasked)."),
    _fully_masked_row("bfloat16", "The fully masked row in bfloat16 (float32's range, 8 bits of precision)."),
    Scenario("causal_alignment", "masking", "Causal diagonal at T = 1, T < S and T > S, and with a mask",
             "causal=True at T = 4 < S = 16, at T = 1 (the decode step, S = 16), at T = 8 > S = 6 and at T = 4 < S "
             "with a key mask: where the diagonal sits on each, and whether it sits there on all of them. Rows that "
             "see no key under an alignment (the first T - S under bottom-right) are left out of its comparison; at "
             "T = 1 bottom-right and no causal mask give the same weights.",
             {"top_left": "key j visible to query i when j <= i, on every probe",
              "bottom_right": "key j visible to query i when j <= i + S - T, on every probe",
              "ignored": "the causal flag had no effect on any probe",
              "inconsistent": "each probe shows an alignment, but not the same one on all of them (it depends on "
                              "the shape or on the mask; the evidence lists each probe's)",
              "other": "some probe matches neither alignment (e.g. a mixture within one call)"},
             masks.causal_alignment,
             spec_note="the spec names both alignments and implies neither; each adapter declares its own",
             requires=("causal",),
             setup={**_BASE, "probes": {"T < S": {"T": 4, "S": 16}, "T = 1": {"T": 1, "S": 16},
                                        "T > S": {"T": 8, "S": 6, "D_k": 6, "E": 12},
                                        "T < S, with a mask": {"T": 4, "S": 16, "mask": "key 1 of batch 0, keys 12.. "
                                                               "of batch 1 hidden"}}}),
    Scenario("mask_polarity", "masking", "Boolean mask polarity of the native API",
             "A boolean (B, T, S) mask handed to the framework's own mask argument unconverted.",
             {"true_attends": "True means may attend", "true_masks": "True means masked out",
              "ignored": "the mask had no effect", "other": "none of the above"},
             masks.mask_polarity, spec="true_attends", spec_note="the spec's boolean masks: True means may attend",
             setup=_BASE),
    Scenario("additive_mask", "masking", "Additive float mask",
             "A float mask handed to the native API: first {0, -inf}, then finite values.",
             {"added": "the float mask is added to the logits",
              "inverted": "zeros in the float mask are masked out (read as a keep-mask)",
              "boolean": "read as a boolean mask: non-zero entries masked, their values ignored",
              "ignored": "the mask had no effect", "rejected": "a float mask is refused (the call raised)",
              "other": "none of the above"},
             masks.additive_mask, spec="added", spec_note="additive float masks are added to the logits",
             on_error="rejected", setup=_BASE),
    Scenario("mask_broadcast", "masking", "Rank-3 mask broadcasting",
             "A (B, T, S) boolean mask with B = H = 2 handed to the native API.",
             {"per_batch": "mask[b] applies to every head of batch element b",
              "batch_as_heads": "mask[h] applies to head h (the batch axis was broadcast against the heads)",
              "ignored": "the mask had no effect", "rejected": "a rank-3 mask is refused (the call raised)",
              "other": "none of the above"},
             masks.mask_broadcast, spec="per_batch", spec_note="a (B, T, S) mask applies to every head",
             on_error="rejected", setup=_BASE),
    Scenario("returned_weights", "outputs", "Returned attention weights",
             "The attention weights multi_head_attention returns.",
             {"per_head": "per head, (B, H, T, S)", "averaged": "averaged over heads",
              "none": "no weights returned", "other": "none of the above"},
             outputs.returned_weights, spec="per_head", spec_note="weights are returned per head (B, H, T, S)",
             setup=_BASE, requires=("returns_weights",)),
    Scenario("default_scale", "outputs", "Default logit scale",
             "No scale given: the scale fitted to the effective weights (D_k = 16, E = 32).",
             {"inv_sqrt_d_k": "1/sqrt(D_k)", "one": "1 (no scaling)", "inv_d_k": "1/D_k (scaled twice)",
              "inv_sqrt_embed_dim": "1/sqrt(E), the model width",
              "other": "none of the above"},
             outputs.default_scale, spec="inv_sqrt_d_k", spec_note="scale 1/sqrt(D_k) unless given", setup=_BASE),
    Scenario("custom_scale", "outputs", "Custom logit scale",
             f"scale={outputs.CUSTOM_SCALE} given through the contract.",
             {"honoured": "the given scale is used", "ignored": "1/sqrt(D_k) is used instead",
              "other": "none of the above"},
             outputs.custom_scale, spec="honoured", setup=_BASE, requires=("custom_scale",)),
    Scenario("dropout_inference", "outputs", "Dropout in inference mode",
             f"The layer built with dropout {outputs.DROPOUT_RATE}, called the documented way for inference.",
             {"inactive": "the output equals the dropout-free layer's", "active": "dropout still changes the output"},
             outputs.dropout_inference, spec="inactive", setup=_BASE),
    Scenario("softmax_precision.float16", "precision", "Softmax precision for float16 inputs",
             "Exact logits, one-hot values: the error of the weights in ulps of float16.",
             {**_PRECISION, "float16": "rounded more than once in float16: part or all of the softmax runs in float16"},
             precision.softmax_precision("float16"),
             spec_note="the spec defines the math; the reference computes half precision in float32",
             setup={**_BASE, "probe": "one-hot, exact", "dtype": "float16"}),
    Scenario("softmax_precision.bfloat16", "precision", "Softmax precision for bfloat16 inputs",
             "Exact logits, one-hot values: the error of the weights in ulps of bfloat16.",
             {**_PRECISION, "bfloat16": "rounded more than once in bfloat16: part or all of the softmax runs in bfloat16"},
             precision.softmax_precision("bfloat16"),
             spec_note="the spec defines the math; the reference computes half precision in float32",
             setup={**_BASE, "probe": "one-hot, exact", "dtype": "bfloat16"}),
    Scenario("large_logits", "precision", "Large logits, float32",
             "Exact logits near ±1e5 in float32: a softmax that does not subtract the maximum overflows.",
             _STABILITY, precision.large_logits("float32", 1e5), spec="stable",
             setup={**_BASE, "probe": "one-hot, exact large logits"}),
    Scenario("large_logits.float16", "precision", "Large logits, float16",
             "Exact logits near ±1000 in float16.",
             _STABILITY, precision.large_logits("float16", 1000.0), spec="stable",
             setup={**_BASE, "probe": "one-hot, exact large logits", "dtype": "float16"}),
    Scenario("nan_key", "nonfinite", "NaN in a visible key",
             "Key 2 of batch element 0 is NaN in the key input; every query sees it.",
             _SPREAD, nonfinite.poisoned_key("key", float("nan"), masked=False), spec="all_rows",
             spec_note="IEEE arithmetic: a NaN logit makes its softmax row NaN", setup=_BASE),
    Scenario("inf_key", "nonfinite", "inf in a visible key",
             "Key 2 of batch element 0 is +inf in the key input; every query sees it.",
             _SPREAD, nonfinite.poisoned_key("key", float("inf"), masked=False), spec="all_rows",
             spec_note="the projection of an inf key holds inf - inf = NaN", setup=_BASE),
    Scenario("nan_masked_key", "nonfinite", "NaN in a masked key",
             "Key 2 of batch element 0 is NaN in the key input and masked out for every query.",
             _SPREAD, nonfinite.poisoned_key("key", float("nan"), masked=True), spec="none",
             spec_note="masked keys are excluded from the softmax, never added to", setup=_BASE),
    Scenario("nan_masked_value", "nonfinite", "NaN in a masked key's value",
             "Key 2 of batch element 0 is NaN in the value input and masked out for every query.",
             _SPREAD, nonfinite.poisoned_key("value", float("nan"), masked=True),
             spec_note="weight 0 times NaN is NaN in IEEE arithmetic; the spec does not say", setup=_BASE),
    Scenario("gqa", "heads", "Grouped-query heads",
             "4 query heads on 2 key/value heads: which kv head each query head reads.",
             {"consecutive": "query head h reads kv head h // (H / H_kv)",
              "interleaved": "query head h reads kv head h % H_kv",
              "other": "none of the above"},
             heads.gqa, spec="consecutive", setup={**_BASE, "H": 4, "H_kv": 2, "S": 6, "D_k": 6, "E": 24},
             requires=("gqa",)),
    Scenario("kdim_vdim", "heads", "Key and value widths",
             "Key width 10 and value width 7 next to a query width of 16.",
             {"supported": "agrees with the reference", "differs": "runs, but disagrees with the reference"},
             heads.kdim_vdim, spec="supported",
             setup={"probe": "attnconf.conformance.cases", "E_q": 16, "E_k": 10, "E_v": 7, "dtype": "float32"},
             requires=("kdim_vdim",)),
    Scenario("code_paths", "paths", "Code paths of one layer",
             "Adapters of one layer (X, X[fast], X[scores]) compared on every probe both ran.",
             {"identical": "bit for bit the same", "close": "within the classification tolerance",
              "differs": "some probe differs (see which)"},
             _cross, cross=True),
    Scenario("grad_fully_masked_row", "gradients", "Gradients through a fully masked row",
             "The vector-Jacobian product with a cotangent on the fully masked row only (float32).",
             {"zero": "every gradient is zero", "finite": "finite, some non-zero",
              "nan": "NaN or inf in some gradient",
              "inconsistent": "finite, but not the derivative of the adapter's own forward pass (checked by a "
                              "central finite difference along a random direction)"},
             gradients.grad_fully_masked_row,
             spec_note="the spec defines no output, hence no gradient, for the row", setup=_BASE,
             requires=("gradients",)),
    _rotary_layout("half"),
    _rotary_layout("interleaved"),
    Scenario("rotary_offset", "conventions", "Rotary at a position offset (a decode step)",
             f"rotary_embedding of {conventions.N_DECODE} tokens at positions p, p + 1 with p = "
             f"{conventions.ROTARY_OFFSETS} per batch element (positions (B, N)), in the first declared layout "
             "('half' where declared).",
             {"offset_ok": "rotated at the positions given (in either layout)",
              "offset_ignored": "rotated at 0, 1, ... whatever the positions (the offset is lost)",
              "other": "neither (see the distances)"},
             conventions.rotary_offset, spec="offset_ok",
             spec_note="docs/spec.md 13.2: positions are any integers; a decode step at p passes p, p + 1, ...",
             setup={**_CONV, "probe": "seeded normal x (2, 2, 2, 8)", "positions": [[5, 6], [9, 10]]}),
    Scenario("decode_alignment", "conventions", "Decode step against a KV cache",
             f"decode_step with T_new = 1 and 2 new tokens against a full cache of {conventions.S_PAST} keys: which "
             "keys each new token sees.",
             {"bottom_right": "new token t sees the cache and new keys 0 .. t (the last T_new rows of causal "
                              "attention over the whole sequence), on both probes",
              "top_left": "new token t sees only keys 0 .. t of the cache (the diagonal at the top left)",
              "unmasked": "every new token sees every cached and new key (no causal mask among the new tokens)",
              "other": "none of these, or not the same one on both probes (the evidence lists each)"},
             conventions.decode_alignment, spec="bottom_right",
             spec_note="docs/spec.md 13.6: a decode step is causal attention with bottom-right alignment",
             setup={**_CONV, "B": 2, "H": 2, "D_k": 8, "S_past": conventions.S_PAST, "T_new": [1, 2]},
             requires=("kv_cache",)),
    Scenario("window_bounds", "conventions", "Sliding-window bounds",
             f"window (left, right) = {conventions.WINDOW} on T = S = 6 (square: no alignment question), no causal "
             "flag: which keys each query sees.",
             {"inclusive": "2 keys before the query and the query's own (bounds inclusive)",
              "exclusive": "one key narrower: 1 key before and the query's own",
              "one_wider": "one key wider: 3 keys before and the query's own",
              "ignored": "the window had no effect",
              "other": "none of the above"},
             conventions.window_bounds, spec="inclusive",
             spec_note="docs/spec.md 13.4: p_q - left <= p_k <= p_q + right, both bounds inclusive",
             setup={**_CONV, "B": 2, "H": 2, "T": 6, "S": 6, "D_k": 8, "window": list(conventions.WINDOW)}),
    Scenario("softcap_placement", "conventions", "Logit soft cap: before or after the scale",
             f"logit_softcap = {conventions.SOFTCAP} on logits of a few units (D_k = 8, scale 1/sqrt(8)).",
             {"after_scale": "c * tanh(scale * q.k / c)", "before_scale": "scale * c * tanh(q.k / c) (the raw dot "
              "products capped)", "ignored": "the cap had no effect", "other": "none of the above"},
             conventions.softcap_placement, spec="after_scale",
             spec_note="docs/spec.md 13.5: the cap applies to the scaled logits (Gemma 2)",
             setup={**_CONV, "B": 2, "H": 2, "T": 5, "S": 5, "D_k": 8, "cap": conventions.SOFTCAP}),
    Scenario("alibi_slopes", "conventions", "ALiBi bias for 6 and 12 heads",
             "The paper's slopes for 6 and 12 heads (alibi_slopes(H)) passed as alibi_slopes, T = S = 5, no causal "
             "mask: the bias the adapter adds, in the positions of its alignment.",
             {"spec": "-slope * (p_q - p_k) with the slopes given, on both probes",
              "symmetric": "-slope * |p_q - p_k| (keys after the query penalised too)",
              "sign_flipped": "+slope * (p_q - p_k)",
              "geometric_slopes": "the signed bias with 2**(-8k/H) in place of the slopes given (the paper's rule "
                                  "only for a power of two)",
              "other": "none of these, or not the same one for 6 and 12 heads (the evidence lists each)"},
             conventions.alibi, spec="spec",
             spec_note="docs/spec.md 13.3: bias -slope * (p_q - p_k), the slopes as given",
             setup={**_CONV, "B": 1, "H": list(conventions.ALIBI_HEADS), "T": 5, "S": 5, "D_k": 8}),
    Scenario("ragged_padded_rows", "conventions", "Padded query rows of a ragged batch",
             f"query_lengths = {conventions.QUERY_LENGTHS}, key_lengths = {conventions.KEY_LENGTHS} on T = S = 5: "
             "what the padded query rows (element 0, queries 3 and 4) hold.",
             {"zeros": "every weight 0 (the output row is zero)", "uniform": "1/S on every key (the mean of all values)",
              "nan": "NaN", "key_padding_only": "the row attends like a real query: only the key padding applies",
              "other": "none of the above"},
             conventions.ragged_padded_rows,
             spec_note="docs/spec.md 13.7: a padded query row is a fully masked row (section 7): the reference's "
                       "fully_masked policy, zeros by default, and no single answer",
             setup={**_CONV, "B": 2, "H": 2, "T": 5, "S": 5, "D_k": 8,
                    "query_lengths": list(conventions.QUERY_LENGTHS), "key_lengths": list(conventions.KEY_LENGTHS)}),
)

SCENARIOS: dict[str, Scenario] = {s.id: s for s in CATALOG}


def select(ids: list[str] | None) -> list[Scenario]:
    """Scenarios by id (all when None), in catalog order; `KeyError` names an unknown id and close ones."""
    if not ids:
        return list(CATALOG)
    for i in ids:
        if i not in SCENARIOS:
            close = difflib.get_close_matches(i, list(SCENARIOS), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise KeyError(f"Unknown scenario {i!r}.{hint} Known scenarios: {', '.join(SCENARIOS)}.")
    wanted = set(ids)
    return [s for s in CATALOG if s.id in wanted]
