"""The behaviour audit: what each framework really does, measured and shown.

    report = run_audit(handles, out_dir, progress=print)   # runs every scenario, writes the reports
    write_reports(report, out_dir, extra_sections=[(title, trusted_html)])

`scenarios.py` is the catalog (stable ids); `measure/` observes each scenario through the adapter
contract and `classify.py` names the outcome; `runner.py` runs adapters in worker processes;
`report.py` writes audit.json (schema `audit.schema.json`), audit.md and audit.html; `merge.py`
merges audit.json files of several framework versions into one cross-version report.
Importing this package imports no framework.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AuditInterrupted", "run_audit", "write_reports"]


def __getattr__(name: str) -> Any:
    if name in ("run_audit", "AuditInterrupted"):
        from attnconf.audit import runner

        return getattr(runner, name)
    if name == "write_reports":
        from attnconf.audit.report import write_reports

        return write_reports
    raise AttributeError(name)
