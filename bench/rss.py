"""Peak memory of this process, for the benchmarks that measure it in a child process."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

__all__ = ["peak_rss_mb"]


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's `VmHWM` counts this program only: `ru_maxrss` carries the parent's peak
    over `exec` (a child of a 300 MB parent reports 300 MB before doing anything)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
