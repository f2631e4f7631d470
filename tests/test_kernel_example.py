"""The worked kernel adapter of docs/writing-an-adapter.md passes the chapters, as the page says.

`examples/kernel-adapter/numpy_kernel.py` is selected by its `module:Class` path (no installation, no
entry point) and the conformance suite runs on it in a subprocess, in one dtype (a few seconds): every
test it takes must pass, the kernel-level gradients included, so that the page's example cannot rot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kernel-adapter"
SPEC = "numpy_kernel:NumpyKernel"
NAME = "example.numpy-kernel"


def test_conformance_suite_passes_on_the_kernel_example(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(EXAMPLE), env.get("PYTHONPATH", "")) if p)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "attnconf.conformance",
            "--adapter",
            SPEC,
            "--dtype",
            "float32",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--attnconf-json",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    payload = json.loads(results.read_text())
    assert list(payload["adapters"]) == [NAME], payload["adapters"]
    tests = [t for t in payload["tests"] if t["adapter"] == NAME]
    outcomes = [t["outcome"] for t in tests]
    assert set(outcomes) <= {"passed", "skipped"}, outcomes
    assert outcomes.count("passed") >= 40, f"too few tests ran on the example: {outcomes}"
    kernel_gradients = [t for t in tests if t["test"] == "test_kernel_gradients" and t["outcome"] == "passed"]
    assert kernel_gradients, "the example's dot_product_attention_vjp was not tested"
