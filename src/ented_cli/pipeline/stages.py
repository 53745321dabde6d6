"""read → detect → select → align → pair with a reference → restore (batched) → paste back → write.

The pipeline owns everything around the network: it hands aligned faces to a `Restorer` and
never touches torch itself, so any restorer (ENTED, a distilled student, ...) plugs in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from ented_cli.errors import EntedError, InputError
from ented_cli.faces.align import (
    estimate_alignment,
    invert_affine,
    resize_affine,
    scale_affine,
    template,
    transform_points,
    warp_face,
)
from ented_cli.faces.detect import Face, FaceDetector, select_faces
from ented_cli.faces.paste import (
    DETAIL_SIGMA_CROP_PX,
    face_mask,
    faces_box,
    match_colour,
    paste_faces,
)
from ented_cli.imaging.imageio import (
    LoadedImage,
    encode_image,
    from_float_bgr,
    looks_gray,
    read_image,
    resize_like_upscale,
    to_float_bgr,
    write_atomic,
)
from ented_cli.model.restorer import FACE_SIZE, Restorer
from ented_cli.paths import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, STDIN_EXT, InputItem, side_path
from ented_cli.pipeline.references import Match, ReferenceFace, ReferenceGallery


@dataclass
class RestoreOptions:
    faces: str = "all"  # all | largest | center | match
    aligned: bool = False  # inputs are already aligned face crops (no detection, no paste-back)
    min_face: float = 0.0
    fidelity: float = 0.5
    upscale: float = 1.0
    unmatched: str = "blind"  # blind | skip
    match_threshold: float | None = None  # None: identity.MATCH_THRESHOLD
    colour_match: bool = True
    keep_detail: bool = True  # faces larger than 256 px keep the photo's finest detail
    save_faces: bool = False
    save_cmp: bool = False
    quality: int = 95
    report_identity: bool = False  # identity similarity before/after restoration (for --json)
    guard: bool = True  # keep the input face when restoring made it less like its reference
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # larger inputs are refused before decoding


@dataclass
class FaceJob:
    face: Face
    matrix: np.ndarray  # image -> 256 crop
    crop: np.ndarray  # float32 BGR [0, 1], 256 x 256 x 3
    match: Match | None = None
    embedding: np.ndarray | None = None
    restore: bool = True
    restored: np.ndarray | None = None  # float32 BGR
    restored_embedding: np.ndarray | None = None
    identity: dict = field(default_factory=dict)  # similarities for the report
    guard: str | None = None  # "passed" | "kept_input" (do-no-harm check, faces with a reference)


@dataclass
class ImageJob:
    item: InputItem
    output: Path | str
    report: dict
    image: LoadedImage | None = None
    raw: bytes | None = None
    faces: list[FaceJob] = field(default_factory=list)
    t0: float = 0.0


# Identity (dlib cosine) a restoration may lose against its reference before the input is kept:
# about the spread of repeated embeddings of one face under resampling.
GUARD_MARGIN = 0.002


def _ms(t: float) -> float:
    return round((time.perf_counter() - t) * 1000, 1)


def to_rgb_batch(crops: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([c[..., ::-1] for c in crops]).astype(np.float32)


def to_uint8(crop: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(crop, 0, 1) * 255).astype(np.uint8)


def desaturate(crop: np.ndarray) -> np.ndarray:
    luma = crop @ np.array([0.114, 0.587, 0.299], np.float32)
    return np.repeat(luma[..., None], 3, axis=2)


class ReferenceLibrary:
    """Reference photos, each read, detected, aligned and embedded once per run."""

    def __init__(
        self,
        detector: FaceDetector,
        encoder,
        restorer: Restorer,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        self.detector, self.encoder, self.restorer = detector, encoder, restorer
        self.max_pixels = max_pixels
        self._faces: dict[Path, ReferenceFace] = {}

    def face(self, person: str, path: Path) -> ReferenceFace:
        """The largest face of a reference photo (InputError if unreadable or without a face)."""
        key = path.resolve()
        if key not in self._faces:
            self.add_image(key, person, path, read_image(path, max_pixels=self.max_pixels))
        cached = self._faces[key]
        return ReferenceFace(person, cached.path, cached.crop, cached.embedding)

    def add_image(self, key, person: str, path: Path, image: LoadedImage) -> ReferenceFace:
        """Detect, align, embed and encode (for the restorer) the largest face of `image`."""
        faces = self.detector.detect(image.pixels)
        if not faces:
            raise InputError(
                f"{path}: no face found in this reference; use a photo where the face is clearly visible"
            )
        face = max(faces, key=lambda f: f.size)
        crop = warp_face(
            to_float_bgr(image), estimate_alignment(face.landmarks, FACE_SIZE), FACE_SIZE
        )
        embedding = self.encoder.embed([to_uint8(crop)])[0]
        ref = ReferenceFace(person, Path(path), to_uint8(crop), embedding)
        self.restorer.add_reference(reference_key(ref), crop[..., ::-1].astype(np.float32))
        self._faces[key] = ref
        return ref

    def faces(self, refs: Iterable[tuple[str, Path]], errors: list[str]) -> list[ReferenceFace]:
        found = []
        for person, path in refs:
            try:
                found.append(self.face(person, path))
            except EntedError as e:
                errors.append(str(e))
        return found


def aligned_face_job(frame: np.ndarray) -> FaceJob:
    """An input that is already an aligned face crop (`--aligned`): the whole image is the face."""
    h, w = frame.shape[:2]
    to_crop = resize_affine(FACE_SIZE / w, FACE_SIZE / h)
    landmarks = transform_points(template(FACE_SIZE), invert_affine(to_crop)).astype(np.float32)
    face = Face(np.array([0, 0, w, h], np.float32), 1.0, landmarks)
    shrink = w > FACE_SIZE
    crop = cv2.resize(
        frame, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )
    return FaceJob(face, to_crop, crop)


def reference_key(face: ReferenceFace) -> str:
    """How the restorer knows a reference photo: its absolute path."""
    return str(face.path.resolve())


def merge_same_person(faces: list[ReferenceFace], threshold: float) -> list[ReferenceFace]:
    """Loose reference files of one person (`--ref a.jpg --ref b.jpg`) become one person, so the
    generator extracts texture from all of them; different people stay apart."""
    from ented_cli.faces.identity import similarity

    merged: list[ReferenceFace] = []
    for face in faces:
        for other in merged:
            if (
                other.person != face.person
                and similarity(face.embedding, other.embedding) >= threshold
            ):
                face = ReferenceFace(other.person, face.path, face.crop, face.embedding)
                break
        merged.append(face)
    return merged


class RestorePipeline:
    def __init__(
        self,
        restorer: Restorer,
        detector: FaceDetector,
        encoder,
        options: RestoreOptions,
        batch_size: int = 4,
        workers: int | None = None,
    ):
        from ented_cli.faces.identity import MATCH_THRESHOLD
        from ented_cli.pipeline.workers import default_workers

        self.restorer, self.detector, self.encoder, self.opt = restorer, detector, encoder, options
        self.threshold = (
            MATCH_THRESHOLD if options.match_threshold is None else options.match_threshold
        )
        self.batch_size = batch_size
        # Threads reading and analysing inputs ahead of the restorer (0: all on the calling thread).
        self.workers = default_workers(restorer) if workers is None else workers
        self.references = ReferenceLibrary(detector, encoder, restorer, options.max_pixels)

    # -- per-image stages -------------------------------------------------------------------------
    def prepare(self, job: ImageJob, gallery: ReferenceGallery | None) -> None:
        """Read one input, then `analyse` it. Whatever goes wrong becomes an EntedError naming
        the input, so one odd file never stops a batch."""
        with _errors_named(job, "reading it or finding its faces"):
            t = time.perf_counter()
            item = job.item
            limit = self.opt.max_pixels
            if item.is_stdin:
                import sys

                job.raw = sys.stdin.buffer.read()
                job.image = read_image("-", data=job.raw, max_pixels=limit)
            else:
                job.image = read_image(item.path, max_pixels=limit)
            job.report["timing_ms"]["read"] = _ms(t)
            self._check_output_size(job)
            if job.image.frames > 1:
                job.report.setdefault("warnings", []).append(
                    f"{item.display}: has {job.image.frames} frames (animation or pages); "
                    "only the first was restored and written as a still image"
                )
            self.analyse(job, gallery)

    def _check_output_size(self, job: ImageJob) -> None:
        w, h = job.image.size
        out_pixels = round(w * self.opt.upscale) * round(h * self.opt.upscale)
        if self.opt.max_pixels and out_pixels > self.opt.max_pixels:
            raise InputError(
                f"{job.item.display}: the output would be {out_pixels / 1e6:.0f} MP "
                f"(--upscale {self.opt.upscale:g}), above the limit of "
                f"{self.opt.max_pixels / 1e6:g} MP; lower --upscale or raise --max-pixels"
            )

    def analyse(self, job: ImageJob, gallery: ReferenceGallery | None) -> None:
        """Detect, select, align and pair the faces of `job.image`."""
        image = job.image
        job.report.update(width=image.size[0], height=image.size[1])
        t = time.perf_counter()
        frame = to_float_bgr(image)
        if self.opt.aligned:
            job.faces.append(aligned_face_job(frame))
        else:
            detected = self.detector.detect(image.pixels)
            chosen = select_faces(
                detected, self.opt.faces, image.pixels.shape[:2], self.opt.min_face
            )
            for face in chosen:
                matrix = estimate_alignment(face.landmarks, FACE_SIZE)
                job.faces.append(FaceJob(face, matrix, warp_face(frame, matrix, FACE_SIZE)))
        job.report["timing_ms"]["detect"] = _ms(t)

        t = time.perf_counter()
        has_refs = gallery is not None and len(gallery) > 0
        if job.faces and (has_refs or self.opt.report_identity):
            embeddings = self.encoder.embed([to_uint8(f.crop) for f in job.faces])
            matches = (
                gallery.assign(embeddings, self.threshold) if has_refs else [None] * len(job.faces)
            )
            for f, emb, match in zip(job.faces, embeddings, matches):
                f.embedding, f.match = emb, match
        for f in job.faces:
            matched = f.match is not None and f.match.person is not None
            if not matched and (
                self.opt.faces == "match" or (has_refs and self.opt.unmatched == "skip")
            ):
                f.restore = False
        job.report["timing_ms"]["match"] = _ms(t)

    def restore(self, jobs: Sequence[ImageJob]) -> None:
        """One restorer call for the faces of several images (the restorer splits into batches)."""
        faces = [f for job in jobs for f in job.faces if f.restore]
        if not faces:
            return
        t = time.perf_counter()
        refs = [
            [reference_key(r) for r in f.match.faces] if f.match and f.match.person else []
            for f in faces
        ]
        restored = self.restorer.restore(
            to_rgb_batch([f.crop for f in faces]), refs, self.opt.fidelity
        )
        for f, out in zip(faces, restored):
            f.restored = np.ascontiguousarray(out[..., ::-1])
        if self.opt.guard:
            self._guard(faces)
        share = _ms(t) / len(faces)
        for job in jobs:
            n = sum(f.restore for f in job.faces)
            job.report["timing_ms"]["restore"] = round(share * n, 1)

    def _guard(self, faces: list[FaceJob]) -> None:
        """Do no harm: a face restored with a reference must not come out less like that person
        (dlib identity) than the input was. If it does, the input face is kept and the report
        says so (`"guard": "kept_input"`)."""
        from ented_cli.faces.identity import similarity

        checked = [f for f in faces if f.match and f.match.person and f.embedding is not None]
        if not checked:
            return
        after = self.encoder.embed([to_uint8(f.restored) for f in checked])
        for f, emb in zip(checked, after):
            ref = f.match.faces[0].embedding
            f.restored_embedding = emb
            if similarity(emb, ref) < similarity(f.embedding, ref) - GUARD_MARGIN:
                f.restored, f.guard = None, "kept_input"
            else:
                f.guard = "passed"

    def finish(self, job: ImageJob) -> None:
        """Paste restored faces back, write the output (and side outputs), fill in the report.
        Whatever goes wrong becomes an EntedError naming the input."""
        with _errors_named(job, "pasting the faces back or writing it"):
            self._finish(job)

    def _finish(self, job: ImageJob) -> None:
        t = time.perf_counter()
        self.summarise(job)
        if (
            not any(f.restored is not None for f in job.faces)
            and self.opt.upscale == 1
            and self._copy_verbatim(job)
        ):
            job.report["timing_ms"]["write"] = _ms(t)
            return
        out_image = self.compose(job)
        self._write(job, out_image, [f for f in job.faces if f.restored is not None])
        job.report["timing_ms"]["write"] = _ms(t)

    def summarise(self, job: ImageJob) -> None:
        """Status, per-face records and (with --json) identity similarities in the report."""
        todo = [f for f in job.faces if f.restored is not None]
        if self.opt.report_identity:
            self._identity_report(job, todo)
        job.report["faces"] = [self._face_report(f) for f in job.faces]
        job.report["status"] = "no_face" if not job.faces else ("restored" if todo else "unchanged")

    def compose(self, job: ImageJob) -> LoadedImage:
        """The output image: the (upscaled) input with its restored faces pasted back.

        Only the box around the faces goes through float: on a 100 MP scan a float copy of the
        whole frame is 1.2 GB, and every pixel outside the box stays the input's, bit for bit.
        """
        image, opt = job.image, self.opt
        todo = [f for f in job.faces if f.restored is not None]
        scaled = resize_like_upscale(image, opt.upscale) if opt.upscale != 1 else image
        if not todo:
            return scaled
        gray = image.is_gray or looks_gray(image)
        crops = [desaturate(f.restored) if gray else f.restored for f in todo]
        if opt.aligned:  # the whole picture is the face: replace it, no mask
            return from_float_bgr(
                self._replace_aligned(to_float_bgr(scaled), crops[0], todo[0]), scaled
            )
        matrices = [scale_affine(f.matrix, opt.upscale) for f in todo]
        box = faces_box(matrices, [c.shape[0] for c in crops], scaled.size)
        if box is None:
            return scaled
        x0, y0, x1, y1 = box
        window = replace(scaled, pixels=scaled.pixels[y0:y1, x0:x1], alpha=None)
        pasted = paste_faces(
            to_float_bgr(window),
            crops,
            matrices,
            colour_match=opt.colour_match,
            originals=[f.crop for f in todo],
            keep_detail=opt.keep_detail,
            origin=(x0, y0),
            frame_size=scaled.size,
        )
        pixels = scaled.pixels.copy()
        pixels[y0:y1, x0:x1] = from_float_bgr(pasted, window).pixels
        return replace(scaled, pixels=pixels)

    # -- helpers ----------------------------------------------------------------------------------
    def _replace_aligned(
        self, frame: np.ndarray, restored: np.ndarray, face: FaceJob
    ) -> np.ndarray:
        h, w = frame.shape[:2]
        if self.opt.colour_match:
            restored = match_colour(restored, face.crop, face_mask(FACE_SIZE))
        shrink = w < FACE_SIZE
        out = cv2.resize(
            restored, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
        )
        scale = w / FACE_SIZE
        if self.opt.keep_detail and scale > 1:  # as paste_faces does for large faces
            out = out + (frame - cv2.GaussianBlur(frame, (0, 0), DETAIL_SIGMA_CROP_PX * scale))
        return np.clip(out, 0, 1)

    def _copy_verbatim(self, job: ImageJob) -> bool:
        """Nothing changed: the output is a byte-for-byte copy when the format allows it."""
        out = job.output
        src_ext = "-" if job.item.is_stdin else job.item.path.suffix.lower()
        if out == "-" or Path(out).suffix.lower() != src_ext:
            return False
        if job.item.is_stdin:
            write_atomic(Path(out), job.raw)
        else:
            _make_folder(Path(out).parent)
            write_atomic(Path(out), job.item.path.read_bytes())
        return True

    def _write(
        self,
        job: ImageJob,
        out_image: LoadedImage,
        restored: list[FaceJob],
    ) -> None:
        import sys

        out = job.output
        if out != "-":
            ext = Path(out).suffix.lower()
        else:  # stdout keeps the input's format where ented can write it
            ext = STDIN_EXT if job.item.is_stdin else job.item.path.suffix.lower()
            ext = ext if ext in IMAGE_EXTENSIONS else STDIN_EXT
        data = encode_image(out_image, ext, self.opt.quality)
        if out == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        out = Path(out)
        _make_folder(out.parent)
        write_atomic(out, data)
        if self.opt.save_faces:
            files = []
            for i, f in enumerate(restored):
                path = side_path(out, "faces", i)
                _make_folder(path.parent)
                side = np.concatenate([f.crop, f.restored], axis=1)  # before | after
                write_atomic(path, _png(side))
                files.append(str(path))
            job.report["faces_saved"] = files
        if self.opt.save_cmp:
            path = side_path(out, "cmp")
            write_atomic(path, _comparison_jpeg(job.image, out_image, self.opt.quality))
            job.report["comparison"] = str(path)

    def _identity_report(self, job: ImageJob, todo: list[FaceJob]) -> None:
        from ented_cli.faces.identity import similarity

        if not todo:
            return
        fresh = [f for f in todo if f.restored_embedding is None]  # the guard embedded the rest
        if fresh:
            for f, emb in zip(fresh, self.encoder.embed([to_uint8(f.restored) for f in fresh])):
                f.restored_embedding = emb

        def sim(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
            return None if a is None or b is None else round(float(similarity(a, b)), 4)

        for f in job.faces:
            ref = f.match.faces[0].embedding if f.match and f.match.person else None
            f.identity = {
                "identity_before": sim(f.embedding, ref),
                "identity_after": sim(f.restored_embedding, ref),
                "identity_kept": sim(f.embedding, f.restored_embedding),
            }

    def _face_report(self, f: FaceJob) -> dict:
        matched = f.match is not None and f.match.person is not None
        record = {
            "box": [round(float(v), 1) for v in f.face.box],
            "score": round(float(f.face.score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in f.face.landmarks],
            "restored": f.restored is not None,
            "mode": "skipped"
            if f.restored is None and f.guard is None
            else ("reference" if matched else "blind"),
            "guard": f.guard,
            "person": f.match.person if matched else None,
            "references": [str(r.path) for r in f.match.faces] if matched else [],
            "match_similarity": None if f.match is None else round(float(f.match.similarity), 4),
        }
        record.update(f.identity)
        return record

    # -- the whole run ----------------------------------------------------------------------------
    def run(
        self, jobs: Sequence[ImageJob], gallery_for: Callable[[InputItem], ReferenceGallery | None]
    ) -> Iterator[ImageJob]:
        """Yields every job, in input order, once it is written or has failed.

        With `workers`, inputs are read and analysed on that many threads ahead of the restorer
        and written on one more thread behind it, while this thread runs the restorer; without,
        everything runs here. Both give the same batches, so the same bytes.
        """
        if self.workers:
            yield from self._run_with_workers(jobs, gallery_for)
            return
        for window in self._windows(self._prepared(job, gallery_for) for job in jobs):
            yield from self._flush(window)

    def _run_with_workers(
        self, jobs: Sequence[ImageJob], gallery_for: Callable[[InputItem], ReferenceGallery | None]
    ) -> Iterator[ImageJob]:
        from ented_cli.pipeline.workers import Serialized, WorkerPool

        # The identity network and the reference cache are shared by the threads: one at a time.
        models = self.encoder, self.restorer
        self.encoder = self.references.encoder = Serialized(self.encoder)
        self.restorer = self.references.restorer = Serialized(self.restorer)
        gallery_for = Serialized(gallery_for)
        try:
            with WorkerPool(self.workers) as pool:
                prepared = pool.prefetch(jobs, lambda job: self._prepared(job, gallery_for))
                for window in self._windows(prepared):
                    self._restore_window(window)
                    yield from pool.write(window, self._finish_job)
                yield from pool.drain()
        finally:  # also on Ctrl-C: the pool has stopped, every write begun has ended
            self.encoder = self.references.encoder = models[0]
            self.restorer = self.references.restorer = models[1]

    def _prepared(
        self, job: ImageJob, gallery_for: Callable[[InputItem], ReferenceGallery | None]
    ) -> ImageJob:
        job.t0 = time.perf_counter()
        try:
            self.prepare(job, gallery_for(job.item))
        except EntedError as e:
            self._failed(job, e)
            job.image = job.raw = None  # it waits for its window's turn holding nothing
            job.faces = []
        return job

    def _windows(self, prepared: Iterable[ImageJob]) -> Iterator[list[ImageJob]]:
        """Consecutive jobs grouped until they hold `batch_size` faces to restore, or until their
        decoded images reach WINDOW_BYTES (a run of huge photos must not fill the memory). Jobs
        with nothing to restore (no face, failed) go on alone unless faces are waiting."""
        window: list[ImageJob] = []
        faces = size = 0
        for job in prepared:
            window.append(job)
            faces += sum(f.restore for f in job.faces)
            size += _image_bytes(job.image)
            if faces == 0 or faces >= self.batch_size or size >= WINDOW_BYTES:
                yield window
                window, faces, size = [], 0, 0
        if window:
            yield window

    def _flush(self, window: list[ImageJob]) -> Iterator[ImageJob]:
        self._restore_window(window)
        for job in window:
            self._finish_job(job)
            yield job

    def _restore_window(self, window: list[ImageJob]) -> None:
        ready = [job for job in window if not _has_failed(job)]
        try:
            self.restore(ready)
        except EntedError as e:
            for job in ready:
                self._failed(job, e)

    def _finish_job(self, job: ImageJob) -> None:
        try:
            if not _has_failed(job):
                self.finish(job)
                job.report["timing_ms"]["total"] = _ms(job.t0)
        except EntedError as e:
            self._failed(job, e)
        finally:
            job.image = job.raw = None  # free the frame as soon as it is written
            for f in job.faces:
                f.crop = f.restored = None

    @staticmethod
    def _failed(job: ImageJob, error: Exception) -> ImageJob:
        job.report.update(status="error", error=str(error), output=None)
        return job


# Decoded pixels a window of images may hold before it goes to the restorer short of a full batch.
WINDOW_BYTES = 512 * 2**20


def _image_bytes(image: LoadedImage | None) -> int:
    if image is None:
        return 0
    return image.pixels.nbytes + (0 if image.alpha is None else image.alpha.nbytes)


def _has_failed(job: ImageJob) -> bool:
    return job.report.get("status") == "error"


log = logging.getLogger("ented")


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


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise EntedError(
            f"{folder}: cannot create the output folder (a file with that name is in the way); "
            "move the file or choose another -o"
        ) from None
    except OSError as e:
        raise EntedError(
            f"{folder}: cannot create the output folder ({e.strerror}); choose another -o"
        ) from None


def _png(bgr: np.ndarray) -> bytes:
    _, buf = cv2.imencode(".png", to_uint8(bgr))
    return buf.tobytes()


def _comparison_jpeg(
    before: LoadedImage, after: LoadedImage, quality: int, max_side: int = 2048
) -> bytes:
    """Before | after, side by side at the output's size, with a thin white divider; large
    frames are shrunk first (in their own bit depth, so a huge scan never becomes a float copy).
    `before` may be the input at its own size (--upscale): it is resized straight to the tile."""
    w, h = after.size
    scale = min(1.0, max_side / max(h, 2 * w + max(2, w // 200)))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def tile(image: LoadedImage) -> np.ndarray:
        pixels = image.pixels
        if image.size != size:
            enlarge = size[0] > image.size[0]
            interp = cv2.INTER_LANCZOS4 if enlarge else cv2.INTER_AREA
            pixels = cv2.resize(pixels, size, interpolation=interp)
        return to_float_bgr(replace(image, pixels=pixels, alpha=None))

    left, right = tile(before), tile(after)
    divider = np.ones((left.shape[0], max(2, left.shape[1] // 200), 3), np.float32)
    both = np.concatenate([left, divider, right], axis=1)
    _, buf = cv2.imencode(".jpg", to_uint8(both), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes()
