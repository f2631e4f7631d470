"""What another project's CI uses: the composite action and the example workflow (validated against
GitHub's schemas as vendored by check-jsonschema, offline), `attnconf report --baseline` end to end,
the job summary, and junit.xml."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

ROOT = Path(__file__).resolve().parent.parent
ATTNCONF = [sys.executable, "-m", "attnconf.cli"]


def _check_jsonschema(schema: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    if exe is None:
        pytest.fail("check-jsonschema is not installed (it is in the test extra)")
    return subprocess.run([exe, "--builtin-schema", schema, *map(str, paths)], capture_output=True, text=True)


def test_action_validates_against_githubs_schema():
    r = _check_jsonschema("vendor.github-actions", ROOT / "action.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_workflows_validate_against_githubs_schema():
    r = _check_jsonschema("vendor.github-workflows", ROOT / "examples/ci/attnconf.yml",
                          *sorted((ROOT / ".github/workflows").glob("*.yml")))
    assert r.returncode == 0, r.stdout + r.stderr


def test_schema_check_can_fail(tmp_path):
    """The validation above is not vacuous: an action without `runs` is rejected."""
    text = (ROOT / "action.yml").read_text()
    broken = tmp_path / "action.yml"
    broken.write_text(text.replace("runs:\n  using: composite", "running:\n  using: composite"))
    r = _check_jsonschema("vendor.github-actions", broken)
    assert r.returncode != 0, r.stdout


def test_example_workflow_uses_this_action():
    text = (ROOT / "examples/ci/attnconf.yml").read_text()
    assert "uses: attention-conformance/attention-conformance@" in text and "my_adapter:MyAttention" in text
    assert len([line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]) <= 14


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One real run: the numpy adapter and the example CI adapter (module:attr from a checkout)."""
    out = tmp_path_factory.mktemp("ci") / "report"
    env = {"PYTHONPATH": f"{ROOT / 'examples/ci'}:{ROOT / 'src'}"}
    r = subprocess.run([*ATTNCONF, "run", "--adapter", "numpy", "--adapter", "my_adapter:MyAttention",
                        "--dtype", "float32", "-o", str(out)], capture_output=True, text=True,
                       env={**__import__("os").environ, **env}, cwd=tmp_path_factory.getbasetemp())
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ATTNCONF, "report", *args], capture_output=True, text=True)


def test_baseline_unchanged_run_passes(run_dir, tmp_path):
    r = _report("--baseline", str(run_dir), str(run_dir), "-o", str(tmp_path / "cmp"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No regression" in r.stdout
    assert json.loads((tmp_path / "cmp/baseline.json").read_text())["compared_conformance"] is True


def test_baseline_regressions_fail_and_are_listed(run_dir, tmp_path):
    """Two runs that differ: an audit outcome changed and a conformance test newly fails."""
    current = tmp_path / "current"
    shutil.copytree(run_dir, current)
    audit = json.loads((current / "audit.json").read_text())
    cell = audit["scenarios"]["mask_polarity"]["results"]["numpy"]
    before = cell["outcome"]
    cell["outcome"] = "true_masks" if before != "true_masks" else "true_attends"
    (current / "audit.json").write_text(json.dumps(audit))
    summary = json.loads((current / "summary.json").read_text())
    results_path = current / next(a["results"] for a in summary["adapters"] if a["name"] == "numpy")
    results = json.loads(results_path.read_text())
    victim = next(t for t in results["tests"] if t["outcome"] == "passed")
    victim["outcome"], victim["message"] = "failed", "AssertionError: output disagrees"
    results_path.write_text(json.dumps(results))

    r = _report("--baseline", str(run_dir / "audit.json"), str(current), "-o", str(tmp_path / "cmp"))
    assert r.returncode == 1, r.stdout + r.stderr
    kinds = {(x["kind"], x.get("scenario") or x.get("test")) for x in
             json.loads((tmp_path / "cmp/baseline.json").read_text())["regressions"]}
    assert kinds == {("outcome", "mask_polarity"), ("test", victim["nodeid"])}
    assert "2 regression(s)" in r.stdout and f"{before}" in r.stdout

    # and the other way round, the failing test fixed is a change, not a regression (the outcome still is)
    r = _report("--baseline", str(current), str(run_dir), "-o", str(tmp_path / "back"))
    back = json.loads((tmp_path / "back/baseline.json").read_text())
    assert r.returncode == 1 and [x["kind"] for x in back["regressions"]] == ["outcome"]
    assert any(c["kind"] == "fixed test" for c in back["changes"])


def test_baseline_usage_errors(run_dir, tmp_path):
    r = _report("--baseline", str(tmp_path / "nowhere"), str(run_dir))
    assert r.returncode == 2 and "expected an audit.json file" in r.stderr
    r = _report("--baseline", str(run_dir), str(run_dir), str(run_dir))
    assert r.returncode == 2 and "expected exactly one run" in r.stderr


def test_junit_xml_has_one_testcase_per_test(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    root = ET.parse(run_dir / "junit.xml").getroot()
    for a in summary["adapters"]:
        tests = json.loads((run_dir / a["results"]).read_text())["tests"]
        suite = root.find(f"testsuite[@name='{a['name']}']")
        assert suite is not None, a["name"]
        cases = suite.findall("testcase")
        assert len(cases) == len(tests) == int(suite.get("tests"))
        assert {c.get("classname").rsplit(".", 1)[0] for c in cases} == {a["name"]}
        assert len(suite.findall("testcase/skipped")) == sum(t["outcome"] in ("skipped", "xfailed") for t in tests)


def test_junit_xml_reports_failures(run_dir, tmp_path):
    from attnconf.ci import junit_xml

    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy)
    summary = json.loads((copy / "summary.json").read_text())
    path = copy / summary["adapters"][0]["results"]
    results = json.loads(path.read_text())
    results["tests"][0].update(outcome="failed", message="AssertionError: output disagrees\n  max abs error 1")
    path.write_text(json.dumps(results))
    root = ET.fromstring(junit_xml(copy))
    failures = root.findall(".//failure")
    assert len(failures) == 1 and failures[0].get("message") == "AssertionError: output disagrees"


def test_job_summary_names_every_adapter_and_the_departures(run_dir):
    r = _report("--job-summary", str(run_dir))
    assert r.returncode == 0, r.stderr
    assert "| `numpy` | passed |" in r.stdout and "| `my_adapter.MyAttention` | passed |" in r.stdout
    assert "### Departures" in r.stdout


def test_job_summary_shows_a_crash_reason_whole(run_dir, tmp_path):
    from attnconf.ci import job_summary

    copy = tmp_path / "crashed"
    shutil.copytree(run_dir, copy)
    summary = json.loads((copy / "summary.json").read_text())
    reason = "pytest exited with code 3 before writing results: " + "x" * 150 + " the END of the reason"
    summary["adapters"][0].update(status="crashed", reason=reason)
    (copy / "summary.json").write_text(json.dumps(summary))
    text = job_summary(copy)
    assert f"| `{summary['adapters'][0]['name']}` | crashed (reason below) |" in text
    assert reason in text
