"""A job (the photos and references of one page request) and where its files live.

Every job has a folder inside one private temporary folder (mode 0700) made when the server
starts and removed when it stops. Every file in it is named by the server (`in-0.jpg`,
`0-after.jpg`, ...); a download finds a file through `Job.files`, a dict of those names, so
nothing a client sends is ever joined onto a path. The uploads go once the job is done; the
results once they were all downloaded (after a short grace, for a second click) or after
`keep_s` without a visit, or when the page says it is finished with them.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

QUEUED, WORKING, DONE, FAILED = "queued", "working", "done", "failed"
GRACE_AFTER_DOWNLOAD_S = 60.0  # a second click on "download" still works for this long
ALL_ZIP = "all.zip"  # the public name of the zip of every result


@dataclass
class Upload:
    name: str  # the display name (uploads.display_name), never a path
    ext: str  # from the content: ".jpg", ".png", ".webp", ".tif", ".bmp"
    path: Path  # inside the job's folder, named by the server


@dataclass
class PhotoResult:
    name: str  # the photo's display name
    status: str  # restored | unchanged | no_face | error
    message: str | None = None  # what the page says about it, in plain words
    width: int | None = None
    height: int | None = None
    faces: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timing_ms: dict[str, float] = field(default_factory=dict)
    download_name: str | None = None  # the restored file's name in a download and in the zip
    urls: dict[str, str] = field(default_factory=dict)  # before, after, result (page-relative)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "width": self.width,
            "height": self.height,
            "faces": self.faces,
            "warnings": self.warnings,
            "timing_ms": self.timing_ms,
            "download_name": self.download_name,
            "urls": self.urls,
        }


@dataclass
class Job:
    id: str
    folder: Path
    fidelity: float
    photos: list[Upload] = field(default_factory=list)
    refs: list[Upload] = field(default_factory=list)
    state: str = QUEUED
    stage: str = "waiting"
    progress: float = 0.0  # 0..1, for the page's progress bar
    error: str | None = None  # why the whole job failed (e.g. a reference without a face)
    results: list[PhotoResult] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)  # public name → file in `folder`
    downloads: dict[str, str] = field(default_factory=dict)  # public name → download name
    downloaded: set[str] = field(default_factory=set)
    expires: float = 0.0  # time.monotonic() after which the sweeper removes it

    def add_file(self, public: str, data: bytes, download_name: str | None = None) -> str:
        """Write `data` as the job's file `public` (a server-made name) and return its URL."""
        path = self.folder / public
        path.write_bytes(data)
        self.files[public] = path
        if download_name:
            self.downloads[public] = download_name
        return f"api/jobs/{self.id}/files/{public}"

    def to_json(self, position: int = 0) -> dict:
        return {
            "id": self.id,
            "state": self.state,
            "stage": self.stage,
            "position": position,
            "progress": round(self.progress, 3),
            "error": self.error,
            "fidelity": self.fidelity,
            "photos": [r.to_json() for r in self.results],
            "zip": f"api/jobs/{self.id}/{ALL_ZIP}" if self.state == DONE else None,
        }


class JobStore:
    """The jobs of this server and their folders; thread-safe (worker, sweeper, requests)."""

    def __init__(self, keep_s: float, max_jobs: int):
        self.keep_s, self.max_jobs = keep_s, max_jobs
        self.root = Path(tempfile.mkdtemp(prefix="ented-serve-"))  # mode 0700
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def create(self, fidelity: float) -> Job:
        job_id = secrets.token_urlsafe(16)  # unguessable: a job is reached only by its page
        folder = self.root / job_id
        folder.mkdir(mode=0o700)
        job = Job(job_id, folder, fidelity, expires=time.monotonic() + self.keep_s)
        with self._lock:
            self._jobs[job_id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None and job.state in (DONE, FAILED) and not _all_downloaded(job):
            job.expires = time.monotonic() + self.keep_s  # a visit keeps it
        return job

    def downloaded(self, job: Job, public: str) -> None:
        """Note a download; once every result is out, the job goes after a short grace."""
        job.downloaded.add(public)
        if _all_downloaded(job):
            job.expires = min(job.expires, time.monotonic() + GRACE_AFTER_DOWNLOAD_S)

    def finished(self, job: Job) -> None:
        """The worker is done with it: the uploads go, the results wait `keep_s`."""
        for upload in (*job.photos, *job.refs):
            upload.path.unlink(missing_ok=True)
        job.expires = time.monotonic() + self.keep_s

    def remove(self, job_id: str) -> bool:
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        shutil.rmtree(job.folder, ignore_errors=True)
        return True

    def sweep(self) -> int:
        """Remove the finished jobs whose time is up; how many went."""
        now = time.monotonic()
        with self._lock:
            old = [
                j.id for j in self._jobs.values() if j.state in (DONE, FAILED) and j.expires < now
            ]
        return sum(self.remove(job_id) for job_id in old)

    def close(self) -> None:
        with self._lock:
            self._jobs.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def _all_downloaded(job: Job) -> bool:
    results = set(job.downloads)
    return ALL_ZIP in job.downloaded or (bool(results) and results <= job.downloaded)
