"""Many inputs through one pipeline: windows of faces for the network, worker threads, and the
failure policy (one odd input becomes an error in its report; the batch goes on)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ented_cli.errors import EntedError, InputError
from ented_cli.paths import InputItem
from ented_cli.pipeline.references import ReferenceGallery
from ented_cli.pipeline.report import ImageReport
from ented_cli.pipeline.restore import ImageWork, RestorePipeline
from ented_cli.pipeline.writer import OutputWriter

# Decoded pixels a window of images may hold before it goes to the restorer short of a full batch.
WINDOW_BYTES = 512 * 2**20

log = logging.getLogger("ented")

GalleryFor = Callable[[InputItem], ReferenceGallery | None]


@dataclass
class ImageJob:
    """One input of a batch: where it comes from, where it goes, what happened to it."""

    item: InputItem
    output: Path | str
    report: ImageReport
    work: ImageWork | None = None  # between reading and writing
    raw: bytes | None = None  # the bytes of a stdin input (copied verbatim when unchanged)
    t0: float = 0.0


def make_job(item: InputItem, output: Path | str, fidelity: float | None = None) -> ImageJob:
    report = ImageReport(input=item.display, output=str(output), fidelity=fidelity)
    return ImageJob(item, output, report)


class BatchRunner:
    """Runs `jobs` through `pipeline` and `writer`, yielding each job, in input order, once it is
    written or has failed.

    With `workers`, inputs are read and analysed on that many threads ahead of the restorer
    and written on one more thread behind it, while this thread runs the restorer; without,
    everything runs here. Both give the same batches, so the same bytes.

    `prepare_job`, `restore_window` and `finish_job` are the three steps with the failure policy
    around them; `ented restore --cluster` runs the same steps in its Ray stages (cluster/).
    """

    def __init__(
        self,
        pipeline: RestorePipeline,
        writer: OutputWriter | None = None,
        *,
        batch_size: int | None = None,
        workers: int | None = None,
    ):
        from ented_cli.pipeline.workers import default_workers

        self.pipeline = pipeline
        self.writer = writer or OutputWriter(pipeline.opt)
        self.batch_size = batch_size or pipeline.batch_size
        # Threads reading and analysing inputs ahead of the restorer (0: all on the calling thread).
        self.workers = default_workers(pipeline.restorer) if workers is None else workers

    def run(self, jobs: Sequence[ImageJob], gallery_for: GalleryFor) -> Iterator[ImageJob]:
        if self.workers:
            yield from self._run_with_workers(jobs, gallery_for)
            return
        for window in self._windows(self.prepare_job(job, gallery_for) for job in jobs):
            self.restore_window(window)
            for job in window:
                self.finish_job(job)
                yield job

    def _run_with_workers(
        self, jobs: Sequence[ImageJob], gallery_for: GalleryFor
    ) -> Iterator[ImageJob]:
        from ented_cli.pipeline.workers import Serialized, WorkerPool

        # The identity network and the reference cache are shared by the threads: one at a time.
        pipe, library = self.pipeline, self.pipeline.references
        models = pipe.encoder, pipe.restorer
        pipe.encoder = library.encoder = Serialized(pipe.encoder)
        pipe.restorer = library.restorer = Serialized(pipe.restorer)
        gallery_for = Serialized(gallery_for)
        try:
            with WorkerPool(self.workers) as pool:
                prepared = pool.prefetch(jobs, lambda job: self.prepare_job(job, gallery_for))
                for window in self._windows(prepared):
                    self.restore_window(window)
                    yield from pool.write(window, self.finish_job)
                yield from pool.drain()
        finally:  # also on Ctrl-C: the pool has stopped, every write begun has ended
            pipe.encoder = library.encoder = models[0]
            pipe.restorer = library.restorer = models[1]

    def prepare_job(self, job: ImageJob, gallery_for: GalleryFor) -> ImageJob:
        """Read and analyse one input; whatever goes wrong becomes its error, naming it."""
        job.t0 = time.perf_counter()
        try:
            gallery = gallery_for(job.item)
            with _errors_named(job, "reading it or finding its faces"):
                if job.item.is_stdin and job.raw is None:  # the CLI may have read it already
                    job.raw = sys.stdin.buffer.read()
                source = "-" if job.item.is_stdin else job.item.path
                job.work = self.pipeline.prepare(source, gallery, job.report, data=job.raw)
        except EntedError as e:
            job.report.fail(str(e))
            job.work = job.raw = None  # it waits for its window's turn holding nothing
        return job

    def _windows(self, prepared: Iterable[ImageJob]) -> Iterator[list[ImageJob]]:
        """Consecutive jobs grouped until they hold `batch_size` faces to restore, or until their
        decoded images reach WINDOW_BYTES (a run of huge photos must not fill the memory). Jobs
        with nothing to restore (no face, failed) go on alone unless faces are waiting."""
        window: list[ImageJob] = []
        faces = size = 0
        for job in prepared:
            window.append(job)
            if job.work is not None:
                faces += sum(f.restore for f in job.work.faces)
                image = job.work.image
                size += image.pixels.nbytes + (0 if image.alpha is None else image.alpha.nbytes)
            if faces == 0 or faces >= self.batch_size or size >= WINDOW_BYTES:
                yield window
                window, faces, size = [], 0, 0
        if window:
            yield window

    def restore_window(self, window: list[ImageJob]) -> None:
        ready = [job for job in window if not job.report.failed]
        try:
            self.pipeline.restore([job.work for job in ready])
        except EntedError as e:
            for job in ready:
                job.report.fail(str(e))

    def finish_job(self, job: ImageJob) -> None:
        """Paste back and write one job, then let go of its pixels."""
        try:
            if not job.report.failed:
                with _errors_named(job, "pasting the faces back or writing it"):
                    result = self.pipeline.finish(job.work)
                    t = time.perf_counter()
                    self.writer.write(job.item, job.output, result, job.raw)
                    job.report.timing_ms["write"] = _ms(t)
                job.report.timing_ms["total"] = _ms(job.t0)
        except EntedError as e:
            job.report.fail(str(e))
        finally:
            job.work = job.raw = None  # free the frame as soon as it is written


def _ms(t: float) -> float:
    return round((time.perf_counter() - t) * 1000, 1)


class _errors_named:
    """Turns an unexpected exception while handling one input into a one-line EntedError naming
    that input (the traceback goes to the "ented" logger, shown by `-v`); out of memory gets its
    own advice. KeyboardInterrupt is not caught: Ctrl-C stops the batch."""

    def __init__(self, job: ImageJob, stage: str):
        self.name, self.stage = job.item.display, stage

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if isinstance(exc, EntedError) and not str(exc).startswith((self.name, "stdin")):
            # e.g. "out/x: cannot create the output folder": say which input it was about.
            raise type(exc)(f"{self.name}: {exc}") from None
        if exc is None or isinstance(exc, EntedError) or not isinstance(exc, Exception):
            return False
        if isinstance(exc, MemoryError):
            raise InputError(
                f"{self.name}: not enough memory while {self.stage}; lower --max-pixels so "
                "such images are refused up front, or downscale it"
            ) from None
        log.debug("traceback for %s:", self.name, exc_info=(kind, exc, tb))
        raise InputError(
            f"{self.name}: internal error while {self.stage} ({type(exc).__name__}: {exc}); "
            "rerun with -v for the traceback and please report it"
        ) from None
