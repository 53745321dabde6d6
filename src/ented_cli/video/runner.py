"""`ented restore clip.mp4`: one video through the restore pipeline, as a stream.

    decode (thread) → detect every N frames, track between → align → pair (once per track)
      → restore (faces of several frames in one batch) → paste → encode (thread)

Pictures travel through bounded queues, so memory stays flat however long the video is. The
stages are the pipeline's own (`RestorePipeline.detect`, `align`, `pair`, `restore` with its
do-no-harm guard, `paste`); what is new is the tracking (video/tracking.py): each face is a
track whose identity, reference person and guard verdict are decided once, on its first frame,
and whose landmarks are smoothed so the face does not jitter. Packets of the other streams
(sound, subtitles) ride along in file order and are copied untouched (or, for text subtitles
the output container cannot hold, converted: video/streams.py).

The output is written to a temp file and renamed when complete: an error or Ctrl-C leaves
nothing behind. A video in which no face was restored is copied byte for byte instead.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ented_cli.errors import EntedError, InputError
from ented_cli.faces.detect import Face
from ented_cli.imaging.atomic import atomic_path
from ented_cli.imaging.pixels import LoadedImage
from ented_cli.paths import InputItem
from ented_cli.pipeline.references import ReferenceGallery
from ented_cli.pipeline.report import NO_FACE, NOT_CHOSEN, RESTORED, UNCHANGED, ImageReport
from ented_cli.pipeline.restore import FaceJob, ImageWork, RestorePipeline
from ented_cli.video.container import Picture, VideoSink, VideoSource, muxer_for
from ented_cli.video.flicker import FlickerMeter
from ented_cli.video.settings import DEFAULT_DETECT_EVERY, EncodeSettings
from ented_cli.video.steady import W_MAX, Steadier
from ented_cli.video.tracking import FaceTracker, Track

# Pictures each queue holds (decoded → analysed, analysed → encoded): memory is these, the
# window below and the encoder's look-ahead, whatever the video's length.
QUEUE_PICTURES = 8
# Frames that may wait for a full batch of faces (GPU); on a CPU the batch is one face.
MAX_WINDOW = 16

log = logging.getLogger("ented")


@dataclass(frozen=True)
class VideoOptions:
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    detect_every: int = DEFAULT_DETECT_EVERY
    start: float | None = None  # seconds from the first picture; None: from the start
    end: float | None = None  # None: to the end
    steady: bool = True  # blend each restored face with its previous frame where it is still


@dataclass
class VideoReport(ImageReport):
    """The --json line of a video: the image fields (`faces` stays out), and what a video adds."""

    kind: str = "video"
    frames: int = 0
    face_frames: int = 0  # restored faces summed over frames
    duration_s: float | None = None  # of the output
    frames_per_s: float | None = None  # pictures restored per second of wall time
    tracks: list[dict] = field(default_factory=list)
    flicker: dict | None = None
    streams: dict | None = None

    def to_json(self) -> dict[str, Any]:
        record = super().to_json()
        record["kind"] = self.kind
        record.update(
            frames=self.frames,
            face_frames=self.face_frames,
            duration_s=self.duration_s,
            frames_per_s=self.frames_per_s,
            tracks=self.tracks,
            flicker=self.flicker,
            streams=self.streams,
        )
        return record


@dataclass
class _Frame:
    """One picture between analysis and encoding."""

    picture: Picture
    work: ImageWork
    tracks: list[Track]  # the track of each of work.faces
    first: list[bool]  # whether that face is its track's first (it carries the guard verdict)


@dataclass
class _Failed:
    error: BaseException


_END = object()


class _Clock:
    """Seconds spent per stage, summed (threads add their own stages)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                spent = time.perf_counter() - start
                self.seconds[stage] = self.seconds.get(stage, 0.0) + spent

    def ms(self) -> dict[str, float]:
        return {k: round(v * 1000, 1) for k, v in self.seconds.items()}


