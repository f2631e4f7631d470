"""Chapter `agreement`: multi-head attention agrees with the float64 reference.

Each named configuration (`cases.CONFIGS`) covers one feature of the spec: self and cross
attention, key/value and output widths, bias-free, boolean and padding masks, causal (square
and T != S, with the adapter's declared alignment), custom scale and grouped-query heads. The
tolerance is derived per case (`tolerances.py`).
"""

from __future__ import annotations

import numpy as np
import pytest

from attnconf.conformance.cases import CONFIGS, make_inputs, make_weights, seed_for


@pytest.mark.parametrize("config", list(CONFIGS))
def test_agreement(adapter, dtype, config, check):
    cfg = CONFIGS[config]
    reason = cfg.unsupported(adapter.capabilities)
    if reason:
        pytest.skip(reason)
    rng = np.random.default_rng(seed_for("agreement", config))
    inputs = make_inputs(cfg, rng, check.alignment)
    weights = make_weights(cfg, rng)
    check.agrees(inputs, weights, case=config)
