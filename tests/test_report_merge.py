"""`attnconf report`: audit.json files of several framework versions merged into one cross-version
report, the version where an outcome changed marked; unknown schemas and broken files refused with a
message naming the file (exit code 2)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from attnconf.adapters import registry
from attnconf.audit import merge, schema
from attnconf.audit.runner import run_audit
from attnconf.cli import main as cli_main

SCENARIOS = ["fully_masked_row", "causal_alignment", "default_scale"]


@pytest.fixture(scope="module")
def audit() -> dict[str, Any]:
    handles = [registry.load("audit_faulty:NanBottomRight")] + registry.select(["numpy"])[0]
    return run_audit(handles, isolation="none", jobs=1, scenarios=SCENARIOS)


def variant(audit: dict[str, Any], version: str, fully_masked: str | None = None) -> dict[str, Any]:
    """The audit as if run with numpy `version`; `fully_masked` overrides the faulty adapter's outcome."""
    doc = copy.deepcopy(audit)
    for a in doc["adapters"].values():
        a["versions"] = {"numpy": version}
    if fully_masked is not None:
        doc["scenarios"]["fully_masked_row"]["results"]["faulty.nan_bottom_right"]["outcome"] = fully_masked
    return doc


def write(path: Path, doc: dict[str, Any] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.fixture
def results(audit: dict[str, Any], tmp_path: Path) -> Path:
    """Three environments; the faulty adapter's fully-masked outcome changes at numpy 1.10.0."""
    root = tmp_path / "results"
    write(root / "py-new" / "audit.json", variant(audit, "1.10.0", "zeros"))
    write(root / "py-old" / "audit.json", variant(audit, "1.9.0"))
    write(root / "py-newer" / "audit.json", variant(audit, "1.11.1", "zeros"))
    return root


def test_merge_marks_the_version_where_an_outcome_changed(results: Path) -> None:
    docs, paths = merge.read_all([results])
    merged = merge.merge(docs, paths)
    assert schema.problems(merged, schema.REPORT_SCHEMA) == []
    assert merged["changes"] == [{
        "scenario": "fully_masked_row", "adapter": "faulty.nan_bottom_right", "from_versions": "numpy 1.9.0",
        "to_versions": "numpy 1.10.0", "before": "nan", "after": "zeros",
    }]
    history = merged["scenarios"]["fully_masked_row"]["adapters"]["faulty.nan_bottom_right"]["history"]
    assert [(h["version_label"], h["outcome"], h["changed"]) for h in history] == [
        ("numpy 1.9.0", "nan", False), ("numpy 1.10.0", "zeros", True), ("numpy 1.11.1", "zeros", False)]
    assert [h["label"] for h in history] == ["py-old", "py-new", "py-newer"]
    unchanged = merged["scenarios"]["causal_alignment"]["adapters"]["numpy"]
    assert not unchanged["changed"] and unchanged["outcomes"] == ["top_left"]


def test_same_versions_that_disagree_are_a_conflict(audit: dict[str, Any], tmp_path: Path) -> None:
    a = write(tmp_path / "m1" / "audit.json", variant(audit, "2.0"))
    b = write(tmp_path / "m2" / "audit.json", variant(audit, "2.0", "uniform"))
    merged = merge.merge(*merge.read_all([a, b]))
    entry = merged["scenarios"]["fully_masked_row"]["adapters"]["faulty.nan_bottom_right"]
    assert entry["conflict"] and not entry["changed"] and merged["changes"] == []


def test_cli_report_writes_three_files(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "merged"
    assert cli_main(["report", str(results), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    merged = schema.read(out / "report.json", accepted=(schema.REPORT_SCHEMA,))
    assert len(merged["inputs"]) == 3
    md = (out / "report.md").read_text()
    assert "**zeros**, changed at numpy 1.10.0" in md
    assert "faulty.nan\\_bottom\\_right" in md
    html = (out / "report.html").read_text()
    assert "default-src 'none'" in html and "(changed)" in html
    assert "fully_masked_row / faulty.nan_bottom_right: nan (numpy 1.9.0) -> zeros (numpy 1.10.0)" in capsys.readouterr().out


def _truncated(audit: dict[str, Any]) -> str:
    text = json.dumps(audit)
    return text[: len(text) // 2]


@pytest.mark.parametrize("content, message", [
    (lambda a: {**a, "schema": "attnconf.audit/2"}, "has schema 'attnconf.audit/2'; this attnconf reads 'attnconf.audit/1'"),
    (lambda a: {**a, "schema": "something/1"}, "has schema 'something/1'"),
    (lambda a: {k: v for k, v in a.items() if k != "schema"}, 'has no "schema" field'),
    (_truncated, "not valid JSON (truncated or corrupt?)"),
    (lambda a: "", "is empty"),
    (lambda a: "[1, 2]", "expected a JSON object"),
    (lambda a: {**a, "scenarios": {"fully_masked_row": {"results": {}}}}, "does not match the attnconf.audit/1 schema"),
])
def test_cli_report_refuses_bad_files(audit: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      content: Any, message: str) -> None:
    good = write(tmp_path / "good" / "audit.json", audit)
    bad = write(tmp_path / "bad" / "audit.json", content(audit))
    out = tmp_path / "out"
    assert cli_main(["report", str(good), str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and message in err, err
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.json", "no such file"),
    (lambda p: (p / "empty-dir").mkdir() or p / "empty-dir", "holds no audit.json"),
])
def test_cli_report_refuses_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any,
                                           message: str) -> None:
    target = make(tmp_path)
    assert cli_main(["report", str(target), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(target) in err and message in err
