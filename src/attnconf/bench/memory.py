"""Memory of this process and of the machine, read from /proc (Linux); no dependency.

`PeakRss` measures the peak resident memory of one step: it resets the kernel's high-water mark
(``echo 5 > /proc/self/clear_refs``) before the step and reads ``VmHWM`` after it, so a short
spike is seen even if no sampler would catch it. Where that is not possible, it falls back to
``getrusage`` (the lifetime peak, which sizes run in increasing order keep meaningful).
"""

from __future__ import annotations

import os
import resource
import sys

MIB = 1 << 20
GIB = 1 << 30
#: Bytes kept free for the rest of the machine when deciding whether a step fits.
RESERVE = 1 * GIB


def _status_kib(field: str, pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process now (0 if unknown)."""
    kib = _status_kib("VmRSS", pid)
    return (kib or 0) * 1024


def available_bytes() -> int:
    """Memory the machine can still give (`MemAvailable`), less `RESERVE`."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return max(0, int(line.split()[1]) * 1024 - RESERVE)
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 0
    return max(0, pages * os.sysconf("SC_PAGE_SIZE") - RESERVE)


def score_bytes(batch: int, heads: int, T: int, S: int, itemsize: int, copies: int = 3) -> int:
    """What a kernel that materialises the scores needs: logits, exponentials and weights."""
    return batch * heads * T * S * itemsize * copies


class PeakRss:
    """``with PeakRss() as p: step()`` then `p.extra` = peak RSS during the step - RSS before it."""

    def __init__(self) -> None:
        self.before = 0
        self.peak = 0

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def __enter__(self) -> PeakRss:
        self.exact = sys.platform.startswith("linux") and self._reset()
        self.before = rss_bytes()
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _status_kib("VmHWM") if self.exact else None
        if hwm is None:
            usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
            hwm = usage // 1024 if sys.platform == "darwin" else usage
        self.peak = hwm * 1024

    @property
    def extra(self) -> int:
        return max(0, self.peak - self.before)
