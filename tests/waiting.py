"""Waiting on an event (a file appearing, a process state) instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

#: How often a condition is re-checked (seconds): short, so a test waits no longer than the event.
POLL = 0.02


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Return as soon as `condition()` holds; fail naming `what` if it has not after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}; it did not happen")
        time.sleep(POLL)


def hang_marker(directory: Path) -> tuple[Path, dict[str, str]]:
    """A marker file a hanging test adapter creates when its call has started, and the environment
    (``ATTNCONF_TEST_HANG_MARKER``) that tells it where (tests/crashing.py, tests/audit_faulty.py)."""
    marker = directory / "hang-started"
    return marker, {"ATTNCONF_TEST_HANG_MARKER": str(marker)}


def mark_hang_started() -> None:
    """Called by a hanging test adapter just before it hangs."""
    import os

    path = os.environ.get("ATTNCONF_TEST_HANG_MARKER")
    if path:
        Path(path).touch()
