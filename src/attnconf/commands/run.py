"""Run the conformance suite over the selected adapters (default: every installed one), one
pytest session per process group (`sessions`), then the behaviour audit; write a summary (JSON
and Markdown), the per-adapter results and the audit reports into the report directory.

A crashing or hanging adapter costs only its own results. Reports are staged and moved into
place at the end, so an interrupted run leaves the previous report intact.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from attnconf.adapters import registry
from attnconf.atomicio import write_text_atomic
from attnconf.commands import sessions
from attnconf.errors import EXIT_CRASHED, EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, UsageError
from attnconf.memory import MIB, default_budget, format_size, parse_size
from attnconf.reference._checks import FLOAT_DTYPES

SUMMARY_SCHEMA = "attnconf.summary/1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", action="append", metavar="NAME", help="entry-point name or module:attr (repeatable; default every installed adapter)")
    parser.add_argument("-o", "--output", default="attnconf-report", metavar="DIR", help="report directory (default: attnconf-report/)")
    parser.add_argument("--dtype", action="append", choices=FLOAT_DTYPES, help="precisions to test (repeatable; default all)")
    parser.add_argument("--no-audit", action="store_true", help="skip the behaviour audit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one adapter's conformance run may take (default 900)")
    parser.add_argument("-j", "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="sessions (process groups) run in parallel (default: 2)")
    parser.add_argument("--allow-failures", action="store_true",
                        help="exit 0 when the only problems are conformance failures (for version matrices)")
    parser.add_argument("--memory-budget", type=_size, default=None, metavar="SIZE",
                        help="resident memory one session may hold, e.g. 8GiB (default: half the memory available "
                             "at the start); long cases estimated past it are "
                             "skipped, a session past it is stopped")
    parser.add_argument("--pytest-args", default="", help="extra arguments for pytest, split like a shell line, e.g. \"-k 'agreement and float32'\"")


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def write_summary(summary: dict[str, Any], stage: Path) -> None:
    """summary.json, summary.md and junit.xml (one testcase per conformance test) into `stage`."""
    from attnconf.ci import junit_xml

    write_text_atomic(stage / "summary.json", json.dumps(summary, indent=1, sort_keys=True))
    write_text_atomic(stage / "summary.md", summary_markdown(summary))
    write_text_atomic(stage / "junit.xml", junit_xml(stage).decode("utf-8"))


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = ["# attnconf run", "", f"Python {summary['environment']['python']}, {summary['environment']['platform']}", "",
             "| adapter | status | passed | failed | xfailed | skipped | worst error / tolerance (passed and failed tests) "
             "| seconds | peak resident MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for a in summary["adapters"]:
        c = a.get("counts", {})
        ratio = max((w["worst_ratio"] for w in a.get("errors_by_dtype", {}).values()), default=0.0)
        lines.append(f"| `{a['name']}` | {a['status']} | {c.get('passed', 0)} | {c.get('failed', 0)} | "
                     f"{c.get('xfailed', 0)} | {c.get('skipped', 0)} | {ratio:.3g} | {a.get('seconds', '')} | "
                     f"{_mib(a)} |")
    for a in summary["skipped"]:
        lines.append(f"| `{a['name']}` | skipped: {a['reason']} | | | | | | | |")
    if summary.get("memory_budget_bytes"):
        lines += ["", f"Memory budget per session: {format_size(summary['memory_budget_bytes'])}; peak resident "
                  "memory is the session process's while the adapter ran."]
    for a in summary["adapters"]:
        if a.get("reason"):
            lines += ["", f"**{a['name']}** {a['status']}: {a['reason']}"]
        for f in a.get("failures", [])[:5]:
            lines += ["", f"**{a['name']}** failed `{f['test']}`:", "```", f["message"].strip(), "```"]
    if summary.get("audit"):
        lines += ["", "Audit: see [audit.md](audit.md) and [audit.html](audit.html)."]
    return "\n".join(lines) + "\n"


def _mib(entry: dict[str, Any]) -> str:
    """The entry's peak resident memory in MiB ('' if not measured)."""
    peak = entry.get("peak_rss_bytes")
    return f"{peak / MIB:.0f}" if peak else ""


