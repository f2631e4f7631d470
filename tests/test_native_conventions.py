"""The native-convention adapters agree with the spec (tests/native_conventions.py), one framework
family per process, in float32 only (the conformance chapters run every dtype)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnconf.adapters import registry

HERE = Path(__file__).parent

#: family -> {adapter path: the checks it must have run, at least}
FAMILIES = {
    "jax": {
        "attnconf.adapters.jax_dpa:JaxDPA": {
            "conv/window-left",
            "conv/window-none-left",
            "conv/alibi-6",
            "conv/lengths",
        },
    },
    "torch": {
        "attnconf.adapters.torch_sdpa_lower_right:TorchSDPALowerRight": {"decode/one-token", "decode/ragged-cache"},
        "attnconf.adapters.torch_flex:TorchFlexAttention": {
            "conv/window-left",
            "conv/softcap",
            "conv/alibi-6",
            "conv/lengths",
            "conv/all",
        },
        "attnconf.adapters.transformers_rotary:HFLlamaRotary": {"rotary/half-rNone-theta500000-p37"},
        "attnconf.adapters.transformers_rotary:HFGPTNeoXRotary": {"rotary/half-r4-theta10000-p5"},
        "attnconf.adapters.transformers_rotary:HFCohereRotary": {"rotary/interleaved-rNone-theta500000-p37"},
        "attnconf.adapters.transformers_rotary:HFGPTJRotary": {"rotary/interleaved-r4-theta10000-p5"},
    },
    "keras-torch": {
        "attnconf.adapters.keras_hub_rotary:KerasHubRotary": {"rotary/half-rNone-theta500000-p37"},
        "attnconf.adapters.keras_hub_cached_mha:KerasHubCachedMHA": {"decode/chunk", "decode/ragged-cache-mha"},
    },
}
#: environment of a family's process
ENVIRONMENT = {"keras-torch": {"KERAS_BACKEND": "torch"}}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_native_conventions_match_the_spec(family):
    required = FAMILIES[family]
    runnable = [s for s in required if registry.load(s).available]
    if not runnable:
        pytest.skip(f"no {family} adapter can run here")
    env = {
        **os.environ,
        **ENVIRONMENT.get(family, {}),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, str(HERE / "native_conventions.py"), "--dtypes=float32", *runnable],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [line["adapter"] for line in lines] == runnable
    for line in lines:
        ratios = line["ratios"]["float32"]
        assert required[line["adapter"]] <= set(ratios), (line["adapter"], sorted(ratios))
        failing = {case: r for case, r in ratios.items() if not r <= 1.0}
        assert not failing, f"{line['adapter']}: error / derived tolerance > 1: {failing}"
