"""How many CPU threads torch computes with (`--threads`, env ENTED_THREADS).

torch's own default is one intra-op thread per core, whatever else runs. On a machine busy with
other work those threads fight the other processes for the same cores, and a face takes many
times longer (docs/benchmarks.md, "Threads on a busy machine"). The default here counts the
cores this process may run on (its CPU affinity) minus the load other processes put on them (the
1-minute load average), never fewer than one.

`quiet_openmp_waits` is the other half: OpenMP threads spin while they wait for work, which
steals the cycles other processes need; torch reads OMP_WAIT_POLICY once, when it is imported.

Imports only the standard library; torch is imported by `apply_threads` alone.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass

from ented_cli.errors import UsageError

ENV = "ENTED_THREADS"
AUTO = "auto"

_interop_threads_set = False


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask; all CPUs where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """Runnable processes over the last minute (None where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def default_threads(cores: int | None = None, load: float | None = None) -> int:
    """Cores left free by other processes: `cores` (default: usable_cores()) minus `load` (default:
    the 1-minute load average), rounded, at least 1 and at most `cores`."""
    cores = usable_cores() if cores is None else max(1, cores)
    if load is None:
        load = load_average() or 0.0
    return max(1, min(cores, round(cores - max(0.0, load))))


def parse_threads(value: object, where: str = "--threads") -> int | None:
    """A thread count: a whole number of 1 or more, or "auto" (None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", AUTO)):
        return None
    try:
        count = int(str(value).strip())
    except ValueError:
        raise UsageError(f"{where} {value!r}: use a whole number of 1 or more, or auto") from None
    if count < 1:
        raise UsageError(f"{where} {value!r}: use 1 thread or more, or auto")
    return count


@dataclass(frozen=True)
class ThreadChoice:
    """A thread count and what chose it: "requested" (--threads, or the caller's argument),
    "ENTED_THREADS", "OMP_NUM_THREADS" or "auto (N cores, load L)"."""

    count: int
    source: str


def choose_threads(threads: int | str | None = None, env=None) -> ThreadChoice:
    """The thread count to use: `threads` if given, else ENTED_THREADS, else OMP_NUM_THREADS (the
    user's own OpenMP setting wins over a guess), else `default_threads()`."""
    env = os.environ if env is None else env
    count = parse_threads(threads)
    if count is not None:
        return ThreadChoice(count, "requested")
    count = parse_threads(env.get(ENV), ENV)
    if count is not None:
        return ThreadChoice(count, ENV)
    try:
        count = parse_threads(env.get("OMP_NUM_THREADS"), "OMP_NUM_THREADS")
    except UsageError:  # OpenMP's own syntax ("4,2" for nested levels): leave it to torch
        count = None
    if count is not None:
        return ThreadChoice(count, "OMP_NUM_THREADS")
    cores, load = usable_cores(), load_average()
    shown = "unknown" if load is None else f"{load:.2f}"
    return ThreadChoice(default_threads(cores, load), f"auto ({cores} cores, load {shown})")


def apply_threads(count: int) -> int:
    """Make torch compute with `count` intra-op threads (in the calling thread, and in threads
    started after it); the inter-op pool is sized once per process, before it has been used.
    Returns the count torch now reports."""
    global _interop_threads_set
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    if not _interop_threads_set:
        _interop_threads_set = True
        try:
            torch.set_num_interop_threads(count)
        except RuntimeError:  # already set, or inter-op work has started: keep torch's
            pass
    return torch.get_num_threads()


def quiet_openmp_waits(env: MutableMapping[str, str] | None = None) -> None:
    """Ask OpenMP to sleep, not spin, while waiting for work (OMP_WAIT_POLICY=PASSIVE) unless the
    user chose a policy. Only takes effect when called before torch is imported."""
    (os.environ if env is None else env).setdefault("OMP_WAIT_POLICY", "PASSIVE")
