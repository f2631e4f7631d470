"""Merge audit results from several framework versions, machines or tox environments into one
cross-version report (report.json, report.md, report.html): for each scenario and adapter, the
outcome per framework version, with the version at which an outcome changed marked. RESULTS are
audit.json files or directories searched for them (e.g. results/, one folder per tox environment)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnconf.cli import EXIT_OK, UsageError

DEFAULT_OUT = "attnconf-report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS",
                        help="audit.json files (schema attnconf.audit/1) or directories holding them")
    parser.add_argument("-o", "--output", default=DEFAULT_OUT, metavar="DIR",
                        help=f"where report.json, report.md and report.html go (default {DEFAULT_OUT}/)")


def main(args: argparse.Namespace) -> int:
    from attnconf.audit import merge, merge_report, schema

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
