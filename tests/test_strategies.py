"""Meta-tests of the invariant chapters' helpers: strategies, profiles and the change tolerance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from attnconf.adapters.base import Capabilities
from attnconf.conformance import profiles, strategies
from attnconf.conformance.tolerances import derive, derive_change
from attnconf.reference import causal_mask

TORCH_LIKE = Capabilities(head_dim=False, gqa=False)
GQA = Capabilities(gqa=True)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_masks_keep_a_visible_key_in_every_row_and_hide_something(data):
    alignment = data.draw(st.sampled_from([None, "top_left", "bottom_right"]))
    shape = data.draw(strategies.shapes(GQA, causal=alignment, masked=True))
    mask = data.draw(strategies.masks(shape.B, shape.T, shape.S, alignment))
    assert mask.shape == (shape.B, shape.T, shape.S) and mask.dtype == np.bool_
    allowed = np.ones(mask.shape, bool) if alignment is None else np.broadcast_to(
        causal_mask(shape.T, shape.S, alignment)[None], mask.shape)
    visible = mask & allowed
    assert visible.any(axis=-1).all()
    assert (allowed & ~mask).any(), "the mask hides no key the causal mask allows"
    if alignment is not None:  # with a causal flag: a key padding mask, equal for every query
        assert (mask == mask[:, :1]).all()


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_optional_masks_hide_something_whenever_drawn(data):
    caps = data.draw(st.sampled_from([Capabilities(), GQA, Capabilities(causal_alignment="bottom_right")]))
    shape = data.draw(strategies.shapes(caps))
    causal = data.draw(strategies.causal_flags(caps, shape, with_mask=True))
    alignment = caps.causal_alignment if causal else None
    mask = data.draw(strategies.optional_masks(caps, shape, alignment))
    if mask is not None:
        assert strategies.hides_something(mask, alignment)
    if causal:
        assert strategies.fits_causal(shape, alignment)


def test_masks_refuse_shapes_where_nothing_can_be_hidden():
    with pytest.raises(ValueError, match="no mask can hide"):
        find(strategies.masks(2, 4, 1), lambda m: True)
    with pytest.raises(ValueError, match="no mask can hide"):
        find(strategies.masks(2, 1, 7, "top_left"), lambda m: True)
    assert find(strategies.optional_masks(GQA, strategies.Shape(2, 4, 1, 4, 4, 4)), lambda m: True) is None


def test_buckets_hold_the_shapes_of_real_workloads():
    found = strategies.SHAPES
    assert any(s.T == 1 and s.S >= 7 for s in found), "decode step"
    assert any(s.T > s.S for s in found), "more queries than keys"
    assert any(s.S == 1 for s in found), "a single key"
    assert any(s.S >= 32 for s in found), "a longer row"
    assert len({(s.B, s.T, s.S, s.H, s.H_kv, s.D) for s in found}) <= 10, "each bucket is a compile for JAX/XLA"


def test_buckets_are_agreement_shapes():
    """Frameworks that compile per shape reuse the agreement chapter's compiled functions."""
    from attnconf.conformance.cases import CONFIGS

    agreement = {(c.B, c.T, c.S, c.H, c.dims["H_kv"], c.D_k, c.E_q) for c in CONFIGS.values()
                 if c.dims["E_k"] == c.E_q == c.dims["E_out"] and c.dims["D_v"] == c.D_k}
    for s in strategies.SHAPES:
        assert (s.B, s.T, s.S, s.H, s.H_kv, s.D, s.E) in agreement, s


def test_bottom_right_causal_leaves_out_more_queries_than_keys():
    caps = Capabilities(causal_alignment="bottom_right")
    assert all(s.T <= s.S for s in strategies.shapes(caps, causal="bottom_right").elements)
    assert any(s.T > s.S for s in strategies.shapes(caps, causal="top_left").elements)
    wide = strategies.Shape(2, 7, 4, 4, 4, 4)
    assert find(strategies.causal_flags(caps, wide), lambda c: True) is False


@given(strategies.permutations(4))
def test_permutations_are_never_the_identity(p):
    assert sorted(p) == [0, 1, 2, 3] and list(p) != [0, 1, 2, 3]


def test_profiles_are_registered_and_ci_is_derandomised():
    from hypothesis import settings as hsettings

    for name in ("ci", "dev", "thorough"):
        assert hsettings.get_profile(name).deadline is None
    assert profiles.PROFILES["ci"].derandomize and profiles.PROFILES["ci"].database is None
    assert profiles.PROFILES["ci"].max_examples < profiles.PROFILES["dev"].max_examples < profiles.PROFILES[
        "thorough"].max_examples


def test_random_profiles_run_with_a_named_seed(monkeypatch):
    monkeypatch.setattr(profiles, "_session", {"profile": None, "seed": None})
    profiles.configure(None, None)
    assert profiles.profile_name() == "ci" and profiles.session_seed() is None
    assert profiles.reproduce_options() == "--hypothesis-profile ci"
    profiles.configure("dev", None)
    seed = profiles.session_seed()
    assert isinstance(seed, int)
    assert profiles.reproduce_options() == f"--hypothesis-profile dev --hypothesis-seed {seed}"
    profiles.configure("dev", "1234")
    assert profiles.session_seed() == 1234 and "seed 1234" in profiles.describe()


def test_change_tolerance_is_the_sum_of_both_agreement_tolerances():
    rng = np.random.default_rng(0)
    exact = rng.standard_normal((3, 4))
    same_a = exact + 1e-6
    same_b = exact - 3e-6
    tol = derive_change(exact, same_a, exact, same_b, "float32")
    assert tol.atol == pytest.approx(derive(exact, same_a, "float32").atol + derive(exact, same_b, "float32").atol)
    assert "agreement tolerances of both runs" in tol.explain()


def test_dtypes_are_those_the_adapter_runs_and_the_user_selected():
    caps = Capabilities(dtypes=frozenset({"float32", "float16", "float64"}))
    assert list(strategies.dtypes(caps, ("float16", "bfloat16", "float32")).elements) == ["float32", "float16"]


@given(strategies.shifts("float32"))
def test_shifts_are_signed_and_bounded_by_the_precision(shift):
    assert abs(shift) in strategies.SHIFTS["float32"]
