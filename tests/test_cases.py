"""The agreement cases (`cases.CONFIGS`): the shapes real workloads use, and masks that mask something."""

from __future__ import annotations

import numpy as np
import pytest

from attnconf.adapters.base import Capabilities
from attnconf.conformance.cases import CONFIGS, Config, make_inputs, padding_lengths, seed_for, visible_keys

ALIGNMENTS = ("top_left", "bottom_right")


def _inputs(name: str, alignment: str):
    return make_inputs(CONFIGS[name], np.random.default_rng(seed_for("agreement", name)), alignment)


def _runs(name: str, alignment: str) -> bool:
    """Whether the case runs for an adapter with that causal alignment (else it is skipped with a reason)."""
    caps = Capabilities(gqa=True, kdim_vdim=True, value_dim=True, output_dim=True, custom_scale=True,
                        causal_alignment=alignment)  # type: ignore[arg-type]
    return CONFIGS[name].unsupported(caps) is None


@pytest.mark.parametrize("alignment", ALIGNMENTS)
@pytest.mark.parametrize("name", [n for n, c in CONFIGS.items() if c.mask])
def test_every_masked_case_masks_something(name: str, alignment: str) -> None:
    """The mask hides a key that the causal flag (if any) would let a query see, as the agreement chapter draws it."""
    if not _runs(name, alignment):
        pytest.skip("not run under this alignment")
    cfg = CONFIGS[name]
    mask = _inputs(name, alignment).mask
    assert mask is not None and mask.shape == (cfg.B, cfg.T, cfg.S)
    without = visible_keys(cfg, None, alignment)
    with_mask = visible_keys(cfg, mask, alignment)
    assert (without & ~with_mask).any(), f"{name}: the mask hides nothing"
    assert with_mask.any(axis=-1).all(), f"{name}: a row sees no key"


@pytest.mark.parametrize("name", [n for n, c in CONFIGS.items() if c.mask == "padding"])
def test_padding_masks_give_every_element_a_different_length(name: str) -> None:
    mask = _inputs(name, "top_left").mask
    lengths = mask[:, 0].sum(axis=-1)  # a key padding mask: the same for every query
    assert (mask == mask[:, :1]).all()
    assert len(set(lengths.tolist())) == len(lengths), f"{name}: lengths {lengths.tolist()}"
    assert lengths.min() < CONFIGS[name].S


@pytest.mark.parametrize("alignment", ALIGNMENTS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_no_case_has_a_row_without_a_visible_key(name: str, alignment: str) -> None:
    if not _runs(name, alignment):
        pytest.skip("not run under this alignment")
    cfg = CONFIGS[name]
    x = _inputs(name, alignment)
    assert visible_keys(cfg, x.mask, alignment).any(axis=-1).all()


def test_bottom_right_causal_with_more_queries_than_keys_is_skipped_with_the_reason() -> None:
    reason = Config(T=7, S=4, causal=True).unsupported(Capabilities(causal_alignment="bottom_right"))
    assert reason and "no visible key" in reason
    assert Config(T=7, S=4, causal=True).unsupported(Capabilities(causal_alignment="top_left")) is None


def test_the_cases_hold_the_shapes_of_real_workloads() -> None:
    cases = list(CONFIGS.values())
    assert any(c.T == 1 and c.S >= 7 and c.causal for c in cases), "causal decode step"
    assert any(c.T == 1 and c.S >= 7 and not c.causal for c in cases), "decode step"
    assert any(c.T > c.S for c in cases) and any(c.S == 1 for c in cases) and any(c.H == 1 for c in cases)
    for row in (16, 32, 64):
        assert any(c.S == row for c in cases), f"a row of {row} keys"
    assert any(c.S >= 100 for c in cases), "a row of 100+ keys"
    assert {64, 128} <= {c.D_k for c in cases}, "head widths 64 and 128"
    assert any(c.B >= 3 and c.mask == "padding" for c in cases), "a batch padded to different lengths"


def test_padding_lengths_are_distinct_and_refuse_impossible_requests() -> None:
    rng = np.random.default_rng(0)
    for B, S in ((2, 2), (3, 3), (4, 6), (3, 16)):
        lengths = padding_lengths(B, S, rng)
        assert lengths[0] == S and len(set(lengths.tolist())) == B and (lengths[1:] < S).all() and lengths.min() >= 1
    with pytest.raises(ValueError, match="S >= 2"):
        padding_lengths(2, 1, rng)
    with pytest.raises(ValueError, match="different lengths"):
        padding_lengths(4, 3, rng)
