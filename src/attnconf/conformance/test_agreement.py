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


def test_agreement_user_weights(adapter, dtype, check, request):
    """Agreement on the weights given with ``--attnconf-weights FILE`` (e.g. a model being ported)."""
    path = request.config.getoption("attnconf_weights")
    if not path:
        pytest.skip("no --attnconf-weights FILE given")
    from attnconf.conformance.cases import Config
    from attnconf.weights_io import WeightFileError, load_weights

    try:
        weights = load_weights(path)
    except WeightFileError as err:
        raise pytest.UsageError(str(err)) from None
    cfg = Config(B=2, T=6, S=6, E_q=weights.query_dim, E_k=weights.key_dim, E_v=weights.value_dim,
                 H=weights.num_heads, H_kv=weights.num_kv_heads, D_k=weights.key_head_dim,
                 D_v=weights.value_head_dim, E_out=weights.output_dim, bias=weights.has_bias, mask="padding")
    reason = cfg.unsupported(adapter.capabilities)
    if reason:
        pytest.skip(reason)
    inputs = make_inputs(cfg, np.random.default_rng(seed_for("user-weights")), check.alignment)
    check.agrees(inputs, weights, case=f"weights from {path}")
