"""Chapter `softcap`: the logit soft cap is ``cap * tanh(logits / cap)`` of the scaled logits.

For adapters that declare ``"softcap"`` in `capabilities.conventions` (`convention_attention`).
The spec (`attnconf.reference.softcap`; Gemma 2) caps the *scaled* logits: scale, cap, then mask
and softmax.

* Agreement: caps of 1 to 50, the largest scaled logit drawn at half the cap up to ten times it,
  the default scale and (where the adapter takes one) a given scale, with and without the causal flag.
* After the scale: capping the raw logits and scaling afterwards is the same as capping the scaled
  logits at ``cap * scale``; on a case where the two differ by at least twice the tolerance
  (a draw where they do not is discarded, so the test always tells them apart: cap 5, scaled logits
  up to 50) the adapter must give the spec's.
* Invariant: a cap a thousand times the largest logit changes nothing (``tanh(x) ~ x``).
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from attnconf.conformance import conventions, profiles, strategies
from attnconf.conformance.invariants import assert_change, assert_close
from attnconf.conformance.tolerances import derive
from attnconf.reference import causal_mask, scaled_dot_product_attention

CAPS = (1.0, 5.0, 20.0, 50.0)
#: The largest |scaled logit| of a case, in units of the cap.
OVER_CAP = (0.5, 3.0, 10.0)
#: Given scales drawn where the adapter takes one (`capabilities.custom_scale`).
SCALES = (0.125, 0.7)
#: How far apart (in tolerances) the two orders of cap and scale must be on the case of the order test.
APART = 2.0


def _scaled_to(q, k, scale, largest):
    """`q` multiplied so that the largest |scaled logit| of (q, k) is `largest`."""
    kk = np.repeat(k, q.shape[1] // k.shape[1], axis=1)
    logits = np.einsum("bhtd,bhsd->bhts", q, kk) * scale
    return q * (largest / float(np.max(np.abs(logits))))


def _run(check, adapter, q, k, v, causal, scale, cap, label):
    alignment = check.alignment
    keywords = {} if cap is None else {"logit_softcap": cap}
    return conventions.kernel_run(
        check,
        label,
        lambda q, k, v, dtype: adapter.convention_attention(q, k, v, None, causal, scale, dtype, **keywords),
        lambda q, k, v, dtype: scaled_dot_product_attention(
            q, k, v, causal=causal, alignment=alignment, scale=scale, dtype=dtype, **keywords
        ),
        {"q": q, "k": k, "v": v},
    )


def _draw_case(adapter, data):
    caps = adapter.capabilities
    alignment = caps.causal_alignment if caps.causal else None
    shape = data.draw(strategies.shapes(caps, causal=alignment, min_keys=2), label="shape")
    seed = data.draw(strategies.seeds(), label="seed")
    causal = caps.causal and data.draw(st.booleans(), label="causal")
    scale = data.draw(st.sampled_from((None, *SCALES)) if caps.custom_scale else st.none(), label="scale")
    return shape, seed, causal, scale


def _rows(check, shape, causal):
    vis = causal_mask(shape.T, shape.S, check.alignment)[None, None] if causal else np.ones((1, 1, 1, 1), bool)
    return conventions.rows_with_a_key(vis)


@profiles.conformance
@given(data=st.data())
def test_softcap_agrees(adapter, dtype, check, data):
    conventions.require(adapter, "softcap")
    shape, seed, causal, scale = _draw_case(adapter, data)
    cap = data.draw(st.sampled_from(CAPS), label="cap")
    over = data.draw(st.sampled_from(OVER_CAP), label="largest |scaled logit| / cap")
    q, k, v = conventions.kernel_arrays(shape, seed)
    s = scale if scale is not None else 1 / math.sqrt(shape.D)
    q = _scaled_to(q, k, s, over * cap)
    r = _run(check, adapter, q, k, v, causal, scale, cap, f"cap {cap}")
    assert_close(
        check,
        r.got.output,
        r.exact.output,
        r.same.output,
        f"softcap: logits capped as {cap} * tanh(scaled logits / {cap}) (largest scaled logit {over * cap:g}, "
        f"scale {scale if scale is not None else '1/sqrt(D_k)'})",
        "output (B, H, T, D_v)",
        where=_rows(check, shape, causal),
    )


@profiles.conformance
@given(data=st.data())
def test_softcap_comes_after_the_scale(adapter, dtype, check, data):
    conventions.require(adapter, "softcap")
    shape, seed, causal, scale = _draw_case(adapter, data)
    cap = 5.0
    q, k, v = conventions.kernel_arrays(shape, seed)
    s = scale if scale is not None else 1 / math.sqrt(shape.D)
    q = _scaled_to(q, k, s, 10.0 * cap)
    rows = _rows(check, shape, causal)

    def spec(c):
        return lambda q, k, v, dtype: scaled_dot_product_attention(
            q, k, v, causal=causal, alignment=check.alignment, scale=scale, logit_softcap=c, dtype=dtype
        )

    # The case must tell the orders apart (checked before the adapter runs). Cap before the scale:
    # s * c * tanh(x / c) = (c s) * tanh(x s / (c s)), the spec's cap at c * s.
    exact, same = conventions.references(check, spec(cap), {"q": q, "k": k, "v": v})
    before, _ = conventions.references(check, spec(cap * s), {"q": q, "k": k, "v": v})
    tol = derive(np.where(rows, exact, 0.0), np.where(rows, same, 0.0), check.precision)
    apart = float(np.max(np.where(rows, np.abs(np.asarray(before, np.float64) - np.asarray(exact, np.float64)), 0.0)))
    assume(apart > APART * tol.atol)
    r = _run(check, adapter, q, k, v, causal, scale, cap, f"cap {cap}")
    assert_close(
        check,
        r.got.output,
        r.exact.output,
        r.same.output,
        f"softcap: the cap {cap} applies after the scale {s:.6g} (capping before it gives an output {apart:.3g} away)",
        "output (B, H, T, D_v)",
        where=rows,
    )


@profiles.conformance
@given(data=st.data())
def test_large_cap_changes_nothing(adapter, dtype, check, data):
    conventions.require(adapter, "softcap")
    shape, seed, causal, scale = _draw_case(adapter, data)
    largest = data.draw(st.sampled_from((1.0, 10.0)), label="largest |scaled logit|")
    q, k, v = conventions.kernel_arrays(shape, seed)
    s = scale if scale is not None else 1 / math.sqrt(shape.D)
    q = _scaled_to(q, k, s, largest)
    cap = 1000.0 * largest
    a = _run(check, adapter, q, k, v, causal, scale, None, "no cap")
    b = _run(check, adapter, q, k, v, causal, scale, cap, f"cap {cap:g}")
    assert_change(
        check,
        a,
        b,
        f"softcap: a cap of {cap:g}, a thousand times the largest scaled logit, changes nothing",
        where=_rows(check, shape, causal),
    )
