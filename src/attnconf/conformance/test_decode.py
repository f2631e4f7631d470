"""Chapter `decode`: a decode step against a KV cache is the matching rows of full causal attention.

For adapters that declare `capabilities.kv_cache` (`decode_step`). `T_new` new queries attend to
the `L` cached keys and values of their sequence and to the new ones up to their own: new token
`t` sits at position ``L + t`` and sees keys ``0 .. L + t`` (bottom-right alignment over the
concatenated keys; `attnconf.reference.decode_step`). A step aligned top-left lets the first new
token see only the first key.

* Agreement: T_new = 1 and T_new = 3, a full cache and a padded one (`cache_lengths`: each batch
  element its own number of valid entries, the padding filled with large values that must not
  count), grouped-query heads where the adapter takes them, against `decode_step`.
* Invariant: decoding a sequence step by step (a prompt of 2 in the cache, then steps of one and
  of two tokens, each appended to the cache) gives the last rows of causal attention over the whole
  sequence.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import conventions, profiles
from attnconf.conformance.invariants import assert_close
from attnconf.conformance.strategies import Shape, seeds
from attnconf.reference import decode_step, scaled_dot_product_attention

#: Cached entries S_past of the agreement cases.
CACHE_SIZES = (3, 6)
#: Magnitude of the content of padded cache entries (they must get no weight).
PADDING = {"float64": 1e2, "float32": 1e2, "bfloat16": 10.0, "float16": 10.0}
#: The prompt in the cache, and the new tokens of each step, of the step-by-step invariant.
PROMPT, STEPS = 2, (1, 1, 2, 1)


def _shape(adapter, data, T_new, sizes):
    """Shape(B=2, T=T_new, S=S_past, H=4, H_kv, D=4): S_past from `sizes`, H_kv = 2 too where the adapter takes it."""
    kv = (4, 2) if adapter.capabilities.gqa else (4,)
    return data.draw(st.sampled_from([Shape(2, T_new, s, 4, h, 4) for s in sizes for h in kv]), label="shape")


@pytest.mark.parametrize("T_new", (1, 3), ids=lambda t: f"T_new{t}")
@profiles.conformance
@given(data=st.data())
def test_decode_step_agrees(adapter, dtype, T_new, check, data):
    conventions.require(adapter, "kv_cache")
    shape = _shape(adapter, data, T_new, CACHE_SIZES)
    S_past = shape.S
    seed = data.draw(seeds(), label="seed")
    padded = data.draw(st.booleans(), label="padded cache")
    rng = np.random.default_rng(seed)
    B, H, H_kv, D = shape.B, shape.H, shape.H_kv, shape.D
    q = rng.standard_normal((B, H, T_new, D))
    k_cache, v_cache = rng.standard_normal((2, B, H_kv, S_past, D))
    k_new, v_new = rng.standard_normal((2, B, H_kv, T_new, D))
    lengths = None
    if padded:
        lengths = np.array(
            data.draw(st.lists(st.integers(1, S_past - 1), min_size=B, max_size=B), label="cache_lengths"),
            dtype=np.int64,
        )
        pad = np.arange(S_past)[None, None, :, None] >= lengths[:, None, None, None]
        garbage = rng.standard_normal((2, B, H_kv, S_past, D)) * PADDING[dtype]
        k_cache, v_cache = np.where(pad, garbage[0], k_cache), np.where(pad, garbage[1], v_cache)
    keywords = {} if lengths is None else {"cache_lengths": lengths}
    r = conventions.kernel_run(
        check,
        f"decode step, T_new={T_new}",
        lambda q, kc, vc, kn, vn, dtype: adapter.decode_step(q, kc, vc, kn, vn, dtype, **keywords),
        lambda q, kc, vc, kn, vn, dtype: decode_step(q, kc, vc, kn, vn, dtype=dtype, **keywords),
        {"q": q, "kc": k_cache, "vc": v_cache, "kn": k_new, "vn": v_new},
    )
    cache = "a full cache" if lengths is None else f"a padded cache of valid lengths {lengths.tolist()}"
    assert_close(
        check,
        r.got.output,
        r.exact.output,
        r.same.output,
        f"decode: {T_new} new tokens against {cache} of {S_past} see the cache and the new keys up to "
        "their own (bottom-right)",
        "output (B, H, T_new, D_v)",
    )


@profiles.conformance
@given(data=st.data())
def test_decode_step_by_step_equals_full_causal(adapter, dtype, check, data):
    conventions.require(adapter, "kv_cache")
    N = PROMPT + sum(STEPS)
    shape = _shape(adapter, data, N, (N,))
    seed = data.draw(seeds(), label="seed")
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((shape.B, shape.H, N, shape.D))
    k, v = rng.standard_normal((2, shape.B, shape.H_kv, N, shape.D))

    def stepwise(q, k, v, dtype):
        rows, start = [], PROMPT
        for n in STEPS:
            end = start + n
            rows.append(
                np.asarray(
                    adapter.decode_step(
                        q[:, :, start:end],
                        k[:, :, :start],
                        v[:, :, :start],
                        k[:, :, start:end],
                        v[:, :, start:end],
                        dtype,
                    )
                )
            )
            start = end
        return np.concatenate(rows, axis=2)

    def full(q, k, v, dtype):
        return scaled_dot_product_attention(q, k, v, causal=True, dtype=dtype)[:, :, PROMPT:]

    r = conventions.kernel_run(check, "step by step", stepwise, full, {"q": q, "k": k, "v": v})
    assert_close(
        check,
        r.got.output,
        r.exact.output,
        r.same.output,
        f"decode: a prompt of {PROMPT} then steps of {', '.join(map(str, STEPS))} tokens, each appended to "
        f"the cache, give the last {N - PROMPT} rows of causal attention over all {N} tokens",
        "output (B, H, T, D_v)",
    )
