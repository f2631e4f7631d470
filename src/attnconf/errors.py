"""Exit codes and the usage error of the command line (shared by every subcommand)."""

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_CRASHED = 3
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command-line argument or input file is invalid; exit code 2."""
