"""The cross-version smoke: two ONNX Runtime releases through tox, merged into one report.

The full matrix (tox.ini, .github/workflows/matrix.yml) is too big for the README's test
command; this runs its cheapest family end to end: two tox environments pinning different
onnxruntime releases, each running `attnconf run`, then `tox -e report` merging them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENVS = ("onnx123", "onnx132")


@pytest.mark.skipif(shutil.which("tox") is None and not (Path(sys.executable).parent / "tox").exists(),
                    reason="tox is not installed (it is in the `test` extra)")
def test_two_onnxruntime_releases_merge_into_one_report(tmp_path):
    tox = shutil.which("tox") or str(Path(sys.executable).parent / "tox")
    env = {**os.environ, "ATTNCONF_RESULTS": str(tmp_path / "results")}
    common = [tox, "-c", str(ROOT / "tox.ini"), "--workdir", str(tmp_path / ".tox")]
    run_args = ["--", "--adapter", "onnxruntime.Attention", "--adapter", "onnxruntime.MultiHeadAttention",
                "--dtype", "float32", "--pytest-args", "-k test_agreement"]
    proc = subprocess.run([*common, "-e", ",".join(ENVS), *run_args], env=env, capture_output=True, text=True,
                          timeout=1800, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for e in ENVS:
        audit = json.loads((tmp_path / "results" / e / "audit.json").read_text())
        assert set(audit["adapters"]) == {"onnxruntime.Attention", "onnxruntime.MultiHeadAttention"}
    proc = subprocess.run([*common, "-e", "report"], env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    merged = tmp_path / "results" / "merged"
    report = json.loads(next(merged.glob("*.json")).read_text())
    text = json.dumps(report)
    assert "1.23.2" in text and "1.32.0" in text, "both onnxruntime versions are in the merged report"
    assert list(merged.glob("*.md")) and list(merged.glob("*.html"))
