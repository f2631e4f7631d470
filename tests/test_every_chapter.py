"""The chapters the default run leaves out run here too: the long chapter and the thorough profile.

`attnconf run` in the default `ci` profile skips the long chapter (`--attnconf-long`) and draws a
handful of Hypothesis examples. Here both run on numpy (the spec), one torch adapter
(`torch.nn.MultiheadAttention`, the general path: weights returned) and one Keras adapter
(`keras[torch].MultiHeadAttention`, its fused path), in float32, within CI's time: the long
chapter at every size it has (the cases estimated past the memory budget are skipped with their
numbers), the thorough profile (200 examples per property) on every other chapter. Times
measured on the project's 2-core machine are in docs/long.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attnconf.adapters.registry import select

ADAPTERS = ["numpy", "torch.nn.MultiheadAttention", "keras[torch].MultiHeadAttention"]


def _run(out: Path, pytest_args: str) -> dict[str, dict]:
    installed = [a for a in ADAPTERS if select([a])[0]]
    if len(installed) < len(ADAPTERS):
        pytest.skip(f"needs {ADAPTERS}; installed: {installed}")
    cmd = [sys.executable, "-m", "attnconf.cli", "run", "-o", str(out), "--no-audit", "--dtype", "float32",
           "--pytest-args", pytest_args] + [x for a in ADAPTERS for x in ("--adapter", a)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {a["name"]: a for a in json.loads((out / "summary.json").read_text())["adapters"]}


def test_long_chapter(tmp_path):
    entries = _run(tmp_path, "--attnconf-long -k test_long")
    for name in ADAPTERS:
        e = entries[name]
        assert e["status"] == "passed" and e["counts"].get("passed", 0) >= 3, e  # at least the three N = 4096 cases
        results = json.loads((tmp_path / e["results"]).read_text())["tests"]
        ran = {t["nodeid"].split("[", 1)[1] for t in results if t["outcome"] == "passed"}
        assert any("n4096_padding" in r for r in ran) and any("n4096_causal" in r for r in ran), ran
        assert e["peak_rss_bytes"] > 0


def test_thorough_profile(tmp_path):
    entries = _run(tmp_path, "--hypothesis-profile thorough -k 'not test_long'")
    for name in ADAPTERS:
        assert entries[name]["status"] == "passed" and entries[name]["counts"].get("failed", 0) == 0, entries[name]


def test_torch_mha_takes_absent_biases_as_zeros():
    """The layout translation that lets torch's one bias switch take query and output biases only."""
    pytest.importorskip("torch")
    from attnconf.adapters.base import AttentionInputs, AttentionWeights
    from attnconf.adapters.torch_mha import TorchMHA
    from attnconf.reference import multi_head_attention

    rng = np.random.default_rng(20)
    x = AttentionInputs(rng.standard_normal((2, 5, 8)), rng.standard_normal((2, 7, 8)), rng.standard_normal((2, 7, 8)))
    w = AttentionWeights(*(rng.standard_normal((8, 2, 4)) for _ in range(3)), rng.standard_normal((2, 4, 8)),
                         query_bias=rng.standard_normal((2, 4)), output_bias=rng.standard_normal(8))
    got = TorchMHA().multi_head_attention(x, w, "float64")
    want = multi_head_attention(x, w, dtype="float64")
    np.testing.assert_allclose(got.output, want.output, rtol=0, atol=1e-12)
    back = TorchMHA().round_trip_weights(w, "float64")
    assert back.key_bias is None and back.value_bias is None
    np.testing.assert_array_equal(back.query_bias, w.query_bias)
