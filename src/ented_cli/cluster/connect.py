"""Joining a Ray cluster for `ented restore --cluster`: an existing one (`ADDRESS`, `auto`) or a
new one on this machine (`local`), started small so that it fits beside other work.

Ray is an optional extra (`pip install "ented[cluster]"`). It is imported here, when a run asks
for a cluster, and nowhere else: `ented --help` and single-machine runs never load it.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ented_cli.errors import EntedError, UsageError

LOCAL = "local"  # --cluster local: a new cluster on this machine
# Object store of a `--cluster local` run: room for a few dozen decoded photos between the stages
# (Ray Data holds the stages ahead back when it fills), small enough to sit beside other work.
# ENTED_RAY_OBJECT_STORE_MB changes it.
LOCAL_OBJECT_STORE_MB = 400
INSTALL_HINT = 'pip install "ented[cluster]"'


def import_ray():
    """Ray with Ray Data, or a usage error that says how to install them."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reporting home from a CLI run
    try:
        import ray
        import ray.data  # the extra's other half (pyarrow, pandas) comes with it
    except ImportError as e:
        raise UsageError(
            f"--cluster needs Ray Data ({e}); install it with {INSTALL_HINT}"
        ) from None
    return ray


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    nodes: int
    cpus: float  # logical CPUs Ray schedules with
    gpus: float


@contextmanager
def connected(address: str, local_cpus: int, verbose: bool = False) -> Iterator[ClusterInfo]:
    """Ray connected to `address` for the block: `local` starts a new cluster on this machine
    with `local_cpus` logical CPUs and a small object store, and stops it at the end; `auto` or
    `host:port` join a running one and only disconnect. A caller that has already called
    `ray.init` (a notebook, the tests) keeps its own connection."""
    ray = import_ray()
    # Ray Data's notes (plans, "execution finished") go to its log files, not to the CLI's stderr.
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.ERROR)
    owned = not ray.is_initialized()
    if owned:
        # Workers' own output stays in Ray's logs unless -v: the CLI's stderr is one line each.
        level = logging.INFO if verbose else logging.ERROR
        common = {"logging_level": level, "log_to_driver": verbose}
        try:
            if address == LOCAL:
                store_mb = int(os.environ.get("ENTED_RAY_OBJECT_STORE_MB", LOCAL_OBJECT_STORE_MB))
                ray.init(
                    address="local",
                    num_cpus=local_cpus,
                    object_store_memory=store_mb * 2**20,
                    include_dashboard=False,
                    **common,
                )
            else:
                ray.init(address=address, **common)
        except ConnectionError as e:
            raise EntedError(_no_cluster(address, str(e))) from None
    try:
        resources = ray.cluster_resources()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        yield ClusterInfo(
            address,
            nodes,
            resources.get("CPU", 0.0),
            resources.get("GPU", 0.0),
        )
    finally:
        if owned:
            ray.shutdown()


def check_address(address: str) -> None:
    """A HOST:PORT where nothing listens is said at once, before any model loads: Ray itself
    would wait for it for ever."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # local, auto and Ray's other forms: Ray answers for them quickly
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise EntedError(_no_cluster(address, e.strerror or str(e))) from None


def _no_cluster(address: str, why: str) -> str:
    return (
        f"--cluster {address}: no Ray cluster answers there ({why}); start one with "
        "`ray start --head`, or use --cluster local"
    )


class DataStdout:
    """stdout for a cluster run. It carries data only (`--json` lines), but Ray's driver prints
    its own notes there ("(raylet) Task ... failed ... will be retried"), from a background
    thread or while it shuts down: everything goes to stderr except what the main thread
    writes while `data()` is open (the caller's turn with a finished photo)."""

    def __init__(self, stdout):
        self._stdout = stdout
        self._main = threading.main_thread()
        self._open = False

    @contextmanager
    def data(self) -> Iterator[None]:
        self._open = True
        try:
            yield
        finally:
            self._open = False

    def _target(self):
        is_data = self._open and threading.current_thread() is self._main
        return self._stdout if is_data else sys.stderr

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str):
        return getattr(self._stdout, name)


@contextmanager
def data_only_stdout() -> Iterator[DataStdout]:
    """sys.stdout replaced by a `DataStdout` for the block (enter it before Ray starts)."""
    real = sys.stdout
    sys.stdout = gate = DataStdout(real)
    try:
        yield gate
    finally:
        sys.stdout = real
