"""The routes of `ented serve` (Starlette).

    GET    /                              the page (static/index.html)
    GET    /static/...                    its CSS, JavaScript and icon, nothing else
    GET    /api/info                      the limits, for the page to check files before sending
    POST   /api/jobs                      photos + references + fidelity → 202 {"id": ...}
    GET    /api/jobs/{id}                 state, progress, and each photo's faces and files
    GET    /api/jobs/{id}/files/{name}    a preview, or a restored photo (as a download)
    GET    /api/jobs/{id}/all.zip         every restored photo
    DELETE /api/jobs/{id}                 the page is done with it: its files go now

Errors are `{"error": "one sentence"}` (plus `"errors"`, one per file, for an upload): 400 a
file or field the page cannot take, 404 results that are gone, 413 an upload above
--max-upload, 503 busy (with Retry-After).
"""

from __future__ import annotations

import secrets
import zipfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ented_cli.web.guard import Guard
from ented_cli.web.jobs import ALL_ZIP, DONE, Job, Upload
from ented_cli.web.service import Busy, RestoreService
from ented_cli.web.uploads import (
    FORMATS,
    MAX_PHOTOS,
    MAX_REFS,
    UploadError,
    check_image,
    display_name,
    unique_names,
)

STATIC = Path(str(files("ented_cli.web") / "static"))
NO_STORE = {"cache-control": "no-store"}


@dataclass(frozen=True)
class Settings:
    max_upload_bytes: int  # one request: every photo and reference together
    max_pixels: int | None  # as --max-pixels: per photo, checked from the header
    fidelity: float  # where the page's slider starts
    keep_minutes: float  # results are removed this long after the page last asked for them
    token: str | None = None
    local_only: bool = True  # answer only requests addressed to 127.0.0.1 / localhost


class TooLarge(Exception):
    pass


