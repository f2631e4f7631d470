"""SIGTERM as an interrupt: the commands that stage their reports (`attnconf run`, `attnconf audit`)
end on SIGTERM as on Ctrl-C (exit 130, the previous report intact)."""

from __future__ import annotations

import signal
from typing import Any


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def sigterm_raises_interrupt() -> Any:
    """From now on SIGTERM raises KeyboardInterrupt in the main thread; returns the previous handler,
    to restore with ``signal.signal(signal.SIGTERM, previous)``."""
    return signal.signal(signal.SIGTERM, _raise_interrupt)
