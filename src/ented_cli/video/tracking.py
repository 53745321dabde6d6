"""Faces followed from frame to frame, so a video is restored as one scene, not as photos.

The detector runs every N frames (`--detect-every`). In between, each face is carried by optical
flow: corners inside its box are followed with pyramidal Lucas-Kanade (checked forwards and
backwards) and a similarity transform fitted to them moves the face's five landmarks. A
detection is given to the track whose moved box overlaps it most (IoU); a detection that
overlaps no track starts a new one, or revives a track lost a moment ago when the face is the
same person (identity, checked by the runner: `FaceTracker.revive`).

Landmarks then go through a One-Euro filter (Casiez, Roussel and Vogel, CHI 2012): a low-pass
filter whose cut-off rises with speed, so a still face does not jitter and a moving one does not
lag. Speeds are measured in face sizes per second, so one setting fits small and large faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from ented_cli.faces.align import estimate_alignment
from ented_cli.faces.detect import Face, iou

# One-Euro settings (speeds in face sizes per second): 1 Hz when still, +1 Hz per 0.1 face
# size/s. On test clips the landmarks' frame-to-frame jitter is a quarter of the detector's own
# on a still face, and a face crossing the frame at 1.5 face sizes/s lags by a quarter frame.
MIN_CUTOFF_HZ = 1.0
BETA = 10.0
DERIVATIVE_CUTOFF_HZ = 1.0
# A detection belongs to a track whose box it overlaps at least this much.
MATCH_IOU = 0.3
# Detections a track may miss before it ends (it is not restored while it misses).
MAX_MISSES = 2
# Seconds a lost track waits to be revived by the same face (identity) before it is forgotten.
REVIVE_S = 5.0
# Optical flow works on frames at most this wide (pixels); finer adds time, not accuracy.
FLOW_SIDE = 640
# A face carried by flow must still look like itself: the normalised correlation of its small
# aligned gray crop with the one taken at its last detection. Below this the flow followed
# something else (the face left, was covered, turned away): the face is not restored in this
# frame, and the detector looks again on the next one.
MIN_LIKENESS = 0.6
_LIKENESS_SIDE = 48
_MIN_POINTS = 6  # flow points a frame-to-frame move needs


def _alpha(dt: float, cutoff: np.ndarray | float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuro:
    """The One-Euro filter on an array of points (N x 2), one cut-off per point."""

    def __init__(
        self,
        min_cutoff: float = MIN_CUTOFF_HZ,
        beta: float = BETA,
        d_cutoff: float = DERIVATIVE_CUTOFF_HZ,
    ):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t = 0.0

    def __call__(self, x: np.ndarray, t: float, scale: float) -> np.ndarray:
        """Filtered `x` at time `t` (s); `scale` is the face size in the units of `x`."""
        x = np.asarray(x, np.float64)
        if self.x is None:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self.t if t > self.t else 1 / 30
        self.t = t
        dx = (x - self.x) / dt
        self.dx = self.dx + _alpha(dt, self.d_cutoff) * (dx - self.dx)
        speed = np.linalg.norm(self.dx, axis=-1, keepdims=True) / max(scale, 1e-6)
        a = _alpha(dt, self.min_cutoff + self.beta * speed)
        self.x = self.x + a * (x - self.x)
        return self.x.copy()


@dataclass
class Track:
    """One face across frames. `raw` is its latest estimate (a detection, or moved by flow);
    `landmarks` the smoothed points the face is aligned with."""

    id: int
    box: np.ndarray  # x0, y0, x1, y1 (moved with the face)
    score: float
    raw: np.ndarray  # (5, 2) landmarks before smoothing
    first_frame: int
    last_frame: int
    landmarks: np.ndarray = field(default=None)  # (5, 2) smoothed
    misses: int = 0  # detections in a row that did not find it
    flow_ok: bool = True  # the last frame-to-frame move succeeded
    frames: int = 0  # frames it was shown in (restored or not)
    smoother: OneEuro = field(default_factory=OneEuro)
    # Decided once per track by the runner (identity, pairing, guard): the FaceJob fields.
    match: object = None
    embedding: np.ndarray | None = None
    restore: bool = True
    reason: str | None = None
    guard: str | None = None
    guard_reason: str | None = None
    decided: bool = False  # identity and reference person settled (on its first face restored)
    chosen: bool = False  # --faces largest|center picked it (sticky)
    restored_frames: int = 0
    lost_at: float = 0.0
    look: np.ndarray | None = None  # its small aligned gray crop at the last detection

    @property
    def visible(self) -> bool:
        """Shown (and restored) in this frame: confirmed by the last detection, moved by flow."""
        return self.misses == 0 and self.flow_ok

    @property
    def size(self) -> float:
        w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
        return math.sqrt(max(float(w * h), 1.0))

    def face(self) -> Face:
        """This frame's face for the pipeline, with the smoothed landmarks."""
        return Face(self.box.astype(np.float32), self.score, self.landmarks.astype(np.float32))


