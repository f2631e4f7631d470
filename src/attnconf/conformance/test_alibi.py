"""Chapter `alibi`: ALiBi biases are the spec's, with the paper's slopes for any head count.

For adapters that declare ``"alibi"`` in `capabilities.conventions` (`convention_attention`, which
takes the slopes `(H,)` as `alibi_slopes`). Head `h` adds ``-slope[h] * (p_q - p_k)`` to its logits
(`attnconf.reference.alibi_bias`, positions as the adapter's `causal_alignment` places them). The
slopes are the paper's (`attnconf.reference.alibi_slopes`): ``2**(-8k/n)`` for `n` a power of two;
for 6 or 12 heads, those of the largest power of two below, then every other slope of twice as many.
An adapter that ignores the given slopes and computes ``2**(-8k/n)`` for every `n` (right for 8
heads only) is caught at 6 and 12.

* Agreement: 6, 8 and 12 heads (each a test of its own), with and without the causal flag, T = S and T < S.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import conventions, profiles
from attnconf.conformance.invariants import assert_close
from attnconf.conformance.strategies import Shape, seeds
from attnconf.reference import alibi_slopes, scaled_dot_product_attention

#: (T, S) of the cases: square and fewer queries than keys (every row keeps a key in both alignments).
SIZES = ((5, 5), (3, 7))
HEADS = (6, 8, 12)


@pytest.mark.parametrize("H", HEADS, ids=lambda h: f"{h}heads")
@profiles.conformance
@given(data=st.data())
def test_alibi_agrees(adapter, dtype, H, check, data):
    conventions.require(adapter, "alibi")
    caps = adapter.capabilities
    shape = data.draw(st.sampled_from([Shape(2, T, S, H, H, 4) for T, S in SIZES]), label="shape")
    seed = data.draw(seeds(), label="seed")
    causal = caps.causal and data.draw(st.booleans(), label="causal")
    slopes = alibi_slopes(H)
    q, k, v = conventions.kernel_arrays(shape, seed)
    alignment = check.alignment
    r = conventions.kernel_run(
        check,
        f"alibi, {H} heads",
        lambda q, k, v, dtype: adapter.convention_attention(q, k, v, None, causal, None, dtype, alibi_slopes=slopes),
        lambda q, k, v, dtype: scaled_dot_product_attention(
            q, k, v, causal=causal, alignment=alignment, alibi_slopes=slopes, dtype=dtype
        ),
        {"q": q, "k": k, "v": v},
    )
    assert_close(
        check,
        r.got.output,
        r.exact.output,
        r.same.output,
        f"alibi: {H} heads with the paper's slopes {', '.join(f'{s:.4g}' for s in slopes)} add "
        f"-slope * (p_q - p_k) ({alignment} positions{', causal' if causal else ''})",
        "output (B, H, T, D_v)",
    )
