"""Chapter `lengths`: a ragged batch given as sequence lengths is the spec's.

For adapters that declare ``"lengths"`` in `capabilities.conventions` (`convention_attention` with
`query_lengths` and `key_lengths`, `(B,)` ints). Element `b` holds ``query_lengths[b]`` real queries
and ``key_lengths[b]`` real keys at the start of each axis (`attnconf.reference.lengths_to_mask`):
a real query sees the element's real keys and no padded one. A padded query row sees no key; its
output is the fully-masked policy's, which the spec leaves to the framework, so it is not compared.

* Agreement: lengths drawn per element (at least one element has padded keys), the padded keys and
  values filled with large values that must get no weight, on the shape buckets, with the causal flag
  where the adapter's alignment is top-left (positions then start at 0 in every element whether they
  count in the padded sequence or in the element's own; under bottom-right alignment the two
  readings differ and the chapter does not draw the flag).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import conventions, profiles, strategies
from attnconf.conformance.invariants import assert_close
from attnconf.reference import causal_mask, lengths_to_mask, scaled_dot_product_attention

#: Magnitude of the content of padded keys and values.
PADDING = {"float64": 1e2, "float32": 1e2, "bfloat16": 10.0, "float16": 10.0}


@profiles.conformance
@given(data=st.data())
def test_lengths_agree(adapter, dtype, check, data):
    conventions.require(adapter, "lengths")
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps, min_keys=2), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    B, T, S = shape.B, shape.T, shape.S
    q_lens = np.array(data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B), label="query_lengths"))
    k_lens = np.array(data.draw(st.lists(st.integers(1, S), min_size=B, max_size=B), label="key_lengths"))
    if (k_lens == S).all():  # some element has padded keys
        k_lens[-1] = S - 1
    causal = caps.causal and check.alignment == "top_left" and data.draw(st.booleans(), label="causal")
    q, k, v = conventions.kernel_arrays(shape, seed)
    padded = (np.arange(S)[None, :] >= k_lens[:, None])[:, None, :, None]  # (B, 1, S, 1)
    rng = np.random.default_rng(seed + 1)
    k = np.where(padded, rng.standard_normal(k.shape) * PADDING[dtype], k)
    v = np.where(padded, rng.standard_normal(v.shape) * PADDING[dtype], v)
    q_lens, k_lens = q_lens.astype(np.int64), k_lens.astype(np.int64)
    mask = lengths_to_mask(q_lens, k_lens, T, S)[:, None]  # (B, 1, T, S)
    r = conventions.kernel_run(
        check,
        "ragged lengths",
        lambda q, k, v, dtype: adapter.convention_attention(
            q, k, v, None, causal, None, dtype, query_lengths=q_lens, key_lengths=k_lens
        ),
        lambda q, k, v, dtype: scaled_dot_product_attention(
            q, k, v, mask=mask, causal=causal, alignment=check.alignment, dtype=dtype
        ),
        {"q": q, "k": k, "v": v},
    )
    visible = mask & causal_mask(T, S, check.alignment)[None, None] if causal else mask  # type: ignore[arg-type]
    assert_close(
        check,
        r.got.output,
        r.exact.output,
        r.same.output,
        f"lengths: a ragged batch of query lengths {q_lens.tolist()} and key lengths {k_lens.tolist()} "
        f"(T={T}, S={S}{', causal' if causal else ''}) attends to each element's real keys only; "
        "padded query rows are not compared",
        "output (B, H, T, D_v)",
        where=conventions.rows_with_a_key(visible),
    )