def select_for_run(specs: list[str] | None) -> tuple[list[registry.AdapterHandle], list[registry.AdapterHandle], list[dict[str, Any]]]:
    """(runnable, skipped, broken): an unknown name is a usage error; an adapter that fails to
    import or to validate is reported as crashed and the others still run."""
    if not specs:
        runnable, skipped = registry.select(None)
        broken = [{"name": h.name, "spec": h.spec, "status": "crashed", "reason": h.missing}
                  for h in skipped if h.obj is None]
        return runnable, [h for h in skipped if h.obj is not None], broken
    runnable, broken = [], []
    for spec in dict.fromkeys(specs):
        try:
            runnable += registry.select([spec])[0]
        except registry.UnknownAdapterError as err:
            raise UsageError(str(err)) from None
        except registry.AdapterError as err:
            broken.append({"name": spec, "spec": spec, "status": "crashed", "reason": str(err)})
    return runnable, [], broken


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UsageError(f"Received an invalid value for argument `--jobs`, expected a positive integer. Received: jobs={args.jobs}")
    handles, skipped, broken = select_for_run(args.adapter)
    if getattr(args, "memory_budget", None) is None:
        args.memory_budget = default_budget()
    out = Path(args.output).resolve()  # the pytest workers run in another directory
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    (stage / "results").mkdir()
    (stage / "logs").mkdir()
    previous = signal.signal(signal.SIGTERM, _terminate)
    done: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        print(f"attnconf run: {len(handles)} adapters, {len(skipped)} skipped; memory budget "
              f"{format_size(args.memory_budget)} per session; report in {out}/", file=sys.stderr)
        for h in skipped:
            print(f"  skip  {h.name}: {h.missing}", file=sys.stderr)
        for b in broken:
            print(f"  crashed {b['name']}: {b['reason']}", file=sys.stderr)
        done.extend(broken)
        lock = threading.Lock()

        def report(r: dict[str, Any]) -> None:
            with lock:
                done.append(r)
                c = r.get("counts", {})
                detail = r.get("reason") or ", ".join(f"{v} {k}" for k, v in sorted(c.items()))
                peak = f"; peak {_mib(r)} MiB" if r.get("peak_rss_bytes") else ""
                print(f"  [{len(done) - len(broken)}/{len(handles)}] {r['status']:<7} {r['name']}: {detail} "
                      f"({r['seconds']:.1f} s{peak}; at {_clock(started)})", file=sys.stderr)

        sessions.stopping.clear()  # a previous run in this process may have stopped them
        pool = ThreadPoolExecutor(max_workers=args.jobs)
        groups = sessions.plan(handles, sessions.previous_seconds(out))
        futures = [pool.submit(sessions.run_group, group, args, stage, report) for group in groups]
        try:
            for fut in as_completed(futures):
                fut.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            sessions.kill_children()
        done.sort(key=lambda r: r["name"])
        audit_info = None
        if not args.no_audit:
            print(f"attnconf run: audit (at {_clock(started)})", file=sys.stderr)
            audit_info = _audit(handles, skipped, stage)
        summary = {"schema": SUMMARY_SCHEMA, "environment": _environment(), "adapters": done,
                   "skipped": [{"name": h.name, "reason": h.missing} for h in skipped], "audit": audit_info,
                   "memory_budget_bytes": int(args.memory_budget)}
        write_summary(summary, stage)
        shutil.rmtree(stage / "sessions", ignore_errors=True)  # each adapter's share is in results/
        _publish(stage, out)
    except KeyboardInterrupt:
        unfinished = sorted({h.name for h in handles} - {r["name"] for r in done})
        print(f"attnconf run: interrupted; the previous report in {out}/ is intact. Not finished: {', '.join(unfinished) or 'the audit and the summary'}", file=sys.stderr)
        shutil.rmtree(stage, ignore_errors=True)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(stage, ignore_errors=True)
    print(screen_summary(summary, out))
    print(f"attnconf run: done in {_clock(started)}", file=sys.stderr)
    if any(r["status"] == "crashed" for r in done) or (audit_info or {}).get("crashed"):
        return EXIT_CRASHED
    if any(r["status"] == "failed" for r in done) and not args.allow_failures:
        return EXIT_FAILURES
    return EXIT_OK


def _audit(handles: list[registry.AdapterHandle], skipped: list[registry.AdapterHandle], stage: Path) -> dict[str, Any] | None:
    from attnconf.audit import run_audit, write_reports
    from attnconf.audit.bank import bank_section_for_handles

    measured = sessions.audits(stage)  # the sessions audited their adapters; the others run in workers
    report = run_audit(list(handles) + list(skipped), None, progress=lambda msg: print(f"  {msg}", file=sys.stderr),
                       measured=measured["audit"])
    print("attnconf run: real-weights pictures", file=sys.stderr)
    healthy = [h for h in handles if report.get("adapters", {}).get(h.name, {}).get("status") == "ok"]
    write_reports(report, stage, extra_sections=[bank_section_for_handles(healthy, timeout=120.0,
                                                                          measured=measured["bank"])])
    crashed = sorted(n for n, a in report.get("adapters", {}).items() if a.get("status") == "crashed")
    return {"files": ["audit.json", "audit.md", "audit.html"], "crashed": crashed}


def _clock(started: float) -> str:
    """Wall time since `started` (a `time.monotonic()`), as "1 min 05 s"."""
    m, sec = divmod(int(time.monotonic() - started), 60)
    return f"{m} min {sec:02d} s" if m else f"{sec} s"


def _publish(stage: Path, out: Path) -> None:
    """Move the staged files into the report directory (each move is atomic)."""
    for path in sorted(stage.rglob("*")):
        if path.is_file():
            target = out / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


def _environment() -> dict[str, str]:
    import platform

    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine()}


def screen_summary(summary: dict[str, Any], out: Path, width: int | None = None) -> str:
    """The console summary: one line per adapter, its reason (crashed, skipped, failed early) in full,
    wrapped to `width` columns (the terminal's by default) and indented under the adapter's line."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    lines = ["", "attnconf run summary", "-" * 72]
    for a in summary["adapters"]:
        c = a.get("counts", {})
        counts = f"{c.get('passed', 0)} passed, {c.get('failed', 0)} failed, {c.get('xfailed', 0)} xfailed, {c.get('skipped', 0)} skipped"
        peak = f"  peak {_mib(a)} MiB" if a.get("peak_rss_bytes") else ""
        what = counts if "counts" in a and a["status"] != "crashed" else ""
        lines.append(f"{a['status']:<8} {a['name']:<52} {what}{peak}".rstrip())
        lines += _wrapped(a.get("reason") or "", width)
    for s in summary["skipped"]:
        lines.append(f"{'skipped':<8} {s['name']}")
        lines += _wrapped(s["reason"], width)
    lines.append("-" * 72)
    lines.append(f"report: {out}/summary.md" + (f", {out}/audit.html" if summary.get("audit") else ""))
    return "\n".join(lines)


def _wrapped(text: str, width: int, indent: str = " " * 9) -> list[str]:
    """`text` whole, each of its lines wrapped to `width` columns and indented by `indent`."""
    wrap = max(20, width - len(indent))
    return [indent + piece for line in text.strip().splitlines() if line.strip()
            for piece in textwrap.wrap(line.strip(), wrap, break_on_hyphens=False)]
