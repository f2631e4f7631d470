"""Meta-tests of the invariant chapters' helpers: strategies, profiles and the change tolerance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnconf.adapters.base import Capabilities
from attnconf.conformance import profiles, strategies
from attnconf.conformance.tolerances import derive, derive_change
from attnconf.reference import causal_mask

TORCH_LIKE = Capabilities(head_dim=False, gqa=False)
GQA = Capabilities(gqa=True)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_masks_keep_a_visible_key_in_every_row(data):
    shape = data.draw(strategies.shapes(GQA))
    alignment = data.draw(st.sampled_from([None, "top_left", "bottom_right"]))
    mask = data.draw(strategies.masks(shape.B, shape.T, shape.S, alignment))
    assert mask.shape == (shape.B, shape.T, shape.S) and mask.dtype == np.bool_
    visible = mask if alignment is None else mask & causal_mask(shape.T, shape.S, alignment)[None]
    assert visible.any(axis=-1).all()
    if alignment is not None:  # with a causal flag: a key padding mask, equal for every query
        assert (mask == mask[:, :1]).all()


@pytest.mark.parametrize("caps", [Capabilities(), TORCH_LIKE, GQA], ids=["default", "tied", "gqa"])
def test_shapes_fit_the_capabilities(caps):
    found = strategies.shapes(caps).elements
    assert found
    for s in found:
        assert s.T <= s.S
        assert caps.head_dim or s.H * s.D == s.E
        assert caps.gqa or s.H_kv == s.H


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
