"""Threads that keep the restorer busy: inputs are read, detected and aligned ahead of it and
written behind it, while the calling thread runs the network.

onnxruntime, OpenCV, dlib and torch release the GIL in their heavy loops, so plain threads
overlap for real. Every queue is bounded, so only a few decoded images are in memory at once,
and results come back in input order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Self, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Threads that read and analyse inputs when the restorer runs on a GPU: on a GPU, preparing a
# photo (decode, detect, align, identity) takes longer than restoring its faces, so one thread
# would leave the GPU waiting, and each extra one holds another decoded photo in memory. Not yet
# measured on a GPU: `ented bench --workers N` does. On a CPU the network already uses every
# core and the overlap gains little (see `ented bench`), so the default there is sequential.
GPU_PREPARE_THREADS = 2


def default_workers(restorer: Any) -> int:
    """Prepare threads for `restorer`: some when it runs on an accelerator, none on the CPU."""
    device = getattr(restorer, "device", None)
    return GPU_PREPARE_THREADS if getattr(device, "type", "cpu") != "cpu" else 0


class Serialized:
    """`target` with its methods called one thread at a time.

    dlib's network keeps its activations inside the layers, so two threads embedding at once
    would corrupt each other; the restorer's reference cache is filled from worker threads while
    the calling thread restores. Attributes that are not methods are passed through unlocked.
    """

    def __init__(self, target: Any, lock: threading.Lock | None = None):
        self._target = target
        self._lock = lock or threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        lock = self._lock

        def locked(*args, **kwargs):
            with lock:
                return attr(*args, **kwargs)

        return locked

    def __call__(self, *args, **kwargs):
        with self._lock:
            return self._target(*args, **kwargs)


class WorkerPool:
    """Ordered prefetch on `prepare_threads` threads, and an ordered writer on one more thread.

    Use as a context manager: leaving it (normally, on an error, or on Ctrl-C in the calling
    thread) cancels work not yet started and waits for the work in progress, so a write that
    has begun always completes or cleans up its temporary file before the process exits.
    """

    def __init__(self, prepare_threads: int, ahead: int | None = None):
        if prepare_threads < 1:
            raise ValueError("a worker pool needs at least one prepare thread")
        self.ahead = ahead or prepare_threads + 1  # decoded inputs waiting for the restorer
        self._prepare = ThreadPoolExecutor(prepare_threads, thread_name_prefix="ented-prepare")
        self._write = ThreadPoolExecutor(1, thread_name_prefix="ented-write")
        self._writing: deque[tuple[Any, Future]] = deque()
        self.stopping = threading.Event()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def close(self) -> None:
        self.stopping.set()
        self._prepare.shutdown(wait=True, cancel_futures=True)
        self._write.shutdown(wait=True, cancel_futures=True)

    def prefetch(self, items: Iterable[T], fn: Callable[[T], R]) -> Iterator[R]:
        """fn(item) for every item, run on the prepare threads at most `ahead` items in advance,
        yielded in input order. An exception from fn is raised here, at that item."""
        source = iter(items)
        pending: deque[Future] = deque()

        def top_up() -> None:
            while len(pending) < self.ahead and not self.stopping.is_set():
                item = next(source, _END)
                if item is _END:
                    return
                pending.append(self._prepare.submit(self._unless_stopping, fn, item))

        top_up()
        while pending:
            future = pending.popleft()
            top_up()  # keep the threads busy while the caller works on this one
            yield future.result()

    def write(self, items: Iterable[T], fn: Callable[[T], None]) -> Iterator[T]:
        """Queue fn(item) on the writer thread; yield, in order, the items already written.

        Waits until at most this batch of items is still being written, so the writer holds at
        most one batch while the caller restores the next one.
        """
        items = list(items)
        for item in items:
            self._writing.append((item, self._write.submit(self._unless_stopping, fn, item)))
        while len(self._writing) > len(items):
            yield self._next_written()
        while self._writing and self._writing[0][1].done():
            yield self._next_written()

    def drain(self) -> Iterator[Any]:
        """The items still being written, in order, as each one is done."""
        while self._writing:
            yield self._next_written()

    def _next_written(self) -> Any:
        item, future = self._writing.popleft()
        future.result()  # re-raises an unexpected error of the writer here
        return item

    def _unless_stopping(self, fn: Callable[[T], R], item: T) -> R | None:
        if self.stopping.is_set():  # queued before the stop: skip rather than start new work
            return None
        return fn(item)


_END = object()
