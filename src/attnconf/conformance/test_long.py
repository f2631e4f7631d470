"""Chapter `long`: outputs on long sequences (up to N = 16,384) agree with the chunked reference.

The plain reference holds the `(T, S)` scores and stops fitting long before frameworks do; the
chunked reference (`attnconf.reference.chunked_attention`) computes the same values in O(N*d)
memory. `same` is the chunked reference evaluated in the dtype and the tolerance is derived as
everywhere (`tolerances.derive`); `exact` is the chunked reference in float64, since extended
precision has no BLAS and would take hours at this length. For float64 itself, `same` is the
chunked reference in float64 summing in another order (keys in blocks of `REORDER_BLOCK_K`, which
divides none of the lengths), so the reference error is measured, not assumed: over 4,096 to
16,384 keys an honest float64 evaluation is some 20-40 ulps off, past the two-ulp floor, which
failed torch's own float64 layer at 1.2-2.7 times it (thorough run, 2026-12-02). Long
sequences are where a softmax sum accumulated in a narrow type, or a mask or causal offset that
wraps at some block boundary, shows.

Kernel-level adapters are called through `dot_product_attention` on `(1, H, T, 64)` arrays;
layer-level adapters through `multi_head_attention` (E = 128, H = 2, D = 64). Only the output is
compared: a layer that returns `(B, H, T, S)` weights is skipped where they would not fit in
`WEIGHTS_LIMIT`.

Memory is known before a case runs (`footprint`): an adapter that is not `fused` (capabilities)
holds the `(B, H, T, S)` scores, three of them (logits, exponentials, weights) and one more for
weights it returns; a fused one holds O((T + S) * D). A case whose estimate, added to what the
adapter's process holds already, passes the memory budget (``--attnconf-memory-budget``; default
half the memory available when the session starts) is skipped with the numbers. A worker process
that passes the budget all the same is stopped, and that test fails (`attnconf.adapters.worker`).

The chapter is slow (seconds per case): it runs in the ``thorough`` Hypothesis profile
(``--hypothesis-profile thorough``) or with ``--attnconf-long``, and is skipped otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from attnconf.adapters.worker import RemoteAdapter
from attnconf.conformance import memo, plugin, profiles
from attnconf.conformance.cases import seed_for
from attnconf.conformance.check import as_float64, weights_float64
from attnconf.contract import AttentionInputs, AttentionWeights
from attnconf.memory import GIB, format_size, rss_bytes, score_bytes
from attnconf.reference import chunked_attention, chunked_multi_head_attention, round_to
from attnconf.reference.precision import compute_dtype

Array = np.ndarray[Any, Any]

#: Returned attention weights larger than this are not requested from a layer (bytes).
WEIGHTS_LIMIT = 1 * GIB
HEADS, HEAD_DIM, EMBED = 2, 64, 128


@dataclass(frozen=True)
class Long:
    """One long case: T queries, S keys, the causal flag and an optional padding mask."""

    T: int
    S: int
    causal: bool = False
    padding: bool = False


CASES = {
    "n4096": Long(4096, 4096),
    "n4096_causal": Long(4096, 4096, causal=True),
    "n4096_padding": Long(4096, 4096, padding=True),
    "n16384": Long(16384, 16384),
    "n16384_causal": Long(16384, 16384, causal=True),
    "cross_causal_2048x16384": Long(2048, 16384, causal=True),
}

DISABLED = "the long chapter runs in the thorough profile (--hypothesis-profile thorough) or with --attnconf-long"


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("attnconf_long", default=False)) or profiles.profile_name() == "thorough"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The cases when the chapter is enabled; otherwise one skipped item per adapter and dtype."""
    if "name" not in metafunc.fixturenames:
        return
    if _enabled(metafunc.config):
        metafunc.parametrize("name", list(CASES))
    else:
        metafunc.parametrize("name", [pytest.param("", marks=pytest.mark.skip(reason=DISABLED))], ids=["long"])


@pytest.fixture
def budget(request: pytest.FixtureRequest) -> int:
    """The session's memory budget in bytes (``--attnconf-memory-budget``)."""
    return plugin.memory_budget(request.config)


