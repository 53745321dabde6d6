"""Face regions on the aligned 256 crop, drawn from the alignment template's five points.

No face parser exists offline, so regions are ellipses around the template points (the crop is
aligned, so the points are where the template puts them). With d = the distance between the eyes
(63 px on the 256 crop):

    eyes   two ellipses centred on the eyes, 0.42 d wide, 0.26 d high (half-axes), brows excluded
    nose   an ellipse from below the eye line down past the nose tip, 0.3 d x 0.45 d
    mouth  an ellipse through both mouth corners, (half the corner distance + 0.15 d) x 0.3 d
    face   an ellipse from the forehead to the chin, 1.05 d x 1.4 d, centred 0.55 d below the eyes
    skin   the face ellipse minus the eyes, nose and mouth, each grown by 0.12 d
"""

from __future__ import annotations

import cv2
import numpy as np

from ented_cli.explain import REGIONS
from ented_cli.faces.align import template

__all__ = ["REGIONS", "region_masks"]


def _ellipse(mask: np.ndarray, centre, half_axes) -> None:
    scale = 16  # cv2.ellipse draws with 4 fractional bits: sub-pixel centres and axes
    c = tuple(int(round(v * scale)) for v in centre)
    a = tuple(int(round(v * scale)) for v in half_axes)
    cv2.ellipse(mask, c, a, 0, 0, 360, 1, -1, cv2.LINE_8, 4)


def _parts(size: int, grow: float = 0.0) -> dict[str, np.ndarray]:
    pts = template(size).astype(np.float64)
    left_eye, right_eye, nose, mouth_l, mouth_r = pts
    d = float(np.linalg.norm(right_eye - left_eye))
    g = grow * d
    out = {name: np.zeros((size, size), np.uint8) for name in ("eyes", "nose", "mouth", "face")}
    for eye in (left_eye, right_eye):
        _ellipse(out["eyes"], eye, (0.42 * d + g, 0.26 * d + g))
    eye_line = (left_eye[1] + right_eye[1]) / 2
    _ellipse(
        out["nose"], (nose[0], (eye_line + nose[1]) / 2 + 0.2 * d), (0.3 * d + g, 0.45 * d + g)
    )
    mouth = (mouth_l + mouth_r) / 2
    half_width = float(np.linalg.norm(mouth_r - mouth_l)) / 2
    _ellipse(out["mouth"], mouth, (half_width + 0.15 * d + g, 0.3 * d + g))
    _ellipse(
        out["face"], ((left_eye[0] + right_eye[0]) / 2, eye_line + 0.55 * d), (1.05 * d, 1.4 * d)
    )
    return out


def region_masks(size: int = 256, names: tuple[str, ...] = REGIONS) -> dict[str, np.ndarray]:
    """{name: size x size float32 mask in {0, 1}} for the requested regions, in `names` order."""
    unknown = [n for n in names if n not in REGIONS]
    if unknown:
        raise ValueError(f"unknown region {unknown[0]!r}; use one of {', '.join(REGIONS)}")
    parts = _parts(size)
    grown = _parts(size, grow=0.12)
    features = grown["eyes"] | grown["nose"] | grown["mouth"]
    parts["skin"] = parts["face"] & (1 - features)
    return {n: parts[n].astype(np.float32) for n in names}