class VideoRunner:
    """Restores videos with `pipeline` (its options: --faces, --unmatched, guard, fidelity, ...)."""

    def __init__(self, pipeline: RestorePipeline, options: VideoOptions | None = None):
        self.pipeline = pipeline
        self.opt = options or VideoOptions()

    def run(
        self,
        item: InputItem,
        output: Path,
        gallery: ReferenceGallery | None,
        fidelity: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> VideoReport:
        """Restore `item` into `output`; every problem becomes the report's one-line error.
        `progress(frames_done, frames_expected)` is called as pictures are written."""
        report = VideoReport(input=item.display, output=str(output), fidelity=fidelity)
        start = time.perf_counter()
        try:
            self._run(item, Path(output), gallery, fidelity, report, progress)
        except EntedError as e:
            report.fail(str(e))
        except MemoryError:
            report.fail(f"{item.display}: not enough memory while restoring this video")
        except Exception as e:  # a bug: one line, the traceback with -v
            log.debug("traceback for %s:", item.display, exc_info=True)
            report.fail(
                f"{item.display}: internal error while restoring this video "
                f"({type(e).__name__}: {e}); rerun with -v for the traceback and please report it"
            )
        report.timing_ms["total"] = round((time.perf_counter() - start) * 1000, 1)
        if report.frames and not report.failed:
            report.frames_per_s = round(report.frames / (report.timing_ms["total"] / 1000), 2)
        return report

    def _check(self, item: InputItem) -> None:
        opt = self.pipeline.opt
        if item.path is None:
            raise InputError("-: a video cannot be read from stdin; pass the file's path")
        if opt.aligned:
            raise InputError(f"{item.display}: --aligned is for photos of single faces")
        if opt.upscale != 1:
            raise InputError(
                f"{item.display}: -s/--upscale is for photos; a video keeps its size (drop -s)"
            )

    def _notes(self, item: InputItem) -> list[str]:
        opt = self.pipeline.opt
        if opt.save_faces or opt.save_cmp:
            return [f"{item.display}: --save-faces/--save-cmp are for photos; none for a video"]
        return []

    def _run(self, item, output: Path, gallery, fidelity, report: VideoReport, progress) -> None:
        from ented_cli.pipeline.writer import make_folder

        self._check(item)
        report.warnings += self._notes(item)
        muxer = muxer_for(output)
        with VideoSource(item.path, item.display, self.opt.start, self.opt.end) as source:
            info = source.info
            report.width, report.height = info.width, info.height
            make_folder(output.parent)
            with atomic_path(output) as tmp:
                sink = VideoSink(tmp, muxer, source, self.opt.encode)
                try:
                    state = _State(self, source, gallery, fidelity, report, progress)
                    state.stream(sink)
                    sink.close()
                except BaseException:
                    sink.abort()
                    raise
                whole = self.opt.start is None and self.opt.end is None
                same_kind = output.suffix.lower() == item.path.suffix.lower()
                if report.status != RESTORED and whole and same_kind:
                    # Nothing changed: the input, byte for byte, rather than a re-encoded copy.
                    shutil.copyfile(item.path, tmp)
                    report.warnings.append(
                        f"{item.display}: no face restored; wrote an unchanged copy"
                    )
        report.streams = {
            "video": {"codec": sink.codec, "crf": sink.crf, "pix_fmt": sink.pix_fmt},
            "copied": sink.copied,
            "converted": sink.converted,
            "dropped": sink.dropped,
        }
        note = sink.note()
        if note:
            report.warnings.append(note)


class _State:
    """One video's run: the threads, the tracker, the window of frames awaiting the restorer."""

    def __init__(
        self, runner: VideoRunner, source: VideoSource, gallery, fidelity, report, progress
    ):
        self.pipe = runner.pipeline
        self.opt = runner.opt
        self.source = source
        self.gallery = gallery
        self.fidelity = fidelity
        self.report = report
        self.progress = progress
        self.tracker = FaceTracker()
        self.flicker = FlickerMeter()
        self.steadier = Steadier(w_max=W_MAX if self.opt.steady else 0.0)
        self.clock = _Clock()
        self.stop = threading.Event()
        self.decoded: queue.Queue = queue.Queue(QUEUE_PICTURES)
        self.analysed: queue.Queue = queue.Queue(QUEUE_PICTURES)
        self.writer_error: BaseException | None = None
        self.written = 0
        self.turns = round(source.info.rotation / 90) % 4
        info = source.info
        self.total = info.frames_estimate  # for the progress bar (0: not known)
        if (self.opt.start or self.opt.end) and info.rate and info.duration_s:
            part = min(self.opt.end or info.duration_s, info.duration_s) - (self.opt.start or 0)
            self.total = max(round(part * info.rate), 0)
        self.last_time = 0.0

    # -- the threads -------------------------------------------------------------------------
    def stream(self, sink: VideoSink) -> None:
        reader = threading.Thread(target=self._read, name="ented-decode", daemon=True)
        writer = threading.Thread(
            target=self._write, args=(sink,), name="ented-encode", daemon=True
        )
        reader.start()
        writer.start()
        try:
            self._analyse_all()
            self._put(self.analysed, _END)
            writer.join()
            if self.writer_error is not None:
                raise self.writer_error
        finally:
            self.stop.set()
            reader.join()
            writer.join()
        self._finish_report()

    def _put(self, q: queue.Queue, item) -> None:
        """Put into a bounded queue, giving up when the run stops (an error, Ctrl-C)."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.writer_error is not None and q is self.analysed:
                    raise self.writer_error from None
        raise _Stopped()

    def _read(self) -> None:
        try:
            items = self.source.items()
            while True:
                with self.clock("decode"):
                    item = next(items, _END)
                self._put(self.decoded, item)
                if item is _END:
                    return
        except _Stopped:
            return
        except BaseException as e:
            try:
                self._put(self.decoded, _Failed(e))
            except _Stopped:
                pass

    def _write(self, sink: VideoSink) -> None:
        try:
            while True:
                try:
                    item = self.analysed.get(timeout=0.1)
                except queue.Empty:
                    if self.stop.is_set():
                        return
                    continue
                if item is _END:
                    return
                with self.clock("encode"):
                    if isinstance(item, tuple):
                        picture, pixels = item
                        sink.write_picture(pixels, picture)
                    else:
                        sink.write_packet(item)
                if isinstance(item, tuple):
                    self.written += 1
                    if self.progress is not None:
                        self.progress(self.written, self.total)
        except BaseException as e:
            self.writer_error = e

    # -- the main thread ---------------------------------------------------------------------
    def _analyse_all(self) -> None:
        window: list = []
        faces = frames = 0
        while True:
            item = self.decoded.get()
            if item is _END:
                break
            if isinstance(item, _Failed):
                raise item.error
            if not isinstance(item, Picture):
                if window:
                    window.append(item)
                else:
                    self._put(self.analysed, item)
                continue
            frame = self._analyse(item)
            window.append(frame)
            frames += 1
            faces += sum(f.restore for f in frame.work.faces)
            if faces == 0 or faces >= self.pipe.batch_size or frames >= MAX_WINDOW:
                self._flush(window)
                window, faces, frames = [], 0, 0
        if window:
            self._flush(window)

    def _analyse(self, picture: Picture) -> _Frame:
        """Detect or track, align, and (for a face seen for the first time) pair it."""
        pipe, clock = self.pipe, self.clock
        image = LoadedImage(picture.pixels, None, None, None, "video", self.source.display)
        detections = None
        if picture.index % self.opt.detect_every == 0 or self.tracker.want_detection:
            with clock("detect"):
                detections = self._detect(image)
        with clock("track"):
            self.tracker.step(picture.pixels, picture.time, detections)
            visible = [t for t in self.tracker.tracks if t.visible]
            chosen = self._chosen(image, visible, detections is not None)
        with clock("align"):  # (no faces, no float copy of the frame)
            jobs = pipe.align(image, [t.face() for t in visible], chosen) if visible else []
        with clock("match"):
            first = self._decide(jobs, visible)
        report = ImageReport(input=self.source.display)
        self.last_time = picture.time
        return _Frame(picture, ImageWork(image, jobs, report), visible, first)

    def _detect(self, image: LoadedImage) -> list[Face]:
        """Faces of the frame as it is shown (phones film sideways), in coded-frame pixels."""
        if not self.turns:
            return self.pipe.detect(image)
        upright = np.ascontiguousarray(np.rot90(image.pixels, self.turns))
        faces = self.pipe.detect(replace(image, pixels=upright))
        return [_face_to_coded(f, self.turns, image.size) for f in faces]

    def _chosen(self, image: LoadedImage, visible: list[Track], detected: bool) -> list[bool]:
        """--faces largest|center, decided on detection frames; a chosen track stays chosen."""
        if self.pipe.opt.faces in ("all", "match"):
            return [True] * len(visible)
        if detected and visible:
            picked = self.pipe.select(image, [t.face() for t in visible])
            for track, yes in zip(visible, picked):
                track.chosen = track.chosen or yes
                if not track.decided and not track.chosen:
                    track.reason = NOT_CHOSEN
        return [t.chosen for t in visible]

    def _decide(self, jobs: list[FaceJob], tracks: list[Track]) -> list[bool]:
        """Identity and pairing for a track's first face to restore; the track's decisions for
        the later ones (no identity network on them: once per track, not per frame). Returns,
        per face, whether it is its track's first (the one the guard checks)."""
        new = [(j, t) for j, t in zip(jobs, tracks) if j.restore and not t.decided]
        if new:
            self.pipe.pair([j for j, _ in new], self.gallery)
            self._revive_or_adopt(new)
        firsts = {id(j) for j, _ in new}
        for job, track in zip(jobs, tracks):
            if id(job) in firsts or not job.restore:  # not job.restore: --faces left it out
                continue
            job.match, job.reason = track.match, track.reason
            job.restore = track.restore
            job.embedding = None  # the guard already ran on the track's first face
            job.check_guard = False
        return [id(j) in firsts for j in jobs]

    def _revive_or_adopt(self, new: list[tuple[FaceJob, Track]]) -> None:
        from ented_cli.faces.identity import similarity
        from ented_cli.imaging.pixels import to_uint8

        if self.tracker.lost:  # the same face back after a moment away keeps its track
            missing = [j for j, _ in new if j.embedding is None]
            if missing:
                embedded = self.pipe.encoder.embed([to_uint8(j.crop) for j in missing])
                for job, emb in zip(missing, embedded):
                    job.embedding = emb
        warnings = []
        for job, track in new:
            track.decided = True
            if job.embedding is not None and self.tracker.revive(
                track, job.embedding, similarity, self.pipe.threshold
            ):
                job.match, job.reason, job.restore = track.match, track.reason, track.restore
                job.embedding = None
                continue
            track.match, track.embedding = job.match, job.embedding
            track.restore, track.reason = job.restore, job.reason
            warnings.append(job)
        for line in self.pipe.unmatched_warnings(self.source.display, warnings):
            if line not in self.report.warnings:
                self.report.warnings.append(line)

    def _flush(self, window: list) -> None:
        """Restore the faces of the window's frames in one restorer call, paste, send on."""
        frames = [f for f in window if isinstance(f, _Frame)]
        with self.clock("restore"):
            self.pipe.restore([f.work for f in frames], fidelity=self.fidelity)
        self._apply_guard(frames)
        for frame in frames:  # in order: each face is steadied against its previous frame
            for job, track in zip(frame.work.faces, frame.tracks):
                if job.restored is not None:
                    index = frame.picture.index
                    job.restored = self.steadier(track.id, index, job.crop, job.restored)
        for entry in window:
            if not isinstance(entry, _Frame):
                self._put(self.analysed, entry)
                continue
            with self.clock("paste"):
                out = self.pipe.paste(entry.work.image, entry.work.faces)
                for job, track in zip(entry.work.faces, entry.tracks):
                    if job.restored is None:
                        continue
                    track.restored_frames += 1
                    self.report.face_frames += 1
                    self.flicker.add(
                        track.id, entry.picture.index, job.crop, out.pixels, job.matrix
                    )
            self.report.frames += 1
            self._put(self.analysed, (entry.picture, out.pixels))
            entry.work = entry.picture.pixels = None

    def _apply_guard(self, frames: list[_Frame]) -> None:
        """A track whose first restored face the guard rejected (no sharper than the input, or
        less like its reference) keeps its input faces from then on (the guard ran once, on
        that first face)."""
        for frame in frames:
            for job, track, first in zip(frame.work.faces, frame.tracks, frame.first):
                if first and job.guard is not None:
                    track.guard, track.guard_reason = job.guard, job.guard_reason
                    if job.guard == "kept_input":
                        track.restore = False
        for frame in frames:
            for job, track in zip(frame.work.faces, frame.tracks):
                if track.guard == "kept_input":
                    job.restored = None

    def _finish_report(self) -> None:
        report = self.report
        tracks = self.tracker.finish()
        report.tracks = [_track_json(t) for t in tracks]
        restored = any(t.restored_frames for t in tracks)
        report.status = RESTORED if restored else (UNCHANGED if tracks else NO_FACE)
        report.flicker = self.flicker.result()
        seconds = self.clock.ms()
        order = ("decode", "detect", "track", "align", "match", "restore", "paste", "encode")
        report.timing_ms = {k: seconds.get(k, 0.0) for k in order}
        info = self.source.info
        first = (self.opt.start or 0.0) + info.start_time
        if report.frames:
            step = float(1 / info.rate) if info.rate else 0.0
            report.duration_s = round(self.last_time - first + step, 3)


class _Stopped(Exception):
    """The run stopped (an error elsewhere, Ctrl-C) while this thread waited on a queue."""


def _track_json(t: Track) -> dict:
    matched = t.match is not None and getattr(t.match, "person", None) is not None
    if t.restored_frames:
        mode = "reference" if matched else "blind"
    else:
        mode = "skipped"
    return {
        "id": t.id,
        "first_frame": t.first_frame,
        "last_frame": t.last_frame,
        "frames": t.frames,
        "restored_frames": t.restored_frames,
        "restored": t.restored_frames > 0,
        "mode": mode,
        "guard": t.guard,
        "guard_reason": t.guard_reason,
        "person": t.match.person if matched else None,
        "references": [str(r.path) for r in t.match.faces] if matched else [],
        "match_similarity": None if t.match is None else round(float(t.match.similarity), 4),
        "reason": t.reason,
    }


def _face_to_coded(face: Face, turns: int, size: tuple[int, int]) -> Face:
    """A face found in the frame turned `turns` quarter turns (np.rot90), in the coded frame."""
    corners = np.array([[face.box[0], face.box[1]], [face.box[2], face.box[3]]], np.float64)
    corners = _points_to_coded(corners, turns, size)
    box = np.concatenate([corners.min(0), corners.max(0)]).astype(np.float32)
    landmarks = _points_to_coded(face.landmarks, turns, size).astype(np.float32)
    return Face(box, face.score, landmarks)


def _points_to_coded(points: np.ndarray, turns: int, size: tuple[int, int]) -> np.ndarray:
    """Undo `np.rot90(frame, turns)` on (N, 2) points; `size` is the coded frame's (w, h)."""
    widths = [size[0] if i % 2 == 0 else size[1] for i in range(turns)]
    points = np.asarray(points, np.float64)
    for i in reversed(range(turns)):
        # one np.rot90 maps (x, y) of a frame w wide to (y, w - 1 - x); undo it
        x, y = points[:, 0], points[:, 1]
        points = np.stack([widths[i] - 1 - y, x], axis=1)
    return points
