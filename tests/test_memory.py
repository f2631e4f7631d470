"""Memory bounds: an adapter that needs too much memory costs only its own results.

Three kernels on the long chapter, in float32, under a small budget:

* `Dense` says it materialises the scores (``fused=False``, the default): at N = 16,384 its
  estimate (1 x 2 x 16384 x 16384 x 4 bytes x 3 = 6 GiB) is past the budget, so the case is
  skipped with the numbers before anything runs;
* `Liar` says it is fused but holds three float64 `(1, 2, 4096, 4096)` arrays (768 MiB) at
  N = 4096: the estimate lets it run, and the ceiling stops it, in a worker process under
  ``pytest`` and as a session under ``attnconf run``;
* `Honest` is fused (the chunked reference, O(N) memory) and must pass every case it is given.
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
from attnconf.memory import GIB, MIB, parse_size
from attnconf.reference import chunked_attention, scaled_dot_product_attention

Array = np.ndarray[Any, Any]
BUDGET = "640MiB"
#: The cases, no mask: N = 16,384 for the dense kernel (skipped), N = 4096 for the others (ids carry the adapter).
SELECT = "memdense and n16384 and not causal or not memdense and n4096 and not causal and not padding"


def _caps(fused: bool) -> Capabilities:
    return Capabilities(level="kernel", returns_weights=False, gqa=True, value_dim=True, custom_scale=True,
                        fused=fused, notes="tests/test_memory.py")


class Honest(KernelAdapterBase):
    """Fused and truly O(N): the chunked reference in the requested precision."""

    name = "memhonest"
    capabilities = _caps(fused=True)

    def dot_product_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                              scale: float | None, dtype: str) -> Array:
        return chunked_attention(q, k, v, mask=mask, causal=causal, scale=scale, dtype=dtype)


class Dense(KernelAdapterBase):
    """Materialises the scores and says so (``fused=False``)."""

    name = "memdense"
    capabilities = _caps(fused=False)

    def dot_product_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                              scale: float | None, dtype: str) -> Array:
        return scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, scale=scale, dtype=dtype)


class Liar(Dense):
    """Says it is fused; holds logits, exponentials and weights in float64 at once. In its own process group."""

    name = "memliar"
    capabilities = _caps(fused=True)
    process_group = "memliar"

    def dot_product_attention(self, q: Array, k: Array, v: Array, mask: Array | None, causal: bool,
                              scale: float | None, dtype: str) -> Array:
        logits = np.einsum("bhtd,bhsd->bhts", q.astype(np.float64), k.astype(np.float64)) / np.sqrt(q.shape[-1])
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        weights = e / e.sum(axis=-1, keepdims=True)
        return np.einsum("bhts,bhsd->bhtd", weights, v.astype(np.float64)).astype(q.dtype)


def _env() -> dict[str, str]:
    here = str(Path(__file__).parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}


def _adapters() -> list[str]:
    return [a for cls in (Dense, Liar, Honest) for a in ("--adapter", f"test_memory:{cls.__name__}")]


@pytest.fixture(scope="module")
def pytest_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The long chapter under ``pytest`` (the liar in a worker process): test id -> record."""
    out = tmp_path_factory.mktemp("memory") / "results.json"
    cmd = [sys.executable, "-m", "pytest", "--pyargs", "attnconf.conformance.test_long", "--attnconf-long",
           "--dtype", "float32", "-k", SELECT, f"--attnconf-memory-budget={BUDGET}", f"--attnconf-json={out}",
           "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *_adapters()]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=str(out.parent), timeout=600)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return {t["nodeid"].split("[")[-1].rstrip("]"): t for t in json.loads(out.read_text())["tests"]
            if t["test"] == "test_long_kernel"}


def test_a_dense_case_past_the_budget_is_skipped_with_its_numbers(pytest_run):
    record = pytest_run["n16384-memdense-float32"]
    assert record["outcome"] == "skipped", record
    for number in ("1 x 2 x 16384 x 16384 x 4 x 3 = 6.0 GiB", f"memory budget of {BUDGET[:-3]} MiB"):
        assert number in record["message"], record["message"]


def test_a_liar_is_stopped_by_the_worker_ceiling(pytest_run):
    record = pytest_run["n4096-memliar-float32"]
    assert record["outcome"] == "failed", record
    assert f"exceeded the memory budget of {BUDGET[:-3]} MiB" in record["message"], record["message"]


def test_the_honest_adapter_is_complete_beside_them(pytest_run):
    assert {k: v["outcome"] for k, v in pytest_run.items()} == {
        "n16384-memdense-float32": "skipped", "n4096-memliar-float32": "failed", "n4096-memhonest-float32": "passed"}


def test_attnconf_run_stops_the_liars_session_and_reports_peaks(tmp_path):
    """The same under ``attnconf run``: the liar's session is killed past the budget and reported
    with the reason; the honest adapter's results are complete; every entry carries its peak."""
    cmd = [sys.executable, "-m", "attnconf.cli", "run", "-o", str(tmp_path), "--no-audit", "--memory-budget", BUDGET,
           "--adapter", "test_memory:Liar", "--adapter", "test_memory:Honest",
           "--pytest-args", "--attnconf-long --dtype float32 -k 'n4096 and not causal and not padding'"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 3, proc.stderr[-3000:]  # an adapter crashed: the liar
    summary = json.loads((tmp_path / "summary.json").read_text())
    entries = {a["name"]: a for a in summary["adapters"]}
    assert summary["memory_budget_bytes"] == parse_size(BUDGET)
    assert entries["memliar"]["status"] == "crashed"
    assert f"exceeded the memory budget of {BUDGET[:-3]} MiB" in entries["memliar"]["reason"]
    assert entries["memhonest"]["status"] == "passed" and entries["memhonest"]["counts"].get("passed") == 1
    assert "failed" not in entries["memhonest"]["counts"]
    assert entries["memliar"]["peak_rss_bytes"] > parse_size(BUDGET)
    assert 20 * MIB < entries["memhonest"]["peak_rss_bytes"] < GIB
    assert "peak" in proc.stdout and "MiB" in proc.stdout  # the console summary


@pytest.mark.parametrize("text,expected", [("8GiB", 8 * GIB), ("512MiB", 512 * MIB), ("1.5G", int(1.5 * GIB)),
                                           ("1000", 1000)])
def test_sizes_parse(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "-1GiB", "8 parsecs", "GiB"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError, match="a memory size"):
        parse_size(text)
