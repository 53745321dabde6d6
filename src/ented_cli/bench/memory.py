"""Peak memory of one measurement: the process's resident set, and the GPU's allocator.

On Linux the resident-set high-water mark (VmHWM) can be reset by writing 5 to
/proc/self/clear_refs, so each measurement gets its own peak. Elsewhere only the peak since the
process started is known (getrusage); the report says which one it is.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Self

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _return_freed_memory() -> None:
    """Hand memory freed by earlier measurements back to the OS (glibc keeps it otherwise), so
    the resident set, and with it the next peak, starts from what is really in use."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _reset_high_water_mark() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:  # not Linux, or a kernel/container that forbids it
        return False
    return True


def _rusage_peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


class PeakMemory:
    """`with PeakMemory(device) as peak: ...`, then `peak.result()` (MiB, rounded).

    `device` is a torch.device or None; a CUDA device adds the allocator's peak over the block.
    """

    def __init__(self, device=None):
        self.device = device
        self.method = "peak since the process started"
        self.rss_before_mib: float | None = None
        self.peak_rss_mib: float | None = None
        self.peak_gpu_mib: float | None = None

    def __enter__(self) -> Self:
        _return_freed_memory()
        if _reset_high_water_mark() and _status_kib("VmHWM") is not None:
            self.method = "VmHWM (reset per measurement)"
        rss = _status_kib("VmRSS")
        self.rss_before_mib = None if rss is None else rss / 1024
        if self._cuda():
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> bool:
        hwm = _status_kib("VmHWM")
        self.peak_rss_mib = hwm / 1024 if hwm is not None else _rusage_peak_mib()
        if self._cuda():
            import torch

            torch.cuda.synchronize(self.device)
            self.peak_gpu_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        return False

    def _cuda(self) -> bool:
        return self.device is not None and getattr(self.device, "type", None) == "cuda"

    def result(self) -> dict:
        def mib(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        return {
            "peak_rss_mib": mib(self.peak_rss_mib),
            "rss_before_mib": mib(self.rss_before_mib),
            "peak_gpu_mib": mib(self.peak_gpu_mib),
        }
