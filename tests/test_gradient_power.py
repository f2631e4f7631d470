"""The `gradients` chapter can fail: it catches every faulty adapter of tests/faulty_gradients.py.

The chapter runs once, in a pytest subprocess, over the numpy adapter, the controls and every
faulty adapter (``--adapter faulty_gradients:Class``, PYTHONPATH set to tests/), in float64,
float32, float16 and bfloat16; `--attnconf-json` says which tests failed for which adapter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import faulty_gradients as fg
import pytest

HERE = Path(__file__).resolve().parent
DTYPES = ("float64", "float32", "float16", "bfloat16")
CHAPTER_TESTS = {fg.AGREE, fg.KERNEL_AGREE, fg.MASKED, fg.CAUSAL}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """{adapter name: {outcome: {test name: [messages]}}} from one run of the chapter."""
    work = tmp_path_factory.mktemp("gradient_power")
    out = work / "results.json"
    adapters = ["numpy", *(f"faulty_gradients:{cls.__name__}" for cls in (*fg.CONTROLS, *fg.FAULTY))]
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        "attnconf.conformance.test_gradients",
        "-q",
        "--attnconf-json",
        str(out),
        *(f"--adapter={a}" for a in adapters),
        *(f"--dtype={d}" for d in DTYPES),
    ]
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        cmd, cwd=work, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=600
    )
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert out.exists(), f"the chapter run wrote no results (exit {proc.returncode}):\n{log}"
    by: dict[str, Any] = {}
    for t in json.loads(out.read_text())["tests"]:
        by.setdefault(t["adapter"], {}).setdefault(t["outcome"], {}).setdefault(t["test"], []).append(t["message"])
    return by


@pytest.mark.parametrize("cls", fg.FAULTY, ids=lambda c: c.__name__)
def test_faulty_adapter_is_caught(results, cls):
    outcomes = results.get(cls.name)
    assert outcomes is not None, f"{cls.name} did not run"
    failed = outcomes.get("failed", {})
    missed = sorted(set(cls.caught_by) - set(failed))
    assert failed and not missed, (
        f"{cls.name} ({cls.__doc__}) must be caught by {sorted(cls.caught_by)}; "
        f"it failed {sorted(failed) or 'nothing'}, so {missed or 'nothing'} missed it"
    )
    message = next(iter(failed.values()))[0]
    for part in ("gradient wrt", "expected", "got", "tolerance: atol", "reproduce: pytest"):
        assert part in message, f"failure message lacks {part!r}:\n{message}"


@pytest.mark.parametrize("name", ["numpy", *(c.name for c in fg.CONTROLS)])
def test_correct_adapter_passes(results, name):
    outcomes = results.get(name, {})
    failed = {test: msgs[0] for test, msgs in outcomes.get("failed", {}).items()}
    assert not failed, f"{name} is correct but failed: {failed}"
    assert outcomes.get("passed"), f"{name} passed nothing: {sorted(outcomes)}"


def test_every_chapter_test_catches_a_faulty_adapter(results):
    caught = set()
    for cls in fg.FAULTY:
        caught |= set(results.get(cls.name, {}).get("failed", {}))
    assert caught == CHAPTER_TESTS, f"tests that catch no faulty adapter: {sorted(CHAPTER_TESTS - caught)}"