#: The `(B, H, T, S)` intermediates of an implementation that materialises the scores.
DENSE_COPIES = 3


def footprint(adapter: Any, dtype: str, case: Long) -> tuple[int, str]:
    """(bytes, how they were counted): the memory `adapter` needs for `case` beyond what it holds.

    Scores and masks are counted in at least 4 bytes (float16 and bfloat16 softmaxes accumulate in
    float32). Masks are `(T, S)` arrays whatever the kernel: the padding mask the chapter hands over
    per head, and a causal mask, which some adapters build (torch's `is_causal` needs it), each as
    bool and as an additive float mask.
    """
    caps = adapter.capabilities
    item = max(4, compute_dtype(dtype).itemsize)
    planes = (HEADS if case.padding else 0) + (1 if case.causal else 0)
    masks = planes * case.T * case.S * (1 + item)
    mask_how = f" + masks {planes} x T x S x (1 + {item}) bytes = {format_size(masks)}" if planes else ""
    if caps.fused:
        width = HEAD_DIM if caps.level == "kernel" else EMBED
        n = (2 * case.T + 2 * case.S) * HEADS * width * item * 2  # q, k, v, output and a working copy
        return n + masks, (f"fused (O(N) memory): (2T + 2S) x H x {width} x {item} bytes x 2 = {format_size(n)}"
                           f"{mask_how}")
    copies = DENSE_COPIES + (1 if caps.level == "layer" and caps.returns_weights else 0)
    n = score_bytes(1, HEADS, case.T, case.S, item, copies)
    return n + masks, (f"dense (capabilities.fused=False): B x H x T x S x bytes x intermediates = 1 x {HEADS} x "
                       f"{case.T} x {case.S} x {item} x {copies} = {format_size(n)}{mask_how}")


def resident(adapter: Any) -> int:
    """What the process that runs `adapter` holds now (its worker's, or this process's)."""
    return adapter.resident_bytes() if isinstance(adapter, RemoteAdapter) else rss_bytes()


def _require(adapter: Any, dtype: str, case: Long, budget: int) -> None:
    caps = adapter.capabilities
    if case.causal and not caps.causal:
        pytest.skip(f"{adapter.name} has no causal flag (capabilities.causal=False)")
    if case.padding and not caps.boolean_mask:
        pytest.skip(f"{adapter.name} takes no boolean mask (capabilities.boolean_mask=False)")
    if case.causal and case.padding and not caps.causal_with_mask:
        pytest.skip(f"{adapter.name} cannot combine causal and mask (capabilities.causal_with_mask=False)")
    need, how = footprint(adapter, dtype, case)
    held = resident(adapter)
    if need + held > budget:
        pytest.skip(f"{adapter.name} would need {format_size(need + held)}: {how}, + {format_size(held)} resident "
                    f"now; over the memory budget of {format_size(budget)} (--attnconf-memory-budget)")


