"""FFHQ-style face alignment: 5-point similarity onto the template, warping and its exact inverse.

Coordinates follow OpenCV: pixel (i, j) has its centre at x = j, y = i. A "matrix" is a 2x3
affine (float64) that maps image coordinates to crop coordinates, as `cv2.warpAffine` takes it.
"""

from __future__ import annotations

import cv2
import numpy as np

# Left eye, right eye, nose tip, left and right mouth corner (image-left first) in a 512 crop.
TEMPLATE_512 = np.array(
    [
        [192.98, 239.95],
        [318.90, 240.19],
        [256.63, 314.02],
        [201.26, 371.41],
        [313.09, 371.15],
    ],
    dtype=np.float64,
)


def template(size: int = 256) -> np.ndarray:
    """The 5-point template for a `size` x `size` crop, (5, 2) float32."""
    return (TEMPLATE_512 * (size / 512.0)).astype(np.float32)


def similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) src -> dst.

    Umeyama (1991): with centred point sets, the optimal rotation comes from the SVD of their
    cross-covariance; forcing det(R) = +1 rules out a mirror image of the face.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("landmarks are degenerate (all points coincide)")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ fix @ vt
    scale = np.trace(np.diag(sig) @ fix) / var_s
    trans = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, trans[:, None]])


ALIGN_METHODS = ("lstsq", "lmeds")


def estimate_alignment(landmarks: np.ndarray, size: int = 256, method: str = "lstsq") -> np.ndarray:
    """2x3 similarity mapping the image onto the `size` template from 5 landmarks (5, 2).

    "lstsq" (default) fits all five points (Umeyama): smooth and stable under landmark noise.
    "lmeds" reproduces the tool that cut the shared training crops
    (`cv2.estimateAffinePartial2D(..., method=cv2.LMEDS)`); on about 1 face in 8 it fits three
    points exactly and ignores two (a turned head, a wide smile), so the crops differ from lstsq.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    target = template(size).astype(np.float64)
    if method == "lmeds":
        matrix, _ = cv2.estimateAffinePartial2D(landmarks, target, method=cv2.LMEDS)
        if matrix is not None:
            return matrix.astype(np.float64)
    elif method != "lstsq":
        raise ValueError(f"unknown alignment method {method!r}; use one of {ALIGN_METHODS}")
    return similarity_lstsq(landmarks, target)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Exact inverse of a 2x3 affine (float64)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    a_inv = np.linalg.inv(matrix[:, :2])
    return np.hstack([a_inv, -a_inv @ matrix[:, 2:]])


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine that applies `inner` first, then `outer`."""
    outer = np.asarray(outer, dtype=np.float64)
    inner = np.asarray(inner, dtype=np.float64)
    return np.hstack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2:] + outer[:, 2:]])


def resize_affine(scale_x: float, scale_y: float) -> np.ndarray:
    """Coordinates before -> after `cv2.resize` by these factors (pixel centres are preserved)."""
    return np.array(
        [[scale_x, 0.0, 0.5 * (scale_x - 1.0)], [0.0, scale_y, 0.5 * (scale_y - 1.0)]],
        dtype=np.float64,
    )


def scale_affine(matrix: np.ndarray, scale: float) -> np.ndarray:
    """The same crop taken from the image resized by `scale` (e.g. the frame after --upscale)."""
    return compose_affine(matrix, invert_affine(resize_affine(scale, scale)))


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (N, 2) points."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


# Below this scale a warp pre-reduces its source with area averaging (see warp_affine).
AREA_BELOW_SCALE = 0.75


