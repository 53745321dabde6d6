"""One RestorePipeline (the model loaded once) and one worker thread that takes the page's jobs
in turn from a bounded queue: a request past `queue_size` waiting jobs is answered "busy" at
once, so memory and disk stay bounded however many requests arrive. A second thread removes
the results whose time is up (jobs.py)."""

from __future__ import annotations

import logging
import queue
import threading

from ented_cli.errors import EntedError, InputError
from ented_cli.pipeline.library import ReferenceLibrary, merge_same_person, reference_key
from ented_cli.pipeline.references import ReferenceFace, ReferenceGallery
from ented_cli.pipeline.report import ERROR, ImageReport
from ented_cli.pipeline.restore import RestorePipeline
from ented_cli.web.jobs import DONE, FAILED, WORKING, Job, JobStore, PhotoResult, Upload
from ented_cli.web.results import photo_result
from ented_cli.web.uploads import stem_of, unique_names

log = logging.getLogger("ented")
SWEEP_EVERY_S = 10.0


class Busy(Exception):
    """The queue is full: the page says so and asks to try again shortly."""


class RestoreService:
    def __init__(self, pipeline: RestorePipeline, store: JobStore, queue_size: int):
        self.pipeline, self.store, self.queue_size = pipeline, store, queue_size
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._waiting: list[str] = []  # ids of queued jobs, first = next
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name="ented-restore", daemon=True),
            threading.Thread(target=self._sweep, name="ented-sweep", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- the queue ---------------------------------------------------------------------------
    def busy(self) -> str | None:
        """Why a new job cannot be taken now, or None."""
        with self._lock:
            waiting = len(self._waiting)
        if waiting >= self.queue_size:
            return f"ented is busy: {waiting} requests are waiting already; try again in a minute"
        if len(self.store) >= self.store.max_jobs:
            return (
                f"ented is holding the results of {len(self.store)} requests; download or close "
                "some of them (or wait a few minutes) and try again"
            )
        return None

    def submit(self, job: Job) -> None:
        with self._lock:
            if len(self._waiting) >= self.queue_size:
                raise Busy(f"ented is busy: {len(self._waiting)} requests are waiting already")
            self._waiting.append(job.id)
        self._queue.put(job)

    def position(self, job_id: str) -> int:
        """How many jobs are ahead of this one (0: next, or working)."""
        with self._lock:
            return self._waiting.index(job_id) if job_id in self._waiting else 0

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        self.store.close()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            with self._lock:
                self._waiting.remove(job.id)
            if self.store.get(job.id) is None:  # the page went away before its turn
                continue
            try:
                self.run(job)
            except Exception as e:  # a bug: the page says so, the server keeps serving
                log.error("internal error in a restore job", exc_info=True)
                job.state, job.error = FAILED, f"internal error ({type(e).__name__}: {e})"
            finally:
                self.store.finished(job)

    def _sweep(self) -> None:
        while not self._stop.wait(SWEEP_EVERY_S):
            self.store.sweep()

    # -- one job -----------------------------------------------------------------------------
    def run(self, job: Job) -> None:
        """Restore every photo of `job` with its references; a reference that cannot be used
        fails the whole job (as `--ref` does in `ented restore`): no photo is restored
        without the person the user meant."""
        job.state, job.stage = WORKING, "reading the reference photos"
        faces: list[ReferenceFace] = []
        try:
            faces = self._references(job)
            gallery = None
            if faces:
                gallery = ReferenceGallery(merge_same_person(faces, self.pipeline.threshold))
            names = {reference_key(f): (i, job.refs[i].name) for i, f in enumerate(faces)}
            for i, upload in enumerate(job.photos):
                if self.store.get(job.id) is None:  # the page was closed: stop here
                    return
                job.results.append(self._photo(job, i, upload, gallery, names))
            job.state, job.stage, job.progress = DONE, "done", 1.0
        except InputError as e:
            job.state, job.error = FAILED, str(e)
        finally:
            forget = getattr(self.pipeline.restorer, "forget_references", None)
            if forget is not None:  # encoded references are about 7 MB each
                forget([reference_key(f) for f in faces])

    def _references(self, job: Job) -> list[ReferenceFace]:
        from ented_cli.imaging.read import read_image

        pipe = self.pipeline
        library = ReferenceLibrary(pipe.detector, pipe.encoder, pipe.restorer, pipe.opt.max_pixels)
        # Each upload is its own person (same-named files included) until identity merges them.
        people = unique_names([stem_of(ref.name) for ref in job.refs])
        faces = []
        for ref, person in zip(job.refs, people):
            image = read_image(ref.name, data=ref.path.read_bytes(), max_pixels=pipe.opt.max_pixels)
            try:
                faces.append(library.array_face(person, image))
            except InputError:
                raise InputError(
                    f"{ref.name}: no face found in this reference photo; use a photo where "
                    "the face is clearly visible"
                ) from None
        return faces

    def _photo(
        self,
        job: Job,
        i: int,
        upload: Upload,
        gallery: ReferenceGallery | None,
        names: dict[str, tuple[int, str]],
    ) -> PhotoResult:
        pipe, total = self.pipeline, len(job.photos)

        def stage(text: str, done: float) -> None:
            job.stage = f"photo {i + 1} of {total}: {text}"
            job.progress = (i + done) / total

        report = ImageReport(input=upload.name, fidelity=job.fidelity)
        try:
            data = upload.path.read_bytes()
            stage("finding faces", 0.05)
            work = pipe.prepare(upload.name, gallery, report, data=data)
            stage("restoring faces", 0.35)
            pipe.restore([work], fidelity=job.fidelity)
            stage("putting the faces back", 0.85)
            return photo_result(job, i, upload, data, pipe.finish(work), names)
        except EntedError as e:
            return PhotoResult(upload.name, ERROR, message=str(e))
        except Exception as e:  # a bug or out of memory: this photo fails, the others go on
            if not job.folder.exists():  # the page was closed meanwhile: nothing to say
                return PhotoResult(upload.name, ERROR, message="closed")
            log.error("internal error on %s", upload.name, exc_info=True)
            return PhotoResult(upload.name, ERROR, message=f"internal error ({type(e).__name__})")
