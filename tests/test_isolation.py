"""A crashing, hanging or broken adapter costs only its own results (attnconf run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import hang_marker, wait_until

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "attnconf.cli", "run", "-o", str(out), "--no-audit", "--timeout", "40",
           "--dtype", "float64", "--pytest-args", "-k test_agreement",
           "--adapter", "numpy", "--adapter", "crashing:Aborts", "--adapter", "crashing:Hangs",
           "--adapter", "crashing_import:Anything", "--adapter", "crashing:WrongShape", "--adapter", "crashing:ReturnsNaN"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    return proc, {a["name"]: a for a in summary["adapters"]}, out


def test_exit_code_says_an_adapter_crashed(fault_run):
    proc, _, _ = fault_run
    assert proc.returncode == 3, proc.stderr[-2000:]


def test_the_correct_adapter_is_complete(fault_run):
    _, adapters, out = fault_run
    from attnconf.adapters.numpy_ref import NumpyAdapter
    from attnconf.conformance.cases import CONFIGS

    numpy = adapters["numpy"]
    # every agreement case in float64: run where the spec's own adapter takes it, skipped where not
    runs = sum(c.unsupported(NumpyAdapter.capabilities) is None for c in CONFIGS.values())
    counts = numpy["counts"]
    assert numpy["status"] == "passed" and counts["passed"] == runs and "failed" not in counts, numpy
    assert (out / numpy["results"]).is_file()
    # none of these declares a process group: they shared a session, and the faults were still
    # attributed adapter by adapter
    assert "crash.aborts" in numpy["session"] and "crash.hangs" in numpy["session"], numpy["session"]


@pytest.mark.parametrize("name,status,reason", [
    ("crash.aborts", "crashed", "killed by signal SIGABRT"),
    ("crash.hangs", "crashed", "timed out after 40 s"),
    ("crashing_import:Anything", "crashed", "simulated: this adapter's framework failed to import"),
    ("crash.wrong-shape", "failed", "output has shape (2, 4, 16), expected (B, T, E_out)=(2, 5, 16)"),
    ("crash.nan", "failed", "non-finite mismatch at index"),
])
def test_each_fault_is_reported_with_its_status_and_reason(fault_run, name, status, reason):
    _, adapters, _ = fault_run
    entry = adapters[name]
    assert entry["status"] == status, entry
    text = entry.get("reason", "") + " ".join(f["message"] for f in entry.get("failures", []))
    assert reason in text, text[:2000]


def test_interrupted_run_leaves_the_previous_report_intact(tmp_path, tmp_path_factory):
    import signal

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    base = [sys.executable, "-m", "attnconf.cli", "run", "-o", str(tmp_path), "--no-audit", "--dtype", "float64",
            "--pytest-args", "-k test_agreement"]
    first = subprocess.run(base + ["--adapter", "numpy"], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "summary.json").read_bytes()
    marker, hang_env = hang_marker(tmp_path_factory.mktemp("hang"))
    proc = subprocess.Popen(base + ["--adapter", "crashing:Hangs", "--timeout", "300"], env={**env, **hang_env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(marker.exists, 120, "the hanging adapter's call to start")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; the previous report" in err and "Not finished: crash.hangs" in err
    assert (tmp_path / "summary.json").read_bytes() == before
    assert not list(tmp_path.glob(".staging-*")), "staging directory left behind"


def test_default_report_directory_is_relative_to_where_run_is_called(tmp_path):
    """`attnconf run` with its default `-o attnconf-report` (relative), as in the quick start: the
    pytest workers run elsewhere, yet the results land in ./attnconf-report/."""
    proc = subprocess.run([sys.executable, "-m", "attnconf.cli", "run", "--adapter", "numpy", "--no-audit",
                           "--pytest-args", "-k test_agreement"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / "attnconf-report" / "summary.json").read_text())
    (numpy,) = summary["adapters"]
    assert numpy["status"] == "passed" and numpy["counts"]["passed"] > 0, numpy


def test_audit_in_the_sessions_equals_the_audit_in_workers(tmp_path):
    """`attnconf run` audits each adapter inside its conformance session; `attnconf audit` in
    worker processes. The outcomes must be the same, scenario by scenario."""
    pytest.importorskip("torch")
    adapters = ["--adapter", "numpy", "--adapter", "torch.nn.MultiheadAttention"]
    run = subprocess.run([sys.executable, "-m", "attnconf.cli", "run", "-o", str(tmp_path / "run"), *adapters,
                          "--dtype", "float32", "--pytest-args", "-k test_agreement"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 measured in their conformance session" in run.stderr
    audit = subprocess.run([sys.executable, "-m", "attnconf.cli", "audit", "-o", str(tmp_path / "audit"), *adapters],
                           capture_output=True, text=True, timeout=600)
    assert audit.returncode == 0, audit.stderr[-2000:]
    a, b = (json.loads((tmp_path / d / "audit.json").read_text()) for d in ("run", "audit"))
    assert {n: e["measured_in"] for n, e in a["adapters"].items()} == dict.fromkeys(a["adapters"], "conformance session")
    assert {n: e["measured_in"] for n, e in b["adapters"].items()} == dict.fromkeys(b["adapters"], "audit worker")
    assert a["scenarios"].keys() == b["scenarios"].keys()
    for sid, scenario in a["scenarios"].items():
        for name, result in scenario["results"].items():
            other = b["scenarios"][sid]["results"][name]
            assert (result["outcome"], result["detail"]) == (other["outcome"], other["detail"]), (sid, name)


def test_pytest_args_are_split_like_a_shell_line(tmp_path):
    """--pytest-args keeps a quoted -k expression whole."""
    proc = subprocess.run([sys.executable, "-m", "attnconf.cli", "run", "-o", str(tmp_path), "--adapter", "numpy",
                           "--no-audit", "--pytest-args", "-k 'test_agreement and float32 and self'"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (numpy,) = json.loads((tmp_path / "summary.json").read_text())["adapters"]
    assert numpy["counts"] == {"passed": 1}, numpy
