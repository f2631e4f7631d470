"""Subcommands of the `attnconf` command line, one module each."""