def create_app(service: RestoreService, settings: Settings) -> Guard:
    store = service.store

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=NO_STORE)

    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_pixels": settings.max_pixels,
                "max_photos": MAX_PHOTOS,
                "max_refs": MAX_REFS,
                "formats": FORMATS,
                "fidelity": settings.fidelity,
                "match_threshold": round(service.pipeline.threshold, 4),
                "keep_minutes": settings.keep_minutes,
            }
        )

    async def submit(request: Request) -> Response:
        busy = service.busy()
        if busy:
            return _busy(busy)
        limit = settings.max_upload_bytes
        too_large = _error(
            413,
            f"the files add up to more than the limit of {_mb(limit)}; send fewer or smaller "
            "photos at a time (or start ented serve with a higher --max-upload)",
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _drain(request)
            return too_large
        job = store.create(settings.fidelity)
        try:
            errors = await _read_upload(Request(request.scope, _limited(request, limit)), job)
        except TooLarge:
            store.remove(job.id)
            await _drain(request)
            return too_large
        except (MultiPartException, ClientDisconnect, UnicodeDecodeError) as e:
            store.remove(job.id)
            return _error(400, f"the upload could not be read ({e}); try again")
        if errors:
            store.remove(job.id)
            return JSONResponse({"error": errors[0], "errors": errors}, status_code=400)
        try:
            service.submit(job)
        except Busy as e:
            store.remove(job.id)
            return _busy(str(e))
        return JSONResponse(
            {"id": job.id, "status": f"api/jobs/{job.id}"}, status_code=202, headers=NO_STORE
        )

    async def _read_upload(request: Request, job: Job) -> list[str]:
        """Check and keep the photos and references of one request; the problems, one a file."""
        async with request.form(max_files=MAX_PHOTOS + MAX_REFS, max_fields=8) as form:
            photos = [f for f in form.getlist("photos") if isinstance(f, UploadFile)]
            refs = [f for f in form.getlist("refs") if isinstance(f, UploadFile)]
            errors = []
            try:
                job.fidelity = float(form.get("fidelity", settings.fidelity))
            except (TypeError, ValueError):
                job.fidelity = -1.0
            if not 0 <= job.fidelity <= 1:
                errors.append("fidelity must be a number from 0 to 1")
            if not photos:
                errors.append("choose at least one photo to restore")
            if len(photos) > MAX_PHOTOS or len(refs) > MAX_REFS:
                errors.append(
                    f"at most {MAX_PHOTOS} photos and {MAX_REFS} reference photos at a time"
                )
            if errors:
                return errors
            for kind, uploads, target in (("photo", photos, job.photos), ("ref", refs, job.refs)):
                names = unique_names(
                    [display_name(f.filename, f"{kind} {i + 1}") for i, f in enumerate(uploads)]
                )
                for i, (upload, name) in enumerate(zip(uploads, names)):
                    data = await upload.read()
                    try:
                        ext = check_image(name, data, settings.max_pixels)
                    except UploadError as e:
                        errors.append(str(e) + (" (reference photo)" if kind == "ref" else ""))
                        continue
                    path = job.folder / f"{kind}-{i}{ext}"  # the server's name, not the client's
                    path.write_bytes(data)
                    target.append(Upload(name, ext, path))
            return errors

    async def status(request: Request) -> Response:
        job = store.get(request.path_params["job"])
        if job is None:
            return _gone(settings)
        return JSONResponse(job.to_json(service.position(job.id)), headers=NO_STORE)

    async def forget(request: Request) -> Response:
        store.remove(request.path_params["job"])
        return Response(status_code=204)

    async def file(request: Request) -> Response:
        job = store.get(request.path_params["job"])
        public = request.path_params["name"]
        path = None if job is None else job.files.get(public)  # only names the server made
        if path is None or not path.is_file():
            return _gone(settings)
        if public in job.downloads:
            store.downloaded(job, public)
            return FileResponse(path, filename=job.downloads[public], headers=NO_STORE)
        return FileResponse(path, headers={"cache-control": "private, max-age=3600"})

    async def zip_all(request: Request) -> Response:
        job = store.get(request.path_params["job"])
        if job is None or job.state != DONE:
            return _gone(settings)
        path = await run_in_threadpool(_zip, job)
        store.downloaded(job, ALL_ZIP)
        return FileResponse(path, filename="ented-restored.zip", headers=NO_STORE)

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/jobs/{job}", status, methods=["GET"]),
        Route("/api/jobs/{job}", forget, methods=["DELETE"]),
        Route(f"/api/jobs/{{job}}/{ALL_ZIP}", zip_all),
        Route("/api/jobs/{job}/files/{name}", file),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    app = Starlette(routes=routes)
    return Guard(app, settings.token, settings.local_only)


def _zip(job: Job) -> Path:
    """Every restored photo in one zip, under the names the page shows (made once per job).
    The names come from uploads.display_name: one component, no slash, no "..", unique."""
    path = job.folder / ALL_ZIP
    if not path.is_file():
        partial = job.folder / f".{secrets.token_hex(4)}.part"  # two clicks: two partials
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:  # photos are packed
            for public, name in job.downloads.items():
                archive.write(job.files[public], arcname=name)
        partial.replace(path)
    job.files[ALL_ZIP] = path
    return path


def _limited(request: Request, limit: int):
    """`receive` that stops a body growing past `limit` bytes (also one sent without a
    Content-Length), before it is spooled anywhere."""
    received = 0

    async def receive():
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise TooLarge
        return message

    return receive


async def _drain(request: Request) -> None:
    """Read and drop the rest of a refused body, so the client reads the answer instead of a
    reset connection (nothing is kept)."""
    try:
        while True:
            message = await request.receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return
    except ClientDisconnect:
        return


def _mb(n: int) -> str:
    return f"{n / 2**20:g} MB"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


def _busy(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=503, headers={"retry-after": "30"})


def _gone(settings: Settings) -> JSONResponse:
    return _error(
        404,
        "these results are gone (they are kept for "
        f"{settings.keep_minutes:g} minutes after the page last asked for them); restore "
        "the photo again",
    )
