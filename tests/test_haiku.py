"""The Haiku adapter: unavailable with the reason when Haiku is missing, and its weight mapping."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys

import numpy as np
import pytest

from attnconf.adapters import haiku_mha, registry
from attnconf.commands import list_
from attnconf.contract import AttentionWeights, lazy_capabilities

ENTRY_POINT = importlib.metadata.EntryPoint(
    name=haiku_mha.API, value="attnconf.adapters.haiku_mha:HaikuMHA", group=registry.GROUP
)


@pytest.fixture
def without_haiku(monkeypatch: pytest.MonkeyPatch):
    """Haiku not installed: `find_spec` finds no `haiku`, and importing it fails."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "haiku" else real(name, *a))
    monkeypatch.setitem(sys.modules, "haiku", None)  # `import haiku` raises ImportError
    monkeypatch.setattr(registry, "entry_points", lambda: {haiku_mha.API: ENTRY_POINT})
    lazy_capabilities.clear(haiku_mha.HaikuMHA)
    yield
    monkeypatch.undo()
    lazy_capabilities.clear(haiku_mha.HaikuMHA)


def test_missing_haiku_is_reported_with_the_reason(without_haiku) -> None:
    assert haiku_mha.HaikuMHA.missing() == "module 'haiku' is not installed"
    with pytest.raises(registry.AdapterError, match="cannot run: module 'haiku' is not installed"):
        registry.select([haiku_mha.API])


def test_attnconf_list_shows_why_haiku_is_unavailable(without_haiku, capsys: pytest.CaptureFixture[str]) -> None:
    assert list_.main(argparse.Namespace(json=False, capabilities=False)) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith(haiku_mha.API))
    assert lines[row].split()[1] == "missing", lines[row]
    assert lines[row + 1].strip() == "module 'haiku' is not installed"


def test_weight_mapping_is_head_major_and_inverts() -> None:
    """Haiku splits each projection's output as `reshape(..., H, D)`: feature h * D + d is head h, slot d."""
    rng = np.random.default_rng(0)
    E_q, E_k, E_v, H, D_k, D_v, E_out = 5, 6, 7, 3, 2, 4, 9
    w = AttentionWeights(
        query_kernel=rng.normal(size=(E_q, H, D_k)),
        key_kernel=rng.normal(size=(E_k, H, D_k)),
        value_kernel=rng.normal(size=(E_v, H, D_v)),
        output_kernel=rng.normal(size=(H, D_v, E_out)),
        query_bias=rng.normal(size=(H, D_k)),
        key_bias=rng.normal(size=(H, D_k)),
        value_bias=rng.normal(size=(H, D_v)),
        output_bias=rng.normal(size=(E_out,)),
    )
    params = haiku_mha.to_haiku(w.arrays())
    query, value, out = (params[f"multi_head_attention/{m}"] for m in ("query", "value", "linear"))
    assert query["w"].shape == (E_q, H * D_k) and value["w"].shape == (E_v, H * D_v)
    assert out["w"].shape == (H * D_v, E_out) and out["b"].shape == (E_out,)
    h, d = 2, 1
    np.testing.assert_array_equal(query["w"][:, h * D_k + d], w.query_kernel[:, h, d])
    np.testing.assert_array_equal(query["b"][h * D_k + d], w.query_bias[h, d])
    np.testing.assert_array_equal(out["w"][h * D_v + d], w.output_kernel[h, d])
    back = haiku_mha.from_haiku(params, w)
    assert back.keys() == w.arrays().keys()
    for name, array in w.arrays().items():
        np.testing.assert_array_equal(back[name], array)