def _padding(case: Long, rng: np.random.Generator) -> Array | None:
    """`(1, T, S)`: the last keys padded away (every query keeps a visible key)."""
    if not case.padding:
        return None
    length = int(rng.integers(case.S // 2, case.S))
    return np.broadcast_to(np.arange(case.S) < length, (1, case.T, case.S))


def _kernel_inputs(name: str, case: Long, dtype: str) -> tuple[Array, Array, Array, Array | None]:
    rng = np.random.default_rng(seed_for("long", name))
    q = rng.standard_normal((1, HEADS, case.T, HEAD_DIM))
    k = rng.standard_normal((1, HEADS, case.S, HEAD_DIM))
    v = rng.standard_normal((1, HEADS, case.S, HEAD_DIM))
    pad = _padding(case, rng)
    mask = None if pad is None else np.broadcast_to(pad[:, None], (1, HEADS, case.T, case.S))
    return round_to(q, dtype), round_to(k, dtype), round_to(v, dtype), mask


def _layer_inputs(name: str, case: Long) -> tuple[AttentionInputs, AttentionWeights]:
    rng = np.random.default_rng(seed_for("long-layer", name))
    x = rng.standard_normal((1, case.T, EMBED))
    kv = rng.standard_normal((1, case.S, EMBED))
    inputs = AttentionInputs(x, kv, kv, mask=_padding(case, rng), causal=case.causal)

    def kernel(*shape: int) -> Array:
        return rng.standard_normal(shape) / np.sqrt(shape[0])

    weights = AttentionWeights(
        kernel(EMBED, HEADS, HEAD_DIM), kernel(EMBED, HEADS, HEAD_DIM), kernel(EMBED, HEADS, HEAD_DIM),
        rng.standard_normal((HEADS, HEAD_DIM, EMBED)) / np.sqrt(HEADS * HEAD_DIM),
        query_bias=rng.standard_normal((HEADS, HEAD_DIM)) * 0.5, output_bias=rng.standard_normal(EMBED) * 0.5,
        # all four biases: the layers with one bias switch (Keras, tf-keras, Flax) take no other set
        key_bias=rng.standard_normal((HEADS, HEAD_DIM)) * 0.5, value_bias=rng.standard_normal((HEADS, HEAD_DIM)) * 0.5,
    )
    return inputs, weights


#: Keys per step of the float64 `same` reference: another summation order than `BLOCK_K`'s.
REORDER_BLOCK_K = 1000


def test_long_kernel(adapter, dtype, name, check, budget):
    """`dot_product_attention` on `(1, 2, T, 64)` against the chunked reference."""
    case = CASES[name]
    if adapter.capabilities.level != "kernel":
        pytest.skip(f"{adapter.name} is a layer (capabilities.level='layer'): see test_long_layer")
    _require(adapter, dtype, case, budget)
    q, k, v, mask = _kernel_inputs(name, case, dtype)
    kw = dict(mask=mask, causal=case.causal, alignment=check.alignment, scale=None)

    precision = check.precision

    def reference() -> tuple[Array, Array]:
        exact = chunked_attention(*(np.asarray(a, np.float64) for a in (q, k, v)), dtype="float64", **kw)
        reorder = {"block_k": REORDER_BLOCK_K} if precision == "float64" else {}
        return exact, chunked_attention(q, k, v, dtype=precision, **kw, **reorder)

    exact, same = memo.cached(("long chapter kernel", name, dtype, precision, check.alignment), reference)
    got = np.asarray(adapter.dot_product_attention(q, k, v, mask, case.causal, None, dtype))
    if got.shape != exact.shape:
        pytest.fail(f"{adapter.name}: dot_product_attention returned shape {got.shape}, "
                    f"expected (B, H, T, D_v)={exact.shape}")
    check.close(got, exact, same, what="output", case=name)


def test_long_layer(adapter, dtype, name, check, budget):
    """`multi_head_attention` (E = 128, H = 2, D = 64) against the chunked layer reference."""
    case = CASES[name]
    if adapter.capabilities.level == "kernel":
        pytest.skip(f"{adapter.name} is a kernel (capabilities.level='kernel'): see test_long_kernel")
    _require(adapter, dtype, case, budget)
    weights_size = HEADS * case.T * case.S * np.dtype(np.float64 if dtype == "float64" else np.float32).itemsize
    if adapter.capabilities.returns_weights and weights_size > WEIGHTS_LIMIT:
        pytest.skip(f"{adapter.name} returns (B, H, T, S) weights: {weights_size / GIB:.1f} GiB here, "
                    f"over the chapter's limit of {WEIGHTS_LIMIT / GIB:.0f} GiB")
    inputs, weights = _layer_inputs(name, case)
    x, w = inputs.astype(dtype), weights.astype(dtype)
    precision = check.precision

    def reference() -> tuple[Array, Array]:
        exact = chunked_multi_head_attention(as_float64(x), weights_float64(w), alignment=check.alignment,
                                             dtype="float64")
        same = chunked_multi_head_attention(x, w, alignment=check.alignment, dtype=precision,
                                            block_k=REORDER_BLOCK_K if precision == "float64" else None)
        return exact.output, same.output

    exact, same = memo.cached(("long chapter layer", name, dtype, precision, check.alignment), reference)
    got = check.layer(inputs, weights)
    check.close(got.output, exact, same, what="output", case=name)
