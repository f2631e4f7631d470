"""`attnconf list | run | audit | report | bench`.

Each subcommand lives in `attnconf.commands.<name>` with `add_arguments(parser)` and
`main(args) -> int`; this module only dispatches, so start-up imports no framework.

Exit codes (documented in README.md):
    0  everything ran and conformed
    1  conformance failures (a test failed, or an audit outcome departs from a strict spec)
    2  usage error (bad arguments, unknown adapter, unreadable file)
    3  an adapter crashed, hung or could not be loaded; its results are missing
    130 interrupted (SIGINT/SIGTERM); finished reports are intact
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from attnconf.errors import (  # noqa: F401  (re-exported for subcommands)
    EXIT_CRASHED,
    EXIT_FAILURES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
)

COMMANDS = {
    "list": ("attnconf.commands.list_", "list the adapters the registry can see"),
    "run": ("attnconf.commands.run", "run conformance (and the audit) over the selected adapters"),
    "audit": ("attnconf.commands.audit", "observe each adapter's behaviour in the audit scenarios"),
    "report": ("attnconf.commands.report", "merge result files into one cross-version report"),
    "bench": ("attnconf.commands.bench", "time and memory of attention kernels against sequence length"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnconf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def _version() -> str:
    from attnconf import __version__

    return f"attnconf {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._main(args))
    except UsageError as err:
        print(f"attnconf {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"attnconf {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
