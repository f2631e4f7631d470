"""A declared precision (`Capabilities.precision`, `Capabilities.scale_precision`) widens the
tolerance by exactly what it declares: an adapter that does what it declares passes, the same
adapter without the declaration fails, and a bigger or a different error still fails with it.

The adapters here are the reference itself, evaluated the way a framework with the departure
would: float64 inputs computed in float32 (Keras's float64 cast), or in float64 with the logit
scale rounded to float32 (TensorFlow's tf.cast of a Python float, ONNX's function body).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from attnconf.adapters.base import AttentionInputs, AttentionOutputs, AttentionWeights, Capabilities
from attnconf.conformance.cases import CONFIGS, make_inputs, make_weights, seed_for
from attnconf.conformance.check import Checker
from attnconf.reference import multi_head_attention, round_to

FLOAT32 = (("float64", "float32", "computes float64 in float32 (test)"),)
SCALE_FLOAT32 = (("float64", "float32", "rounds the logit scale to float32 (test)"),)
LAYER = dict(level="layer", gqa=True, kdim_vdim=True, value_dim=True, output_dim=True, custom_scale=True)


class Evaluated:
    """multi_head_attention by the reference in `compute`, optionally with the scale rounded to `scale_in`."""

    def __init__(self, compute: str, scale_in: str | None = None, **declared: Any) -> None:
        self.name = f"reference in {compute}" + (f", scale in {scale_in}" if scale_in else "")
        self.compute, self.scale_in = compute, scale_in
        self.capabilities = Capabilities(**LAYER, **declared)

    def multi_head_attention(self, inputs: AttentionInputs, weights: AttentionWeights, dtype: str) -> AttentionOutputs:
        if self.scale_in is not None:
            d_k = weights.query_kernel.shape[-1]
            scale = inputs.scale if inputs.scale is not None else 1.0 / math.sqrt(d_k)
            inputs = dataclasses.replace(inputs, scale=float(round_to(np.float64(scale), self.scale_in)))
        out = multi_head_attention(inputs, weights, dtype=self.compute)
        return AttentionOutputs(np.asarray(out.output, np.float64), np.asarray(out.weights, np.float64))


def agrees(adapter: Evaluated, config: str) -> bool:
    """Whether the checker passes `adapter` on the agreement case `config` in float64."""
    cfg = CONFIGS[config]
    rng = np.random.default_rng(seed_for("agreement", config))
    check = Checker(adapter=adapter, dtype="float64", nodeid="test_precision", reproduce="-")
    try:
        check.agrees(make_inputs(cfg, rng), make_weights(cfg, rng), case=config)
    except pytest.fail.Exception:
        return False
    return True


@pytest.mark.parametrize("config", ["self", "causal_mask", "scale"])
def test_declared_float32_accuracy(config: str) -> None:
    assert agrees(Evaluated("float32", precision=FLOAT32), config)
    assert not agrees(Evaluated("float32"), config), "float32 arithmetic must fail float64 undeclared"
    assert not agrees(Evaluated("float16", precision=FLOAT32), config), "a bigger error must still fail"


#: Cases whose scale is not a float32 number (1/sqrt(D_k) for D_k = 4, 16, 64 is).
@pytest.mark.parametrize("config", ["scale", "head_dim_128"])
def test_declared_scale_precision(config: str) -> None:
    assert agrees(Evaluated("float64", "float32", scale_precision=SCALE_FLOAT32), config)
    assert not agrees(Evaluated("float64", "float32"), config), "a float32 scale must fail float64 undeclared"
    assert not agrees(Evaluated("float32", scale_precision=SCALE_FLOAT32), config), \
        "a float32 evaluation is another departure: the scale's declaration must not cover it"


@pytest.mark.parametrize("field", ["precision", "scale_precision"])
@pytest.mark.parametrize("entry", [
    ("float32", "float64", "higher, not lower"),
    ("float64", "float64", "not lower"),
    ("float64", "float32", ""),
    ("float64", "int8", "not a float dtype"),
    ("float64", "float32"),
])
def test_declaration_is_validated(field: str, entry: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=field):
        Capabilities(**{field: (entry,)})


def test_declaration_needs_the_dtype() -> None:
    with pytest.raises(ValueError, match="a dtype in dtypes"):
        Capabilities(dtypes=frozenset({"float32"}), precision=FLOAT32)
    caps = Capabilities(precision=FLOAT32, scale_precision=SCALE_FLOAT32)
    assert caps.accuracy("float64") == "float32" and caps.accuracy("float16") == "float16"
    assert caps.scale_accuracy("float64") == "float32" and caps.scale_accuracy("float32") is None
    assert caps.as_dict()["precision"] == {"float64": {"as_accurate_as": "float32", "why": FLOAT32[0][2]}}
