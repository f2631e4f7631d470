"""Chapter `rotary`: the rotary position embedding is the spec's, in each declared layout.

For adapters that declare `capabilities.rotary_layouts` (`rotary_embedding`), including rotary-only
adapters (``level="rotary"``), for which this is the only chapter. The spec is
`attnconf.reference.rotary_embedding`: pair `i` of the first `r` features turns by
``p * theta**(-2i/r)`` at position `p`; the layouts differ in which features pair up (``"half"``:
``(i, i + r/2)``, GPT-NeoX and Hugging Face LLaMA; ``"interleaved"``: ``(2i, 2i + 1)``, GPT-J and
Meta's LLaMA). The two are a permutation apart, so an adapter in the other layout is a model whose
attention silently changes.

* Agreement: each declared layout, positions starting at an offset (a decode step at position `p`;
  each batch element its own offset), partial rotary (`rotary_dim` below D, where
  `capabilities.rotary_partial`: the other features pass through), and the base theta (10, 10^4,
  5 10^5 as in LLaMA 3). Positions stay below 40: what is compared is the convention; the accuracy
  of angles at long context (an angle computed in float32 is off by about ``p`` unit roundoffs) is
  not this chapter's subject.
* Invariant: the logits ``rot(q, p_q) . rot(k, p_k)`` depend only on ``p_q - p_k``: shifting every
  position by `k` changes no logit.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from attnconf.conformance import conventions, profiles
from attnconf.conformance.invariants import assert_change, assert_close
from attnconf.conformance.strategies import Shape, seeds
from attnconf.reference import ROTARY_LAYOUTS, rotary_embedding

#: Queries or keys `(B, H, N, D)` as shapes (N = T = S): several tokens, one token (a decode step),
#: a wider head.
SHAPES = (Shape(2, 5, 5, 2, 2, 8), Shape(2, 1, 1, 4, 4, 8), Shape(1, 6, 6, 2, 2, 16))
OFFSETS = (0, 1, 7, 30)
THETAS = (10000.0, 500000.0, 10.0)
SHIFTS = (1, 5, 13)


def _draw(adapter, data):
    caps = adapter.capabilities
    shape = data.draw(st.sampled_from(SHAPES), label="shape")
    seed = data.draw(seeds(), label="seed")
    layout = data.draw(st.sampled_from([lay for lay in ROTARY_LAYOUTS if lay in caps.rotary_layouts]), label="layout")
    dims = (None, shape.D // 2, 2) if caps.rotary_partial else (None,)
    rotary_dim = data.draw(st.sampled_from(dims), label="rotary_dim")
    # a base other than 10000 only where the adapter takes one (capabilities.rotary_theta)
    theta = data.draw(st.sampled_from(THETAS if caps.rotary_theta else THETAS[:1]), label="theta")
    return shape, seed, layout, rotary_dim, theta


def _rotate(adapter, layout, rotary_dim, theta):
    """(adapter's rotation, reference rotation), both `(x, positions, dtype) -> (B, H, N, D)`."""
    keywords = {"layout": layout, "theta": theta, **({} if rotary_dim is None else {"rotary_dim": rotary_dim})}

    def native(x, positions, dtype):
        return np.asarray(adapter.rotary_embedding(x, positions, dtype, **keywords))

    def spec(x, positions, dtype):
        return rotary_embedding(x, positions, dtype=dtype, **keywords)

    return native, spec


def _positions(B: int, N: int, offset: int) -> np.ndarray:
    """`(B, N)` int64: element `b` at ``offset + 3 b, offset + 3 b + 1, ...``."""
    return (offset + 3 * np.arange(B)[:, None] + np.arange(N)[None, :]).astype(np.int64)


@profiles.conformance
@given(data=st.data())
def test_rotary_agrees(adapter, dtype, check, data):
    conventions.require(adapter, "rotary")
    shape, seed, layout, rotary_dim, theta = _draw(adapter, data)
    offset = data.draw(st.sampled_from(OFFSETS), label="position offset")
    x = np.random.default_rng(seed).standard_normal((shape.B, shape.H, shape.T, shape.D))
    positions = _positions(shape.B, shape.T, offset)
    native, spec = _rotate(adapter, layout, rotary_dim, theta)
    r = conventions.kernel_run(
        check,
        f"rotary {layout}",
        lambda x, dtype: native(x, positions, dtype),
        lambda x, dtype: spec(x, positions, dtype),
        {"x": x},
    )
    r_dim = shape.D if rotary_dim is None else rotary_dim
    assert_close(
        check,
        r.got.output,
        r.exact.output,
        r.same.output,
        f"rotary: the {layout!r} layout rotates the first {r_dim} of {shape.D} features by "
        f"position * {theta:g}**(-2i/{r_dim}) (positions from {offset})",
        "rotated x (B, H, N, D)",
    )


@profiles.conformance
@given(data=st.data())
def test_rotary_logits_depend_on_relative_position(adapter, dtype, check, data):
    conventions.require(adapter, "rotary")
    shape, seed, layout, rotary_dim, theta = _draw(adapter, data)
    shift = data.draw(st.sampled_from(SHIFTS), label="shift")
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((shape.B, shape.H, shape.T, shape.D))
    k = rng.standard_normal((shape.B, shape.H, shape.S + 2, shape.D))
    pos_q, pos_k = _positions(shape.B, shape.T, 2), _positions(shape.B, shape.S + 2, 0)
    native, spec = _rotate(adapter, layout, rotary_dim, theta)

    def logits(rotate, q, k, dtype, by):
        wide = np.longdouble if dtype == "longdouble" else np.float64
        rq = np.asarray(rotate(q, pos_q + by, dtype), dtype=wide)
        rk = np.asarray(rotate(k, pos_k + by, dtype), dtype=wide)
        return np.einsum("bhtd,bhsd->bhts", rq, rk)

    def run(by):
        return conventions.kernel_run(
            check,
            f"positions + {by}",
            lambda q, k, dtype: logits(native, q, k, dtype, by),
            lambda q, k, dtype: logits(spec, q, k, dtype, by),
            {"q": q, "k": k},
        )

    a, b = run(0), run(shift)
    assert_change(
        check,
        a,
        b,
        f"rotary ({layout!r}): the logits rot(q, p_q) . rot(k, p_k) depend only on p_q - p_k; "
        f"shifting every position by {shift} changes none",
    )