def warp_affine(
    image: np.ndarray,
    matrix: np.ndarray,
    dsize: tuple[int, int],
    border_mode: int = cv2.BORDER_REFLECT_101,
    border_value: float | tuple = 0.0,
) -> np.ndarray:
    """`cv2.warpAffine` that does not alias when it shrinks, for any dtype and channel count.

    `dsize` is (width, height). When the warp shrinks by more than `AREA_BELOW_SCALE`, the part
    of the image it reads is first reduced with area averaging to the target scale, then warped
    with bicubic interpolation; a plain bicubic warp would skip pixels and alias fine texture
    (hair, pores). Milder shrinks stay a single bicubic warp, which is sharper.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if image.ndim == 3 and image.shape[2] > 4:  # OpenCV warps at most 4 channels at once
        parts = [
            warp_affine(image[:, :, i : i + 4], matrix, dsize, border_mode, border_value)
            for i in range(0, image.shape[2], 4)
        ]
        return np.concatenate([p if p.ndim == 3 else p[:, :, None] for p in parts], axis=2)
    dtype = image.dtype
    if dtype not in _CV_DTYPES:  # e.g. bool, int8, int32, float16: warp in float64, cast back
        image = image.astype(np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < AREA_BELOW_SCALE:
        image, matrix = _shrink_source(image, matrix, dsize, scale)
    if border_mode == cv2.BORDER_REFLECT_101 and min(image.shape[:2]) < 2:
        # OpenCV loops forever reflecting (101) a side of one pixel, e.g. the sliver of a photo
        # left when a face lies mostly outside it; plain reflection is the same picture there.
        border_mode = cv2.BORDER_REFLECT
    out = cv2.warpAffine(
        image,
        matrix,
        dsize,
        flags=cv2.INTER_CUBIC,
        borderMode=border_mode,
        borderValue=border_value,
    )
    if out.ndim == 2 and image.ndim == 3:  # OpenCV drops a single channel axis
        out = out[:, :, None]
    return _cast_back(out, dtype)


# Pixel types cv2.resize and cv2.warpAffine accept directly.
_CV_DTYPES = (
    np.dtype(np.uint8),
    np.dtype(np.uint16),
    np.dtype(np.int16),
    np.dtype(np.float32),
    np.dtype(np.float64),
)


def _cast_back(out: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if out.dtype == dtype:
        return out
    if dtype == np.bool_:
        return out > 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(dtype)
    return out.astype(dtype)


def _shrink_source(
    image: np.ndarray, matrix: np.ndarray, dsize: tuple[int, int], scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Area-reduce the region the warp reads; return it with the matrix adjusted to match."""
    height, width = image.shape[:2]
    w, h = dsize
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])
    src = transform_points(corners, invert_affine(matrix))
    margin = 4.0 / scale  # room for the bicubic kernel after the reduction
    x0 = int(np.clip(np.floor(src[:, 0].min() - margin), 0, width))
    x1 = int(np.clip(np.ceil(src[:, 0].max() + margin), 0, width))
    y0 = int(np.clip(np.floor(src[:, 1].min() - margin), 0, height))
    y1 = int(np.clip(np.ceil(src[:, 1].max() + margin), 0, height))
    if x1 - x0 < 2 or y1 - y0 < 2:  # the crop lies outside the image: only border to sample
        return image, matrix
    rw, rh = max(round((x1 - x0) * scale), 1), max(round((y1 - y0) * scale), 1)
    roi = image[y0:y1, x0:x1]
    small = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
    if small.ndim == 2 and roi.ndim == 3:
        small = small[:, :, None]
    # image coords -> ROI coords -> reduced ROI coords; the warp must undo that first.
    to_small = compose_affine(
        resize_affine(rw / (x1 - x0), rh / (y1 - y0)),
        np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]]),
    )
    return small, compose_affine(matrix, invert_affine(to_small))


def warp_face(image: np.ndarray, matrix: np.ndarray, size: int = 256) -> np.ndarray:
    """The aligned `size` x `size` crop; outside the photo is filled by reflection."""
    return warp_affine(image, matrix, (size, size), cv2.BORDER_REFLECT_101)


def unwarp_face(crop: np.ndarray, matrix: np.ndarray, frame_shape: tuple[int, int]) -> np.ndarray:
    """Put a crop back into frame coordinates (frame_shape = (height, width)); 0 outside it."""
    height, width = frame_shape[:2]
    return warp_affine(crop, invert_affine(matrix), (width, height), cv2.BORDER_CONSTANT, 0.0)
