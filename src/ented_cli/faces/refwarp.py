"""Landmark-driven warp of a reference face onto an input face (both aligned crops).

Aligned crops share a 5-point template, but eyes, mouth and jaw still sit a few pixels apart
between two photos (pose, expression). The network should not have to discover that
correspondence by itself (TRAINING.md): dlib's 68-point predictor finds the same facial points
on both crops, a piecewise-affine map (Delaunay triangles over the points plus fixed frame
anchors) moves the reference onto the input's geometry, and a validity mask says where the warp
is meaningful (inside the landmark hull, feathered; down-weighted where the warp stretches).

Used at training time (data pairs) and at inference (the restorer), so both see the same warp.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
# Frame anchors (fractions of the crop side) that map to themselves: both crops are aligned to
# the same template, so the frame corresponds even where no landmark is.
_ANCHORS = np.array(
    [[x, y] for x in (0.0, 0.5, 1.0) for y in (0.0, 0.5, 1.0) if (x, y) != (0.5, 0.5)]
    + [[0.25, 0.0], [0.75, 0.0], [0.0, 0.25], [1.0, 0.25]],
    dtype=np.float64,
)
_GRID = 64  # the warp field is interpolated on this grid, then resized (smooth by construction)


def _predictor_path() -> Path:
    from ented_cli.faces.identity import _models_dir  # the folder of face_recognition_models' files

    return _models_dir() / PREDICTOR_FILE


class Landmarks68:
    """dlib's 68 facial points on aligned square crops (the face box follows the template)."""

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(_predictor_path()))

    def __call__(self, rgb_uint8: np.ndarray) -> np.ndarray:
        """(68, 2) float32 (x, y) points of an aligned H×W×3 RGB uint8 crop."""
        from ented_cli.faces.identity import face_box

        rgb = np.ascontiguousarray(rgb_uint8)
        if rgb.ndim == 2:
            rgb = np.ascontiguousarray(np.repeat(rgb[:, :, None], 3, axis=2))
        shape = self._predictor(rgb, self._dlib.rectangle(*face_box(rgb.shape[1])))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def to_uint8(rgb_float: np.ndarray) -> np.ndarray:
    """[0, 1] float RGB → uint8 RGB (what the landmark predictor takes)."""
    return np.clip(np.asarray(rgb_float) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def warp_field(
    ref_pts: np.ndarray, dst_pts: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Where each output pixel samples the reference, and how much to trust it there.

    Returns (map_xy size×size×2 float32 in reference pixels, mask size×size float32 in [0, 1]).
    The map is piecewise affine over the Delaunay triangles of the input's points (`dst_pts`).
    """
    import cv2
    from scipy.interpolate import LinearNDInterpolator

    anchors = _ANCHORS * (size - 1)
    dst = np.concatenate([np.asarray(dst_pts, np.float64), anchors])
    src = np.concatenate([np.asarray(ref_pts, np.float64), anchors])
    interp = LinearNDInterpolator(dst, src)
    g = (np.arange(_GRID) + 0.5) * size / _GRID - 0.5
    gx, gy = np.meshgrid(g, g)
    coarse = interp(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(_GRID, _GRID, 2)
    identity = np.stack([gx, gy], -1)
    coarse = np.where(np.isfinite(coarse), coarse, identity).astype(np.float32)
    # Resize the displacement, not the map: border clamping then costs nothing at the edges.
    full = np.arange(size, dtype=np.float32)
    displacement = cv2.resize(
        coarse - identity.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR
    )
    map_xy = np.stack(np.meshgrid(full, full), -1) + displacement

    # Valid inside the landmark hull (raised to cover the forehead), feathered at its edge.
    pts = np.asarray(dst_pts, np.float32)
    brows = pts[17:27].copy()
    eye_y = pts[36:48, 1].mean()
    brows[:, 1] -= 0.35 * (pts[8, 1] - eye_y)  # a forehead band above the brows
    hull = cv2.convexHull(np.concatenate([pts, brows]).astype(np.float32))
    mask = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1.0)
    feather = max(1.0, size / 64)
    mask = cv2.GaussianBlur(mask, (0, 0), feather * 2)
    # Strong local stretching (pose, expression change) makes the warped detail unreliable.
    disp = np.linalg.norm(coarse - identity, axis=-1).astype(np.float32)
    stretch = np.abs(cv2.Laplacian(disp, cv2.CV_32F, ksize=3)) / (size / _GRID)
    stretch = cv2.GaussianBlur(stretch, (0, 0), 2.0)  # per-region, not per-triangle-edge
    trust = np.exp(-cv2.resize(stretch, (size, size), interpolation=cv2.INTER_LINEAR))
    return map_xy, (mask * trust).astype(np.float32)


def warp_reference(
    ref_rgb: np.ndarray, ref_pts: np.ndarray, dst_pts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The reference (H×W×C float) moved onto the input's geometry, and its validity mask."""
    import cv2

    size = ref_rgb.shape[0]
    map_xy, mask = warp_field(ref_pts, dst_pts, size)
    warped = cv2.remap(
        np.ascontiguousarray(ref_rgb, dtype=np.float32),
        map_xy[..., 0],
        map_xy[..., 1],
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    return warped, mask


def pose_distance(a_pts: np.ndarray, b_pts: np.ndarray) -> float:
    """Mean landmark distance (pixels) after removing translation: how far apart two faces'
    geometries are. The restorer warps the closest of several references."""
    a = np.asarray(a_pts, np.float64)
    b = np.asarray(b_pts, np.float64)
    return float(np.linalg.norm((a - a.mean(0)) - (b - b.mean(0)), axis=1).mean())


def guide_array(ref_rgb: np.ndarray, ref_pts: np.ndarray, face_pts: np.ndarray) -> np.ndarray:
    """H×W×4 float32: the reference ([0, 1] RGB) warped onto the face's points, and its mask.
    The generator's `guide` input (after the RGB is mapped to [-1, 1])."""
    warped, mask = warp_reference(ref_rgb, ref_pts, face_pts)
    return np.concatenate([warped, mask[..., None]], axis=2)
