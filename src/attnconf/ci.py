"""What another project's CI needs from a report directory: a verdict against a baseline, a job
summary, and JUnit XML.

A report directory is what `attnconf run -o DIR` writes: ``summary.json`` (conformance, per adapter),
``results/<adapter>.json`` (every test), ``audit.json`` (behaviour outcomes). A baseline is such a
directory, or just its ``audit.json``, committed by the caller from an earlier run.

* `compare(baseline, current)` lists what changed: audit outcomes per scenario and adapter, and,
  where both sides have their conformance results, tests that fail now and did not fail before.
  A *regression* is an outcome that changed, an adapter that was measured before and crashed or
  vanished now, or a conformance test that newly fails; scenarios, adapters and tests that are new
  are listed but are not regressions (nothing to compare them with).
* `job_summary(report_dir)` is Markdown for ``$GITHUB_STEP_SUMMARY``: the verdict per adapter,
  the failures with their messages, and the departures (declared expected differences that held,
  and audit outcomes that depart from the spec or from the common outcome).
* `junit_xml(report_dir)` is one ``<testcase>`` per conformance test, ``classname`` =
  ``<adapter>.<chapter>``, for CI systems that read JUnit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from attnconf.audit import layout, schema

#: Adapter statuses (audit.json) that mean "measured"; anything else is a crash or a skip.
MEASURED = ("ok",)


@dataclass
class Side:
    """One side of a comparison: the audit document and, if present, the conformance tests by adapter."""

    path: Path
    audit: dict[str, Any]
    tests: dict[str, dict[str, str]] | None  # adapter -> nodeid -> outcome; None: no conformance results


@dataclass
class Comparison:
    regressions: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)  # not regressions: new things, fixes
    compared_conformance: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"regressions": self.regressions, "changes": self.changes,
                "compared_conformance": self.compared_conformance}


def load_side(path: str | Path) -> Side:
    """A report directory or an audit.json (with summary.json and results/ beside it, if any)."""
    p = Path(path)
    audit_path = p / "audit.json" if p.is_dir() else p
    if not audit_path.is_file():
        raise schema.ReportFileError(f"{path}: expected an audit.json file or a report directory holding one, "
                                     f"found {'a directory without audit.json' if p.is_dir() else 'nothing'}")
    audit = schema.read(audit_path)
    return Side(audit_path, audit, _tests(audit_path.parent))


def _tests(report_dir: Path) -> dict[str, dict[str, str]] | None:
    summary_path = report_dir / "summary.json"
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    return {a["name"]: {t["nodeid"]: t["outcome"] for t in adapter_tests(report_dir, a)}
            for a in summary.get("adapters", [])}


def adapter_tests(report_dir: Path, adapter: dict[str, Any]) -> list[dict[str, Any]]:
    """The test records of one summary.json adapter entry (its ``results/<adapter>.json``); [] if none."""
    path = report_dir / adapter["results"] if adapter.get("results") else None
    if path is None or not path.is_file():
        return []
    return list(json.loads(path.read_text()).get("tests", []))


def compare(baseline: Side, current: Side) -> Comparison:
    """What changed from `baseline` to `current` (see the module docstring for what regresses)."""
    result = Comparison()
    base, cur = baseline.audit, current.audit
    for name, a in base["adapters"].items():
        now = cur["adapters"].get(name)
        if a["status"] in MEASURED and (now is None or now["status"] not in MEASURED):
            result.regressions.append({"kind": "adapter", "adapter": name, "before": a["status"],
                                       "after": "missing" if now is None else now["status"],
                                       "detail": "" if now is None else now.get("reason", "")})
    for name in cur["adapters"].keys() - base["adapters"].keys():
        result.changes.append({"kind": "new adapter", "adapter": name})
    for sid, sc in cur["scenarios"].items():
        before_sc = base["scenarios"].get(sid)
        for name, r in sc["results"].items():
            before = (before_sc or {}).get("results", {}).get(name)
            if before is None:
                if base["adapters"].get(name, {}).get("status") in MEASURED and before_sc is not None:
                    result.changes.append({"kind": "new outcome", "scenario": sid, "adapter": name,
                                           "after": r["outcome"]})
                continue
            if before["outcome"] != r["outcome"]:
                result.regressions.append({"kind": "outcome", "scenario": sid, "adapter": name,
                                           "before": before["outcome"], "after": r["outcome"],
                                           "detail": r.get("detail", "")})
    for sid in cur["scenarios"].keys() - base["scenarios"].keys():
        result.changes.append({"kind": "new scenario", "scenario": sid})
    if baseline.tests is not None and current.tests is not None:
        result.compared_conformance = True
        for name, tests in current.tests.items():
            before = baseline.tests.get(name)
            if before is None:
                continue
            for nodeid, outcome in sorted(tests.items()):
                was = before.get(nodeid)
                if outcome == "failed" and was != "failed":
                    result.regressions.append({"kind": "test", "adapter": name, "test": nodeid,
                                               "before": was or "absent", "after": outcome})
                elif was == "failed" and outcome != "failed":
                    result.changes.append({"kind": "fixed test", "adapter": name, "test": nodeid,
                                           "before": was, "after": outcome})
    return result


def comparison_markdown(comp: Comparison, baseline: Side, current: Side) -> str:
    lines = [f"## attnconf: against the baseline `{baseline.path}`", ""]
    if not comp.compared_conformance:
        lines += ["Conformance tests not compared (one side has no summary.json beside its audit.json); "
                  "audit outcomes compared.", ""]
    if comp.regressions:
        lines += [f"**{len(comp.regressions)} regression(s)**:", "", "| what | adapter | before | after | detail |",
                  "|---|---|---|---|---|"]
        for r in comp.regressions:
            what = r.get("scenario") or r.get("test") or "adapter status"
            lines.append(f"| {_md(r['kind'])}: {_md(what)} | {_md(r['adapter'])} | {_md(r['before'])} | "
                         f"{_md(r['after'])} | {_md(str(r.get('detail', ''))[:200])} |")
    else:
        lines.append("No regression: every outcome the baseline measured is unchanged.")
    if comp.changes:
        lines += ["", f"{len(comp.changes)} other change(s) (not regressions):", ""]
        for c in comp.changes:
            parts = [c["kind"]] + [f"{k} {c[k]}" for k in ("scenario", "adapter", "test", "before", "after") if k in c]
            lines.append(f"- {_md(', '.join(str(p) for p in parts))}")
    return "\n".join(lines) + "\n"


def job_summary(report_dir: str | Path) -> str:
    """Markdown for a CI job summary: verdict per adapter, failures, and the departures."""
    d = Path(report_dir)
    summary = json.loads((d / "summary.json").read_text())
    lines = ["## attnconf run", "", "| adapter | status | passed | failed | xfailed (declared departures) | skipped |",
             "|---|---|---|---|---|---|"]
    for a in summary["adapters"]:
        c = a.get("counts", {})
        status = a["status"] + (" (reason below)" if a.get("reason") else "")
        lines.append(f"| `{a['name']}` | {_md(status)} | {c.get('passed', 0)} | {c.get('failed', 0)} | "
                     f"{c.get('xfailed', 0)} | {c.get('skipped', 0)} |")
    for s in summary.get("skipped", []):
        lines.append(f"| `{s['name']}` | skipped: {_md(s['reason'])} | | | | |")
    for a in summary["adapters"]:
        if a.get("reason"):
            lines += ["", f"**{_md(a['name'])}** {a['status']}:", "", "```", str(a["reason"]).strip(), "```"]
        for f in a.get("failures", []):
            lines += ["", f"<details><summary><b>{_md(a['name'])}</b> failed <code>{_md(f['test'])}</code></summary>",
                      "", "```", f["message"].strip(), "```", "</details>"]
    lines += ["", "### Departures", ""]
    declared = _declared(d, summary)
    if declared:
        lines += ["Declared expected differences that held (XFAIL), by adapter and reason:", ""]
        for (adapter, reason), n in sorted(declared.items()):
            lines.append(f"- `{adapter}` ({n} test{'s' * (n != 1)}): {_md(reason[:300])}")
    else:
        lines.append("No declared expected difference was exercised.")
    audit_path = d / "audit.json"
    if audit_path.is_file():
        lines += ["", "Audit outcomes that depart from the spec (or, where it defines none, from the most common "
                  "outcome); the full table is audit.md / audit.html in the report artifact:", ""]
        found = _audit_departures(json.loads(audit_path.read_text()))
        lines += [f"- {_md(sid)}: " + "; ".join(f"`{n}` {_md(o)}" for n, o in cells) for sid, cells in found]
        if not found:
            lines.append("- none")
    return "\n".join(lines) + "\n"


def _declared(report_dir: Path, summary: dict[str, Any]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for a in summary["adapters"]:
        for t in adapter_tests(report_dir, a):
            if t["outcome"] == "xfailed":
                key = (a["name"], " ".join(t.get("message", "").split()))
                out[key] = out.get(key, 0) + 1
    return out


def _audit_departures(audit: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    found = []
    for sid, sc in audit["scenarios"].items():
        ref = layout.reference_outcome(sc)
        cells = [(name, r["outcome"]) for name, r in sc["results"].items()
                 if layout.result_kind(r, sc, ref) in ("diff", "broken")]
        if cells:
            found.append((sid, cells))
    return found


def junit_xml(report_dir: str | Path) -> bytes:
    """JUnit XML of the conformance tests in a report directory: one testcase per test, classname
    ``<adapter>.<chapter>``; an adapter that crashed before its tests ran is one errored testcase."""
    d = Path(report_dir)
    summary = json.loads((d / "summary.json").read_text())
    suites = ET.Element("testsuites", name="attnconf")
    for a in summary["adapters"]:
        suite = ET.SubElement(suites, "testsuite", name=a["name"])
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for t in adapter_tests(d, a):
            module, _, name = t["nodeid"].partition("::")
            chapter = Path(module).stem
            case = ET.SubElement(suite, "testcase", classname=f"{a['name']}.{chapter}", name=name,
                                 time=f"{float(t.get('duration') or 0.0):.3f}")
            counts["tests"] += 1
            if t["outcome"] == "failed":
                counts["failures"] += 1
                msg = t.get("message", "")
                ET.SubElement(case, "failure", message=msg.splitlines()[0][:300] if msg else "failed").text = msg
            elif t["outcome"] in ("skipped", "xfailed"):
                counts["skipped"] += 1
                reason = t.get("message", "") or t["outcome"]
                ET.SubElement(case, "skipped", message=f"{t['outcome']}: {reason}"[:1000])
        if a["status"] == "crashed":
            counts["tests"] += 1
            counts["errors"] += 1
            case = ET.SubElement(suite, "testcase", classname=f"{a['name']}.session", name="run")
            ET.SubElement(case, "error", message=str(a.get("reason", "crashed"))[:300]).text = str(a.get("reason", ""))
        suite.attrib.update({k: str(v) for k, v in counts.items()})
        suite.set("time", f"{float(a.get('seconds') or 0.0):.3f}")
    ET.indent(suites)
    return bytes(ET.tostring(suites, encoding="utf-8", xml_declaration=True))


def _md(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")
