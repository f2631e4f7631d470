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


def peak_rss_bytes(pid: int | str = "self") -> int:
    """Peak resident memory of a process since it started or since `reset_peak` (``VmHWM``; 0 if unknown)."""
    kib = _status_kib("VmHWM", pid)
    return (kib or 0) * 1024


def reset_peak(pid: int | str = "self") -> bool:
    """Reset a process's ``VmHWM`` to its resident memory now (Linux, own processes); False if not possible."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": MIB, "mb": MIB, "mib": MIB,
          "g": GIB, "gb": GIB, "gib": GIB, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from a size such as ``8GiB``, ``512MiB``, ``1.5G`` or ``1000000`` (binary units: G = GiB)."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS or float(m.group(1)) <= 0:
        raise ValueError(f"a memory size: expected a positive number with an optional unit (e.g. 8GiB, 512MiB), "
                         f"received {text!r}")
    return int(float(m.group(1)) * _UNITS[unit])


def format_size(n: int) -> str:
    """``1.5 GiB`` or ``300 MiB``."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def default_budget() -> int:
    """Half of the memory the machine can give now (`available_bytes`): the suite's default memory budget."""
    return available_bytes() // 2


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
