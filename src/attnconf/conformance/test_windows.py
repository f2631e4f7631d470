"""Chapter `windows`: a sliding window ``(left, right)`` is the spec's, bounds inclusive.

For adapters that declare ``"window"`` in `capabilities.conventions` (`convention_attention`).
Query `i` at position `p_q` sees key `j` at position `p_k` when ``p_q - left <= p_k <= p_q + right``
(`attnconf.reference.window_mask`): the diagonal is always inside, `left` keys before it and `right`
after it; None leaves a side unbounded. Positions follow the adapter's declared
`capabilities.causal_alignment` (top-left when it has none), the one alignment an adapter declares.

* Agreement: left and right drawn from None, 0, 1, 2, 3 (0 is the diagonal alone on that side), with
  and without the causal flag, on the shape buckets (T = 1, T > S and T < S included), against
  `scaled_dot_product_attention(window=...)`. Query rows that see no key (a window past the last key
  when T > S) are not compared: their output is the fully-masked policy's.
* Invariant: a window exactly as wide as the sequence (the largest distance between a query and a
  key on each side, no wider) equals attention without a window, causal or not: it catches a bound
  read as exclusive (a window one key too narrow) at the edge where it starts to matter.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import conventions, profiles, strategies
from attnconf.conformance.invariants import assert_change, assert_close
from attnconf.reference import aligned_positions, causal_mask, scaled_dot_product_attention, window_mask

#: Window bounds drawn for each side: unbounded, the diagonal alone, and a few keys.
BOUNDS = (None, 0, 1, 2, 3)


def _visible(T: int, S: int, window: tuple[int | None, int | None] | None, causal: bool, alignment: str) -> np.ndarray:
    """`(1, 1, T, S)`: what the spec lets each query see."""
    vis = np.ones((T, S), dtype=bool)
    if window is not None:
        vis &= window_mask(T, S, left=window[0], right=window[1], alignment=alignment)  # type: ignore[arg-type]
    if causal:
        vis &= causal_mask(T, S, alignment)  # type: ignore[arg-type]
    return vis[None, None]


def _run(check, adapter, q, k, v, causal, window, label):
    alignment = check.alignment
    keywords = {} if window is None else {"window": window}
    return conventions.kernel_run(
        check,
        label,
        lambda q, k, v, dtype: adapter.convention_attention(q, k, v, None, causal, None, dtype, **keywords),
        lambda q, k, v, dtype: scaled_dot_product_attention(
            q, k, v, causal=causal, alignment=alignment, dtype=dtype, **keywords
        ),
        {"q": q, "k": k, "v": v},
    )


@profiles.conformance
@given(data=st.data())
def test_window_agrees(adapter, dtype, check, data):
    conventions.require(adapter, "window")
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    window = (data.draw(st.sampled_from(BOUNDS), label="left"), data.draw(st.sampled_from(BOUNDS), label="right"))
    causal = caps.causal and data.draw(st.booleans(), label="causal")
    q, k, v = conventions.kernel_arrays(shape, seed)
    r = _run(check, adapter, q, k, v, causal, window, f"window {window}")
    rows = conventions.rows_with_a_key(_visible(shape.T, shape.S, window, causal, check.alignment))
    assert_close(
        check,
        r.got.output,
        r.exact.output,
        r.same.output,
        f"windows: a sliding window {window} (bounds inclusive, {check.alignment} positions"
        f"{', causal' if causal else ''}) is the spec's",
        "output (B, H, T, D_v)",
        where=rows,
    )


@profiles.conformance
@given(data=st.data())
def test_window_as_wide_as_the_sequence_changes_nothing(adapter, dtype, check, data):
    conventions.require(adapter, "window")
    caps = adapter.capabilities
    shape = data.draw(strategies.shapes(caps, causal=check.alignment if caps.causal else None), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    causal = caps.causal and data.draw(st.booleans(), label="causal")
    pos_q, pos_k = aligned_positions(shape.T, shape.S, check.alignment)  # type: ignore[arg-type]
    # The largest distance to a key before / after a query: every key is inside, the farthest on the bound.
    left = max(int(pos_q.max() - pos_k.min()), 0)
    right = 0 if causal else max(int(pos_k.max() - pos_q.min()), 0)
    q, k, v = conventions.kernel_arrays(shape, seed)
    a = _run(check, adapter, q, k, v, causal, None, "no window")
    b = _run(check, adapter, q, k, v, causal, (left, right), f"window ({left}, {right})")
    rows = conventions.rows_with_a_key(_visible(shape.T, shape.S, None, causal, check.alignment))
    assert_change(
        check,
        a,
        b,
        f"windows: a window ({left}, {right}) as wide as the sequence (T={shape.T}, S={shape.S}, "
        f"{check.alignment} positions{', causal' if causal else ''}) equals attention without one",
        where=rows,
    )
