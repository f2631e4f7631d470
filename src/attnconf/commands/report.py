"""Merge audit results from several framework versions, machines or tox environments into one
cross-version report (report.json, report.md, report.html): for each scenario and adapter, the
outcome per framework version, with the version at which an outcome changed marked. RESULTS are
audit.json files or directories searched for them (e.g. results/, one folder per tox environment).

With --baseline BASE, RESULTS is one run (a report directory or its audit.json) compared with the
baseline run BASE: what changed is printed (and written to DIR/baseline.json and DIR/baseline.md),
and the exit code is 1 when anything regressed (an outcome changed, a measured adapter crashed or
vanished, a conformance test newly fails). With --job-summary, RESULTS is one report directory and
the Markdown for a CI job summary (verdict, failures, departures) is printed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnconf.atomicio import write_text_atomic
from attnconf.cli import EXIT_FAILURES, EXIT_OK, UsageError

DEFAULT_OUT = "attnconf-report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS",
                        help="audit.json files (schema attnconf.audit/1) or directories holding them")
    parser.add_argument("-o", "--output", default=DEFAULT_OUT, metavar="DIR",
                        help=f"where report.json, report.md and report.html go (default {DEFAULT_OUT}/)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--baseline", metavar="BASE",
                      help="compare the one run RESULTS with the baseline run BASE (a report directory or its "
                           "audit.json); exit 1 on a regression")
    mode.add_argument("--job-summary", action="store_true",
                      help="print the Markdown job summary (verdict, failures, departures) of one report directory")


def main(args: argparse.Namespace) -> int:
    from attnconf.audit import merge, merge_report, schema

    if args.baseline or args.job_summary:
        return _single(args)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"Received an invalid value for argument `--output`, expected a directory. "
                         f"Received: --output={args.output} (an existing file)")
    try:
        docs, paths = merge.read_all(args.results)
    except schema.ReportFileError as err:
        raise UsageError(str(err)) from None
    merged = merge.merge(docs, paths)
    merge_report.write(merged, out)
    print(f"attnconf report: merged {len(paths)} results into {out}/ (report.json, report.md, report.html)")
    if merged["changes"]:
        print(f"attnconf report: {len(merged['changes'])} outcome changes between versions:")
        for c in merged["changes"]:
            print(f"  {c['scenario']} / {c['adapter']}: {c['before']} ({c['from_versions']}) -> "
                  f"{c['after']} ({c['to_versions']})")
    else:
        print("attnconf report: no outcome changed between the merged versions", file=sys.stderr)
    return EXIT_OK


def _single(args: argparse.Namespace) -> int:
    """--baseline and --job-summary: both take exactly one run."""
    import json

    from attnconf import ci
    from attnconf.audit import schema

    if len(args.results) != 1:
        flag = "--baseline" if args.baseline else "--job-summary"
        raise UsageError(f"Received {len(args.results)} RESULTS with {flag}, expected exactly one run "
                         f"(a report directory or its audit.json). Received: {' '.join(args.results)}")
    if args.job_summary:
        run_dir = Path(args.results[0])
        if not (run_dir / "summary.json").is_file():
            raise UsageError(f"Received an invalid value for RESULTS with --job-summary, expected a report directory "
                             f"written by `attnconf run` (with summary.json). Received: {run_dir}")
        print(ci.job_summary(run_dir), end="")
        return EXIT_OK
    try:
        baseline, current = ci.load_side(args.baseline), ci.load_side(args.results[0])
    except schema.ReportFileError as err:
        raise UsageError(str(err)) from None
    comp = ci.compare(baseline, current)
    text = ci.comparison_markdown(comp, baseline, current)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "baseline.json", json.dumps(comp.as_dict(), indent=1))
    write_text_atomic(out / "baseline.md", text)
    print(text, end="")
    return EXIT_FAILURES if comp.regressions else EXIT_OK
