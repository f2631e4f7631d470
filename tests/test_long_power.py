"""The long chapter can fail: kernels whose bugs live in long sequences.

`ContextTruncated` is exact up to 2048 keys and wrong beyond; `HalfPrecisionSum` keeps the softmax
denominator in float16, an error that grows with the number of key blocks. Each must fail
`test_long_kernel` at N = 4096, and the control, the same arithmetic without the bug, must pass.
The chapter runs in a pytest subprocess with ``--attnconf-long``, in float32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attnconf.adapters.base import Capabilities
from attnconf.adapters.support import KernelAdapterBase
from attnconf.reference import scaled_dot_product_attention

Array = np.ndarray[Any, Any]
KERNEL = Capabilities(level="kernel", returns_weights=False, gqa=True, value_dim=True, custom_scale=True,
                      notes="tests/test_long_power.py")


class Control(KernelAdapterBase):
    """The plain reference on the whole sequence, in the requested precision."""

    name = "long.control"
    capabilities = KERNEL

    def dot_product_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                              scale: float | None, dtype: str) -> Array:
        return scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, scale=scale, dtype=dtype)


class ContextTruncated(Control):
    """Keys beyond a hard-coded context of 2048 are dropped (a fixed-size cache, a positional table)."""

    name = "long.context_truncated"

    def dot_product_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                              scale: float | None, dtype: str) -> Array:
        m = None if mask is None else mask[..., :2048]
        if causal:  # the causal mask of the full length, cut like the keys
            tri = np.tril(np.ones((q.shape[2], k.shape[2]), dtype=bool))[:, :2048][None, None]
            m, causal = (tri if m is None else tri & m), False
        return scaled_dot_product_attention(q, k[:, :, :2048], v[:, :, :2048], mask=m, causal=causal, scale=scale,
                                            dtype=dtype)


class HalfPrecisionSum(Control):
    """The softmax denominator accumulated in float16 over blocks of 256 keys."""

    name = "long.half_precision_sum"

    def dot_product_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                              scale: float | None, dtype: str) -> Array:
        out = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, scale=scale, dtype="float64")
        logits = np.einsum("bhtd,bhsd->bhts", q.astype(np.float64), k.astype(np.float64)) / np.sqrt(q.shape[-1])
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        total = np.zeros(e.shape[:-1], dtype=np.float16)
        for j in range(0, e.shape[-1], 256):
            total = (total + e[..., j:j + 256].sum(axis=-1).astype(np.float16)).astype(np.float16)
        exact = e.sum(axis=-1)
        return (out * (exact / total.astype(np.float64))[..., None]).astype(q.dtype)


CASES = {Control: False, ContextTruncated: True, HalfPrecisionSum: True}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("long") / "results.json"
    cmd = [sys.executable, "-m", "pytest", "--pyargs", "attnconf.conformance.test_long", "--attnconf-long",
           "--dtype", "float32", "-k", "test_long_kernel and n4096 and not causal and not padding",
           f"--attnconf-json={out}", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    for cls in CASES:
        cmd += ["--adapter", f"test_long_power:{cls.__name__}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(out.parent))
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return {t["adapter"]: t["outcome"] for t in json.loads(out.read_text())["tests"]}


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_long_chapter_catches_only_the_faulty_kernels(outcomes, cls):
    expected = "failed" if CASES[cls] else "passed"
    assert outcomes.get(cls.name) == expected, f"{cls.name} ({cls.__doc__}): {outcomes}"