class FaceTracker:
    """`tracks = tracker.step(frame_bgr, t, detections)` once per frame, in order; `detections`
    is None on frames the detector skipped. Returns the tracks alive after this frame."""

    def __init__(
        self,
        match_iou: float = MATCH_IOU,
        max_misses: int = MAX_MISSES,
        min_cutoff: float = MIN_CUTOFF_HZ,
        beta: float = BETA,
    ):
        self.match_iou, self.max_misses = match_iou, max_misses
        self.min_cutoff, self.beta = min_cutoff, beta
        self.tracks: list[Track] = []
        self.lost: list[Track] = []
        self.ended: list[Track] = []  # every finished track, for the report
        self._next_id = 0
        self._prev: np.ndarray | None = None
        self._scale = 1.0
        self.frame = -1
        self.started: list[Track] = []  # tracks begun on this frame: they need an identity
        self.want_detection = False  # a face was lost by the flow: detect on the next frame

    def step(self, frame: np.ndarray, t: float, detections: list[Face] | None) -> list[Track]:
        self.frame += 1
        gray = self._gray(frame)
        self.want_detection = False
        if self._prev is not None:
            for track in self.tracks:
                self._follow(track, self._prev, gray)
        self._prev = gray
        self.started = [] if detections is None else self._associate(detections, t)
        for track in self.tracks:
            if track.misses == 0 and (detections is not None or track.look is None):
                track.look = self._look(gray, track.raw)
        for track in self.tracks:
            track.landmarks = track.smoother(track.raw, t, track.size)
            if track.visible:
                track.frames += 1
                track.last_frame = self.frame
        return self.tracks

    def revive(self, track: Track, embedding: np.ndarray, similarity, threshold: float) -> bool:
        """If `track` (new on this frame) is the same person as a track lost a moment ago, it
        takes over that track's id and decisions (reference person, guard) and returns True."""
        best, best_sim = None, threshold
        for old in self.lost:
            if old.embedding is None:
                continue
            sim = float(similarity(embedding, old.embedding))
            if sim >= best_sim:
                best, best_sim = old, sim
        if best is None:
            return False
        self.lost.remove(best)
        self.ended.remove(best)
        track.id, track.first_frame = best.id, best.first_frame
        track.frames += best.frames
        track.restored_frames = best.restored_frames
        track.match, track.embedding = best.match, best.embedding
        track.restore, track.reason, track.guard = best.restore, best.reason, best.guard
        track.guard_reason = best.guard_reason
        track.decided, track.chosen = True, track.chosen or best.chosen
        return True

    def finish(self) -> list[Track]:
        """Every track of the video, in order of appearance."""
        done = {t.id: t for t in [*self.ended, *self.tracks]}
        return sorted(done.values(), key=lambda t: (t.first_frame, t.id))

    # -- steps ---------------------------------------------------------------------------------
    def _gray(self, frame: np.ndarray) -> np.ndarray:
        if frame.dtype != np.uint8:
            frame = (frame >> 8).astype(np.uint8)
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        longest = max(gray.shape[:2])
        self._scale = min(1.0, FLOW_SIDE / longest)
        if self._scale < 1.0:
            size = (round(gray.shape[1] * self._scale), round(gray.shape[0] * self._scale))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        return gray

    def _follow(self, track: Track, prev: np.ndarray, cur: np.ndarray) -> None:
        """Move `track` from the previous frame to this one by optical flow."""
        move = _flow_move(prev, cur, track.box * self._scale)
        track.flow_ok = move is not None
        if move is None:
            self.want_detection = True
            return
        s = self._scale  # the move in full-frame pixels: S^-1 · M · S
        move = move.copy()
        move[:, 2] /= s
        track.raw = track.raw @ move[:, :2].T + move[:, 2]
        centre = (track.box[:2] + track.box[2:]) / 2
        half = (track.box[2:] - track.box[:2]) / 2 * math.sqrt(abs(np.linalg.det(move[:, :2])))
        centre = move[:, :2] @ centre + move[:, 2]
        track.box = np.concatenate([centre - half, centre + half])
        look = self._look(cur, track.raw)
        if track.look is not None and (
            look is None or float((look * track.look).sum()) < MIN_LIKENESS
        ):
            track.flow_ok = False
            self.want_detection = True

    def _look(self, gray: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
        """The face's small aligned gray crop, zero-mean and unit-norm (None if flat)."""
        try:
            matrix = estimate_alignment(landmarks * self._scale, _LIKENESS_SIDE)
        except ValueError:  # degenerate landmarks
            return None
        size = (_LIKENESS_SIDE, _LIKENESS_SIDE)
        crop = cv2.warpAffine(gray, matrix, size, flags=cv2.INTER_LINEAR).astype(np.float32)
        crop -= crop.mean()
        norm = float(np.linalg.norm(crop))
        return None if norm < 1e-3 else crop / norm

    def _associate(self, detections: list[Face], t: float) -> list[Track]:
        """Give each detection to the track it overlaps most; start tracks for the others; end
        tracks that missed too many detections. Returns the new tracks."""
        pairs = []
        for i, det in enumerate(detections):
            for j, track in enumerate(self.tracks):
                overlap = float(iou(det.box.astype(np.float64), track.box[None])[0])
                if overlap >= self.match_iou:
                    pairs.append((overlap, i, j))
        used_d, used_t = set(), set()
        for _, i, j in sorted(pairs, reverse=True):
            if i in used_d or j in used_t:
                continue
            used_d.add(i)
            used_t.add(j)
            det, track = detections[i], self.tracks[j]
            track.raw = det.landmarks.astype(np.float64)
            track.box, track.score = det.box.astype(np.float64), float(det.score)
            track.misses, track.flow_ok = 0, True
        kept = []
        for j, track in enumerate(self.tracks):
            if j not in used_t:
                track.misses += 1
                if track.misses > self.max_misses:
                    track.lost_at = t
                    self.lost.append(track)
                    self.ended.append(track)
                    continue
            kept.append(track)
        self.lost = [old for old in self.lost if t - old.lost_at <= REVIVE_S]
        new = []
        for i, det in enumerate(detections):
            if i in used_d:
                continue
            track = Track(
                id=self._next_id,
                box=det.box.astype(np.float64),
                score=float(det.score),
                raw=det.landmarks.astype(np.float64),
                first_frame=self.frame,
                last_frame=self.frame,
                smoother=OneEuro(self.min_cutoff, self.beta),
            )
            self._next_id += 1
            new.append(track)
        self.tracks = kept + new
        return new


def _flow_move(prev: np.ndarray, cur: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """The similarity transform (2 x 3) that carries the face in `box` from `prev` to `cur`, or
    None when too few points can be followed (the face left, or was covered)."""
    h, w = prev.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * 0.1, (y1 - y0) * 0.1  # inside the box: the face, not the background
    x0, y0 = int(max(x0 + mx, 0)), int(max(y0 + my, 0))
    x1, y1 = int(min(x1 - mx, w)), int(min(y1 - my, h))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    spacing = max(2.0, (x1 - x0) / 16)
    points = cv2.goodFeaturesToTrack(prev[y0:y1, x0:x1], 80, 0.01, spacing, blockSize=5)
    if points is None or len(points) < _MIN_POINTS:
        return None
    points = points.reshape(-1, 2) + np.array([x0, y0], np.float32)
    lk = {"winSize": (21, 21), "maxLevel": 3}
    moved, ok, _ = cv2.calcOpticalFlowPyrLK(prev, cur, points, None, **lk)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(cur, prev, moved, None, **lk)
    good = (ok.ravel() == 1) & (ok_back.ravel() == 1)
    good &= np.linalg.norm(back - points, axis=1) < 1.0
    if good.sum() < _MIN_POINTS:
        return None
    matrix, _ = cv2.estimateAffinePartial2D(
        points[good], moved[good], method=cv2.RANSAC, ransacReprojThreshold=1.0
    )
    return None if matrix is None else matrix.astype(np.float64)
