"""The restore sequence, for one image: read → detect → select → align → pair → restore → paste.

    pipeline = RestorePipeline.from_weights()             # bundled weights, best device
    result = pipeline("old.jpg", gallery)                  # a RestoreResult
    result.image, result.report.to_json()

`__call__` reads top to bottom. The batch runner (pipeline/batch.py) runs the same three steps
— `prepare`, `restore`, `finish` — with the restore step shared by the faces of several images,
and hands the result to the output writer (pipeline/writer.py). The pipeline never touches torch:
it hands aligned BGR faces to a `Restorer`, so any restorer (ENTED, a distilled student) plugs in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from ented_cli.errors import InputError
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
from ented_cli.imaging.pixels import (
    LoadedImage,
    desaturate,
    from_float_bgr,
    looks_gray,
    resize_like_upscale,
    to_float_bgr,
    to_uint8,
)
from ented_cli.imaging.read import read_image
from ented_cli.model.restorer import FACE_SIZE, Restorer
from ented_cli.paths import DEFAULT_MAX_PIXELS
from ented_cli.pipeline.library import ReferenceLibrary, reference_key
from ented_cli.pipeline.references import Match, ReferenceGallery
from ented_cli.pipeline.report import (
    BELOW_THRESHOLD,
    NO_FACE,
    NO_REFERENCES,
    NOT_CHOSEN,
    PERSON_TAKEN,
    RESTORED,
    UNCHANGED,
    FaceReport,
    ImageReport,
)

# Identity (dlib cosine) a restoration may lose against its reference before the input is kept:
# about the spread of repeated embeddings of one face under resampling.
GUARD_MARGIN = 0.002
# Why the guard kept a face's input (`"guard_reason"` in --json).
ALREADY_SHARP = "already_sharp"  # a large face the restoration makes no clearly sharper
LESS_LIKE_REFERENCE = "less_like_reference"  # restoring lowered identity to the reference
GUARD_REASONS = (ALREADY_SHARP, LESS_LIKE_REFERENCE)


@dataclass(frozen=True)
class RestoreOptions:
    faces: str = "all"  # all | largest | center | match
    aligned: bool = False  # inputs are already aligned face crops (no detection, no paste-back)
    min_face: float = 0.0
    fidelity: float = 0.5  # the default; a call may pass its own
    upscale: float = 1.0
    unmatched: str = "blind"  # blind | skip
    match_threshold: float | None = None  # None: identity.MATCH_THRESHOLD
    colour_match: bool = True
    keep_detail: bool = True  # faces larger than 256 px keep the photo's finest detail
    save_faces: bool = False
    save_cmp: bool = False
    quality: int = 95
    mark: bool = True  # Software tag "ented <version>" in the files it encodes (not in copies)
    report_identity: bool = False  # identity similarity before/after restoration (for --json)
    guard: bool = True  # keep the input face when restoring made it less like its reference
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # larger inputs are refused before decoding


@dataclass
class FaceJob:
    """One face on its way through the pipeline."""

    face: Face
    matrix: np.ndarray  # image -> 256 crop
    crop: np.ndarray | None  # float32 BGR [0, 1], 256 x 256 x 3
    match: Match | None = None
    embedding: np.ndarray | None = None
    restore: bool = True
    restored: np.ndarray | None = None  # float32 BGR
    restored_embedding: np.ndarray | None = None
    guard: str | None = None  # "passed" | "kept_input" (the do-no-harm checks)
    guard_reason: str | None = None  # why the input was kept: GUARD_REASONS
    check_guard: bool = True  # False: decided elsewhere (a video track's later faces)
    reason: str | None = None  # why it has no reference or is not restored (report.REASONS)

    @property
    def matched(self) -> bool:
        return self.match is not None and self.match.person is not None


@dataclass
class ImageWork:
    """One image between the steps: its pixels, its faces and its report so far."""

    image: LoadedImage
    faces: list[FaceJob]
    report: ImageReport


@dataclass
class RestoreResult:
    image: LoadedImage  # the output picture, in the input's layout (gray, alpha, 16-bit)
    faces: list[FaceJob]
    report: ImageReport
    original: LoadedImage  # the input as read

    @property
    def changed(self) -> bool:
        return any(f.restored is not None for f in self.faces)


class RestorePipeline:
    def __init__(
        self,
        restorer: Restorer,
        detector: FaceDetector,
        encoder,
        options: RestoreOptions | None = None,
    ):
        from ented_cli.faces.identity import MATCH_THRESHOLD

        self.restorer, self.detector, self.encoder = restorer, detector, encoder
        self.opt = options or RestoreOptions()
        given = self.opt.match_threshold
        self.threshold = MATCH_THRESHOLD if given is None else given
        self.references = ReferenceLibrary(detector, encoder, restorer, self.opt.max_pixels)

    @classmethod
    def from_weights(
        cls,
        weights=None,
        options: RestoreOptions | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int | None = None,
        download: bool = False,
        warn=None,
        threads: int | None = None,
        backend: str | None = None,
    ) -> RestorePipeline:
        """The pipeline around ENTED `weights` (a WeightSet, a --weights spec, or None for the
        bundled set), with the real face detector and identity encoder."""
        from ented_cli.faces.detect import FaceDetector
        from ented_cli.faces.identity import IdentityEncoder
        from ented_cli.model.restorer import EntedRestorer
        from ented_cli.model.weight_lookup import resolve_weights
        from ented_cli.model.weights import WeightSet

        if not isinstance(weights, WeightSet):
            weights = resolve_weights(weights, download=download)
        restorer = EntedRestorer(
            weights, device, dtype, batch_size, warn=warn, threads=threads, backend=backend
        )
        return cls(restorer, FaceDetector(), IdentityEncoder(), options)

    @property
    def batch_size(self) -> int:
        return getattr(self.restorer, "batch_size", 1)

    # -- the sequence ------------------------------------------------------------------------
    def __call__(
        self,
        image: LoadedImage | str | Path,
        gallery: ReferenceGallery | None = None,
        *,
        fidelity: float | None = None,
    ) -> RestoreResult:
        """Restore the selected faces of one image, paired with `gallery`'s people."""
        work = self.prepare(image, gallery)  # read → detect → select → align → pair
        self.restore([work], fidelity=fidelity)  # the network, then the do-no-harm check
        return self.finish(work)  # paste back, report

    def prepare(
        self,
        image: LoadedImage | str | Path,
        gallery: ReferenceGallery | None,
        report: ImageReport | None = None,
        data: bytes | None = None,
    ) -> ImageWork:
        """Everything before the network, for one image (`data`: its bytes, e.g. from stdin)."""
        report = report or ImageReport(input=str(getattr(image, "source", image)))
        clock = _Clock(report.timing_ms)
        with clock("read"):
            image = self.read(image, report, data)
        with clock("detect"):
            faces = self.detect(image)
            chosen = self.select(image, faces)
        with clock("align"):
            jobs = self.align(image, faces, chosen)
        with clock("match"):
            self.pair(jobs, gallery)
        report.warnings += self.unmatched_warnings(report.input, jobs)
        # What is known so far, for the report of an input that fails later; finish() redoes it.
        report.faces = [_face_report(f, {}) for f in jobs]
        return ImageWork(image, jobs, report)

    def restore(self, works: Sequence[ImageWork], fidelity: float | None = None) -> None:
        """One restorer call for the faces of several images (the restorer splits it into
        batches), then the do-no-harm check. `fidelity` is for this call only."""
        faces = [f for work in works for f in work.faces if f.restore]
        if not faces:
            return
        t = time.perf_counter()
        refs = [[reference_key(r) for r in f.match.faces] if f.matched else [] for f in faces]
        chosen = self.opt.fidelity if fidelity is None else fidelity
        restored = self.restorer.restore(np.stack([f.crop for f in faces]), refs, chosen)
        for f, out in zip(faces, restored):
            f.restored = out
        if self.opt.guard:
            self.guard(faces)
        share = (time.perf_counter() - t) * 1000 / len(faces)
        for work in works:
            n = sum(f.restore for f in work.faces)
            work.report.timing_ms["restore"] = round(share * n, 1)

    def finish(self, work: ImageWork) -> RestoreResult:
        """Paste the restored faces back and complete the report."""
        report = work.report
        with _Clock(report.timing_ms)("paste"):
            output = self.paste(work.image, work.faces)
        restored = [f for f in work.faces if f.restored is not None]
        identity = self.identity_report(work.faces) if self.opt.report_identity else {}
        report.faces = [_face_report(f, identity.get(id(f), {})) for f in work.faces]
        report.status = NO_FACE if not work.faces else (RESTORED if restored else UNCHANGED)
        return RestoreResult(output, work.faces, report, work.image)

    # -- the stages --------------------------------------------------------------------------
    def read(
        self, image: LoadedImage | str | Path, report: ImageReport, data: bytes | None = None
    ) -> LoadedImage:
        """Decode the input (refused from its header when above the pixel limit)."""
        if not isinstance(image, LoadedImage):
            image = read_image(image, data=data, max_pixels=self.opt.max_pixels)
        w, h = image.size
        report.width, report.height = w, h  # also in the report of an input refused below
        out_pixels = round(w * self.opt.upscale) * round(h * self.opt.upscale)
        if self.opt.max_pixels and out_pixels > self.opt.max_pixels:
            raise InputError(
                f"{report.input}: the output would be {out_pixels / 1e6:.0f} MP "
                f"(--upscale {self.opt.upscale:g}), above the limit of "
                f"{self.opt.max_pixels / 1e6:g} MP; lower --upscale or raise --max-pixels"
            )
        if image.frames > 1:
            report.warnings.append(
                f"{report.input}: has {image.frames} frames (animation or pages); "
                "only the first was restored and written as a still image"
            )
        return image

    def detect(self, image: LoadedImage) -> list[Face]:
        """Every face of `--min-face` or larger; with `--aligned`, the whole image."""
        if self.opt.aligned:
            return [_whole_image_face(*image.size)]
        found = self.detector.detect(image.pixels)
        return select_faces(found, "all", image.pixels.shape[:2], self.opt.min_face)

    def select(self, image: LoadedImage, faces: list[Face]) -> list[bool]:
        """Which faces to restore (`--faces largest|center`); the others stay in the report."""
        chosen = select_faces(faces, self.opt.faces, image.pixels.shape[:2])
        return [any(face is c for c in chosen) for face in faces]

    def align(self, image: LoadedImage, faces: list[Face], chosen: list[bool]) -> list[FaceJob]:
        """Each face to restore warped onto the 256 px template (the others need no crop)."""
        frame = to_float_bgr(image)
        if self.opt.aligned:  # resize, no warp: the picture already is the template
            h, w = frame.shape[:2]
            to_crop = resize_affine(FACE_SIZE / w, FACE_SIZE / h)
            return [FaceJob(faces[0], to_crop, aligned_crop(frame))]
        jobs = []
        for face, restore in zip(faces, chosen):
            matrix = estimate_alignment(face.landmarks, FACE_SIZE)
            crop = warp_face(frame, matrix, FACE_SIZE) if restore else None
            reason = None if restore else NOT_CHOSEN
            jobs.append(FaceJob(face, matrix, crop, restore=restore, reason=reason))
        return jobs

    def pair(self, faces: list[FaceJob], gallery: ReferenceGallery | None) -> None:
        """Give each face to restore the person of the gallery it is (identity), and decide
        which of them are restored (`--faces match`, `--unmatched skip`)."""
        has_refs = gallery is not None and len(gallery) > 0
        faces = [f for f in faces if f.restore]  # faces --faces left out take no person
        if faces and (has_refs or self.opt.report_identity):
            embeddings = self.encoder.embed([to_uint8(f.crop) for f in faces])
            matches = (
                gallery.assign(embeddings, self.threshold) if has_refs else [None] * len(faces)
            )
            for f, emb, match in zip(faces, embeddings, matches):
                f.embedding, f.match = emb, match
        skip_unmatched = self.opt.faces == "match" or (has_refs and self.opt.unmatched == "skip")
        for f in faces:
            if f.matched:
                continue
            if not has_refs:
                f.reason = NO_REFERENCES
            elif f.match.similarity >= self.threshold:
                f.reason = PERSON_TAKEN  # close enough, but that person went to a closer face
            else:
                f.reason = BELOW_THRESHOLD
            if skip_unmatched:
                f.restore = False

    def unmatched_warnings(self, source: str, faces: list[FaceJob]) -> list[str]:
        """One line per face that had references to choose from and got none: a reference of
        someone else must never be dropped silently."""
        lines = []
        for i, f in enumerate(faces):
            if f.reason not in (BELOW_THRESHOLD, PERSON_TAKEN):
                continue
            # Numbered from 0 as in --json's `faces` and the --save-cmp tiles.
            name = "the face" if len(faces) == 1 else f"face {i} (of {len(faces)})"
            sim, closest = f.match.similarity, f.match.closest
            if f.restore:
                outcome = "restored without a reference"
            else:
                flag = "--faces match" if self.opt.faces == "match" else "--unmatched skip"
                outcome = f"left unchanged ({flag})"
            if f.reason == PERSON_TAKEN:
                why = f"is close to {closest} ({sim:.2f}), who went to a closer face"
            else:
                why = (
                    f"matches no reference (closest: {closest}, similarity {sim:.2f}, "
                    f"threshold {self.threshold:.2f})"
                )
                outcome += "; a lower --match-threshold pairs it"
            lines.append(f"{source}: {name} {why}; {outcome}")
        return lines

    def guard(self, faces: list[FaceJob]) -> None:
        """Do no harm. A face the photo shows large enough, whose restoration is not clearly
        sharper than it, keeps its input (`pipeline/sharpness.py`): on such faces the network
        does not yet beat the input. A face restored with a reference must not come out less
        like that person (dlib identity) than the input was. Either way the input face is kept
        and the report says so (`"guard": "kept_input"`, `"guard_reason"`)."""
        from ented_cli.faces.identity import similarity
        from ented_cli.pipeline.sharpness import already_sharp, crop_span

        faces = [f for f in faces if f.check_guard]
        for f in faces:
            if already_sharp(f.crop, f.restored, crop_span(f.matrix, FACE_SIZE)):
                f.restored, f.guard, f.guard_reason = None, "kept_input", ALREADY_SHARP
            else:
                f.guard = "passed"
        checked = [
            f for f in faces if f.restored is not None and f.matched and f.embedding is not None
        ]
        if not checked:
            return
        after = self.encoder.embed([to_uint8(f.restored) for f in checked])
        for f, emb in zip(checked, after):
            ref = f.match.faces[0].embedding
            f.restored_embedding = emb
            if similarity(emb, ref) < similarity(f.embedding, ref) - GUARD_MARGIN:
                f.restored, f.guard, f.guard_reason = None, "kept_input", LESS_LIKE_REFERENCE

    def paste(self, image: LoadedImage, faces: list[FaceJob]) -> LoadedImage:
        """The output image: the (upscaled) input with its restored faces pasted back.

        Only the box around the faces goes through float: on a 100 MP scan a float copy of the
        whole frame is 1.2 GB, and every pixel outside the box stays the input's, bit for bit.
        """
        opt = self.opt
        todo = [f for f in faces if f.restored is not None]
        scaled = resize_like_upscale(image, opt.upscale) if opt.upscale != 1 else image
        if not todo:
            return scaled
        gray = image.is_gray or looks_gray(image)
        crops = [desaturate(f.restored) if gray else f.restored for f in todo]
        if opt.aligned:  # the whole picture is the face: replace it, no mask
            frame = self._replace_aligned(to_float_bgr(scaled), crops[0], todo[0])
            return from_float_bgr(frame, scaled)
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

    def identity_report(self, faces: list[FaceJob]) -> dict[int, dict]:
        """identity_before/after/kept per face (keyed by `id(face)`), for `--json`."""
        from ented_cli.faces.identity import similarity

        todo = [f for f in faces if f.restored is not None]
        if not todo:
            return {}
        fresh = [f for f in todo if f.restored_embedding is None]  # the guard embedded the rest
        if fresh:
            for f, emb in zip(fresh, self.encoder.embed([to_uint8(f.restored) for f in fresh])):
                f.restored_embedding = emb

        def sim(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
            return None if a is None or b is None else round(float(similarity(a, b)), 4)

        report = {}
        for f in faces:
            ref = f.match.faces[0].embedding if f.matched else None
            report[id(f)] = {
                "identity_before": sim(f.embedding, ref),
                "identity_after": sim(f.restored_embedding, ref),
                "identity_kept": sim(f.embedding, f.restored_embedding),
            }
        return report

    def _replace_aligned(
        self, frame: np.ndarray, restored: np.ndarray, face: FaceJob
    ) -> np.ndarray:
        h, w = frame.shape[:2]
        if self.opt.colour_match:
            restored = match_colour(restored, face.crop, face_mask(FACE_SIZE))
        shrink = w < FACE_SIZE
        interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
        out = cv2.resize(restored, (w, h), interpolation=interp)
        scale = w / FACE_SIZE
        if self.opt.keep_detail and scale > 1:  # as paste_faces does for large faces
            out = out + (frame - cv2.GaussianBlur(frame, (0, 0), DETAIL_SIGMA_CROP_PX * scale))
        return np.clip(out, 0, 1)


def aligned_crop(frame: np.ndarray) -> np.ndarray:
    """An already aligned face picture (`--aligned`, any size) at the network's 256 px."""
    interp = cv2.INTER_AREA if frame.shape[1] > FACE_SIZE else cv2.INTER_CUBIC
    return cv2.resize(frame, (FACE_SIZE, FACE_SIZE), interpolation=interp)


def _whole_image_face(w: int, h: int) -> Face:
    """An input that is already an aligned face crop (`--aligned`): the whole image is the face,
    its landmarks the template's."""
    to_crop = resize_affine(FACE_SIZE / w, FACE_SIZE / h)
    landmarks = transform_points(template(FACE_SIZE), invert_affine(to_crop)).astype(np.float32)
    return Face(np.array([0, 0, w, h], np.float32), 1.0, landmarks)


def _face_report(f: FaceJob, identity: dict) -> FaceReport:
    if not f.restore:  # left out by --faces, --unmatched skip
        mode = "skipped"
    else:
        mode = "reference" if f.matched else "blind"
    return FaceReport(
        box=[round(float(v), 1) for v in f.face.box],
        score=round(float(f.face.score), 4),
        landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in f.face.landmarks],
        restored=f.restored is not None,
        mode=mode,
        guard=f.guard,
        guard_reason=f.guard_reason,
        person=f.match.person if f.matched else None,
        references=[str(r.path) for r in f.match.faces] if f.matched else [],
        match_similarity=None if f.match is None else round(float(f.match.similarity), 4),
        reason=f.reason,
        identity=identity,
    )


class _Clock:
    """Adds the milliseconds of each `with clock(stage):` block to `timing_ms[stage]`."""

    def __init__(self, timing_ms: dict[str, float]):
        self.timing_ms = timing_ms

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = (time.perf_counter() - start) * 1000
            self.timing_ms[stage] = round(self.timing_ms.get(stage, 0.0) + spent, 1)
