"""Chapter `weights`: canonical -> native -> canonical is exact.

The adapter loads the canonical weights into its framework's layer and reads them back out of
that layer; every array must come back bit for bit, in every configuration the adapter takes.
"""

from __future__ import annotations

import numpy as np
import pytest

from attnconf.conformance.cases import CONFIGS, make_weights, seed_for

ROUND_TRIP_CONFIGS = ["self", "kdim_vdim", "value_dim", "output_dim", "no_bias", "gqa"]


@pytest.mark.parametrize("config", ROUND_TRIP_CONFIGS)
def test_weight_round_trip(adapter, dtype, config):
    if not adapter.capabilities.weight_round_trip:
        pytest.skip(f"{adapter.name} has no native weights to round-trip (capabilities.weight_round_trip=False)")
    cfg = CONFIGS[config]
    reason = cfg.unsupported(adapter.capabilities)
    if reason:
        pytest.skip(reason)
    weights = make_weights(cfg, np.random.default_rng(seed_for("weights", config))).astype(dtype)
    back = adapter.round_trip_weights(weights, dtype)
    sent, got = weights.arrays(), back.arrays()
    assert sorted(got) == sorted(sent), (
        f"{adapter.name}: round trip returned weights {sorted(got)}, expected {sorted(sent)}"
    )
    for name, array in sent.items():
        g = np.asarray(got[name])
        assert g.shape == array.shape, f"{adapter.name}: {name} came back with shape {g.shape}, expected {array.shape}"
        diff = np.argwhere(g.astype(np.float64) != array.astype(np.float64))
        assert diff.size == 0, (
            f"{adapter.name}: {name} ({dtype}) is not exact after canonical -> native -> canonical: "
            f"{len(diff)} of {array.size} entries differ, first at index {tuple(diff[0])}: "
            f"expected {array[tuple(diff[0])]!r}, got {g[tuple(diff[0])]!r}"
        )
