"""The per-element tolerance policy (src/attnconf/conformance/tolerances.py, reference/error_bound.py).

Hand-made cases: non-finite values match in kind and sign, the bound is per element and exactly 0
where the spec is exactly 0, honest evaluations stay within it, and the faults it exists for do not.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from attnconf.adapters.base import AttentionOutputs, Capabilities
from attnconf.conformance.cases import CONFIGS, make_inputs, make_weights, seed_for
from attnconf.conformance.check import Checker
from attnconf.conformance.tolerances import FACTOR_MODEL, derive, derive_change, measure, nonfinite_mismatch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import tolerance_margins  # noqa: E402

inf, nan = np.inf, np.nan


@pytest.mark.parametrize(
    ("got", "exact", "bad"),
    [
        (inf, -inf, True),
        (-inf, inf, True),
        (nan, inf, True),
        (inf, nan, True),
        (nan, 1.0, True),
        (1.0, -inf, True),
        (inf, inf, False),
        (-inf, -inf, False),
        (nan, nan, False),
        (1.0, 2.0, False),
    ],
)
def test_nonfinite_values_match_in_kind_and_sign(got, exact, bad):
    assert bool(nonfinite_mismatch(np.array([got]), np.array([exact]))[0]) is bad
    errs = measure(np.array([0.0, got]), np.array([0.0, exact]))
    assert (errs.nan_mismatch == (1,)) is bad


def test_bound_is_per_element_and_zero_where_the_spec_is_exact():
    exact = np.array([1.0, 100.0, 0.0])
    same = np.array([1.0 + 1e-3, 100.0, 0.0])
    model = np.array([1e-4, 1e-2, 0.0])
    tol = derive(exact, same, "float16", model)
    np.testing.assert_allclose(tol.bound, FACTOR_MODEL * np.array([1e-3, 1e-2, 0.0]))
    # An error the large element's bound allows fails at the small element, and any error at 0 fails.
    assert measure(np.array([1.0 + 5e-3, 100.0, 0.0]), exact, tol).ratio > 1
    assert measure(np.array([1.0, 100.0 + 5e-3, 0.0]), exact, tol).ratio <= 1
    errs = measure(np.array([1.0, 100.0, 1e-30]), exact, tol)
    assert errs.ratio == inf and errs.index == (2,) and errs.atol == 0.0
    assert tol.explain((2,)).startswith("atol 0 at index (2,)")
    assert "first-order error bound" in tol.explain((0,)) and tol.explain((0,)).startswith("atol")
    # The uniform rule (no model) is one number for every element, as before.
    uni = derive(exact, same, "float16")
    assert np.all(uni.bound == uni.atol) and "one bound for every element" in uni.explain()


def test_change_tolerance_adds_the_bounds_of_both_runs():
    e = np.array([1.0, 2.0])
    ch = derive_change(e, e, e, e, "float32", np.array([1e-6, 0.0]), np.array([2e-6, 0.0]))
    np.testing.assert_allclose(ch.bound, FACTOR_MODEL * np.array([3e-6, 0.0]))
    assert ch.explain((0,)).startswith("atol")


def _checker(adapter, dtype):
    return Checker(adapter=adapter, dtype=dtype, nodeid="t", reproduce="-")


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("config", ["self", "random_mask", "causal_cross", "gqa", "scale"])
def test_same_precision_reference_is_well_within_the_model(dtype, config):
    cfg = CONFIGS[config]
    rng = np.random.default_rng(seed_for("test_tolerances", config))
    x, w = make_inputs(cfg, rng), make_weights(cfg, rng)
    check = _checker(SimpleNamespace(name="ref", capabilities=Capabilities()), dtype)
    exact, same = check.references(x, w)
    model = check.error_bounds(x, w)
    for e, s, m in ((exact.output, same.output, model.output), (exact.weights, same.weights, model.weights)):
        err = np.abs(np.asarray(s, np.float64) - np.asarray(e, np.float64))
        assert np.all(err <= 0.5 * m), f"reference error exceeds half the model: {np.max(err / np.maximum(m, 1e-300))}"
    hidden = ~np.broadcast_to(check.visible(x), model.weights.shape)
    assert np.all(model.weights[hidden] == 0) and np.all(model.weights[~hidden] > 0)


def _worst(pipe, dtype, names):
    res = tolerance_margins.ratios(pipe, dtype, names)
    return max(r["output new"] for r in res.values()), max(r["output old"] for r in res.values())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_honest_variants_pass_and_the_leak_fails(dtype):
    names = ["random_mask", "causal_cross", "causal", "rows64_padding"]
    for pipe in tolerance_margins.PIPELINES:
        new, old = _worst(pipe, dtype, names)
        if pipe.name.startswith(("control", "honest")):
            assert new < 0.5, f"{pipe.name} in {dtype}: ratio {new:.3g} of the per-element bound"
        elif pipe.leak:
            assert new > 1, f"{pipe.name} in {dtype}: ratio {new:.3g} of the per-element bound, not caught"


def test_hidden_key_weight_must_be_exactly_zero():
    cfg = CONFIGS["random_mask"]
    rng = np.random.default_rng(1)
    x, w = make_inputs(cfg, rng), make_weights(cfg, rng)
    check = _checker(SimpleNamespace(name="fake", capabilities=Capabilities()), "float32")
    exact, _ = check.references(x, w)
    weights = np.array(exact.weights, dtype=np.float32)
    check.masked_weights_zero(x, weights)  # the spec's weights pass
    hidden = np.argwhere(~np.broadcast_to(check.visible(x), weights.shape))[0]
    weights[tuple(hidden)] = 1e-30
    with pytest.raises(pytest.fail.Exception, match="give weight to a key the spec hides"):
        check.masked_weights_zero(x, weights)


def test_failure_message_names_index_expected_got_and_bound():
    cfg = CONFIGS["cross"]
    rng = np.random.default_rng(2)
    x, w = make_inputs(cfg, rng), make_weights(cfg, rng)

    class OffByAtenth:
        name = "fake"
        capabilities = Capabilities()

        def multi_head_attention(self, inputs, weights, dtype):
            ref = _checker(self, dtype).references(inputs, weights)[1]
            out = np.array(ref.output)
            out[0, 1, 2] += 0.1
            return AttentionOutputs(out, ref.weights)

    check = _checker(OffByAtenth(), "float16")
    with pytest.raises(pytest.fail.Exception) as info:
        check.agrees(x, w)
    msg = str(info.value)
    assert "index (0, 1, 2)" in msg and "tolerance: atol" in msg and "first-order error bound" in msg
    assert "expected" in msg and "got" in msg
    rec = check.records[-1]
    assert rec["ratio"] > 1 and rec["index"] == [0, 1, 2] and rec["atol"] > 0
