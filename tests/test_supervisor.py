"""The session supervisor of `attnconf run` (`commands.sessions.Supervisor`): a test that hangs is
reported within ``--call-timeout`` with its id, a slow adapter whose tests progress is not stopped,
and what the sessions measured for the audit crosses as JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).parent
CALL_TIMEOUT = 4.0
SELECTION = "test_agreement and (causal or decode)"


@pytest.fixture(scope="module")
def stall_run(tmp_path_factory):
    """One run, one session (neither adapter declares a process group): `stall.slow` first, then
    `stall.hangs-in-one`, with a short call timeout and a long adapter timeout."""
    out = tmp_path_factory.mktemp("report")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable,
        "-m",
        "attnconf.cli",
        "run",
        "-o",
        str(out),
        "--no-audit",
        "--dtype",
        "float64",
        "--timeout",
        "600",
        "--call-timeout",
        str(CALL_TIMEOUT),
        "--pytest-args",
        f"-k '{SELECTION}'",
        "--adapter",
        "stalling:Slow",
        "--adapter",
        "stalling:HangsInOneTest",
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - started
    summary = json.loads((out / "summary.json").read_text())
    return proc, {a["name"]: a for a in summary["adapters"]}, out, wall


def test_a_hung_test_is_reported_within_the_call_timeout(stall_run):
    import stalling

    proc, adapters, out, wall = stall_run
    assert proc.returncode == 3, proc.stderr[-2000:]  # an adapter crashed
    hung = adapters["stall.hangs-in-one"]
    assert hung["status"] == "crashed", hung
    # the test that hung, by id, and how long it ran without a test starting or finishing
    m = re.search(r"hung in (\S+): no test started or finished for (\d+) s", hung["reason"])
    assert m, hung["reason"]
    assert m.group(1).endswith(f"test_agreement[stall.hangs-in-one-float64{stalling.HANG_IN}"), m.group(1)
    assert CALL_TIMEOUT <= float(m.group(2)) < CALL_TIMEOUT + 5, hung["reason"]
    assert wall < 600, "the run waited for --timeout, not --call-timeout"
    # the tests before the one that hung are counted (the same tests, in the same order, as `stall.slow`'s)
    slow_tests = json.loads((out / adapters["stall.slow"]["results"]).read_text())["tests"]
    before = [t["nodeid"] for t in slow_tests].index(
        next(t["nodeid"] for t in slow_tests if stalling.HANG_IN in t["nodeid"])
    )
    assert before > 0 and hung["counts"] == {"passed": before}, hung


def test_a_slow_adapter_whose_tests_progress_is_not_stopped(stall_run):
    _, adapters, out, _ = stall_run
    slow = adapters["stall.slow"]
    assert slow["status"] == "passed" and "reason" not in slow, slow
    tests = json.loads((out / slow["results"]).read_text())["tests"]
    # the adapter ran longer than the call timeout (so the check could have stopped it), no test did
    assert sum(t["duration"] for t in tests) > CALL_TIMEOUT, [t["duration"] for t in tests]
    assert max(t["duration"] for t in tests) < CALL_TIMEOUT, [t["duration"] for t in tests]
    assert slow["counts"] == {"passed": len(tests)}, slow


def test_what_a_session_measured_crosses_as_json_exactly(tmp_path):
    """`measured.dumps` writes strict JSON; `sessions.audits` reads it back: the same results, the
    captured arrays bit for bit (NaN and bfloat16 included), the real-weights rows and picture."""
    import ml_dtypes

    from attnconf.adapters import registry
    from attnconf.adapters.numpy_ref import NumpyAdapter
    from attnconf.audit import measured
    from attnconf.audit.adapter_audit import array_to_json, decode_captures
    from attnconf.audit.bank import bank_row
    from attnconf.audit.runner import measure_here
    from attnconf.commands import sessions

    rng = np.random.default_rng(0)
    capture = rng.random((1, 2, 3, 4)).astype(np.float32)
    capture[0, 0, 0, 0] = np.nan
    half = rng.random((2, 3)).astype(ml_dtypes.bfloat16)
    (handle,), _ = registry.select(["numpy"])
    here = measure_here([NumpyAdapter()], [handle], scenarios=["fully_masked_row"])
    captures = {"p1": ["float32", array_to_json(capture)], "p2": ["bfloat16", array_to_json(half)],
                "p3": ["float64", "raised X"]}
    here["numpy"]["captures"] = captures
    m = {"audit": here, "bank": {"numpy": bank_row(NumpyAdapter())}}
    (tmp_path / "sessions").mkdir()
    text = measured.dumps(m)
    (tmp_path / "sessions" / "numpy.audit.json").write_text(text)
    json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    back = sessions.audits(tmp_path)
    assert back == json.loads(json.dumps(m)), "what crossed differs from what was measured"
    got = decode_captures(back["audit"]["numpy"]["captures"])
    for probe, value in (("p1", capture), ("p2", half)):
        assert got[probe][1].dtype == value.dtype and got[probe][1].tobytes() == value.tobytes()
    assert got["p3"] == ("float64", "raised X")
    assert back["bank"]["numpy"]["png"], back["bank"]["numpy"]["none"]
    with pytest.raises(ValueError, match="attnconf.measured/1"):
        measured.loads(json.dumps({"schema": "attnconf.measured/0"}))
