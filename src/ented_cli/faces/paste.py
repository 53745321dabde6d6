"""Paste restored faces back into the photo: soft face mask, colour matching, seamless blending.

Frames and crops are float32 BGR in [0, 1]; a crop's matrix maps frame -> crop (see align.py).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from ented_cli.faces.align import (
    compose_affine,
    invert_affine,
    transform_points,
    warp_affine,
    warp_face,
)

# The face region in crop units (fractions of the crop side) on the FFHQ-style template: an
# ellipse that covers forehead to chin and cheek to cheek. Outside it the weight falls with a
# smoothstep to 0 at `1 + MASK_FEATHER` times the ellipse radii, which stays at least ~5 % of the
# crop side inside every border, so a reflect-padded crop border can never show in the photo.
MASK_CENTRE = (0.5, 0.52)
MASK_RADII = (0.34, 0.36)
MASK_FEATHER = 0.2
# Chroma spread may be rescaled at most this much by colour matching (guards against a flat or
# grey original turning a colour restoration into noise amplification).
CHROMA_STD_RANGE = (0.5, 2.0)
# A face bigger in the photo than the crop loses the photo's finest detail when the crop is scaled
# back up. Detail finer than the crop can hold (a high-pass of the photo, Gaussian σ = this many
# crop pixels) is added back, so a sharp 400 px face never comes out softer than it went in.
DETAIL_SIGMA_CROP_PX = 0.5


@lru_cache(maxsize=8)
def _face_mask(size: int) -> np.ndarray:
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    u = (coords[None, :] - MASK_CENTRE[0]) / MASK_RADII[0]
    v = (coords[:, None] - MASK_CENTRE[1]) / MASK_RADII[1]
    r = np.sqrt(u**2 + v**2)
    t = np.clip((1.0 + MASK_FEATHER - r) / MASK_FEATHER, 0.0, 1.0)
    mask = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    mask.setflags(write=False)
    return mask


def face_mask(size: int = 256) -> np.ndarray:
    """Blend weight in crop space, float32 (size, size): 1 on the face, smoothly 0 near the border.

    The feather is a fixed fraction of the crop, so it scales with the face in the photo.
    """
    return _face_mask(int(size)).copy()


def _weighted_stats(lab: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = weights.reshape(-1, 1).astype(np.float64)
    total = max(float(w.sum()), 1e-9)
    values = lab.reshape(-1, 3).astype(np.float64)
    mean = (values * w).sum(0) / total
    std = np.sqrt(((values - mean) ** 2 * w).sum(0) / total)
    return mean, std


def match_colour(restored: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give the restored crop the original crop's colour balance and exposure, inside `mask`.

    In Lab, each channel's mask-weighted mean is moved to the original's (exposure, white
    balance) and the chroma channels' spread is scaled to the original's (saturation). The
    lightness spread is left alone: a blurred original has less contrast, and copying that
    would undo the restoration.
    """
    restored = np.clip(restored.astype(np.float32, copy=False), 0.0, 1.0)
    original = np.clip(original.astype(np.float32, copy=False), 0.0, 1.0)
    lab_r = cv2.cvtColor(restored, cv2.COLOR_BGR2Lab)
    lab_o = cv2.cvtColor(original, cv2.COLOR_BGR2Lab)
    mean_r, std_r = _weighted_stats(lab_r, mask)
    mean_o, std_o = _weighted_stats(lab_o, mask)
    gain = np.ones(3)
    gain[1:] = np.clip(std_o[1:] / np.maximum(std_r[1:], 1e-6), *CHROMA_STD_RANGE)
    lab = (lab_r - mean_r) * gain + mean_o
    out = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2BGR)
    return np.clip(out, 0.0, 1.0)


def paste_faces(
    frame: np.ndarray,
    crops: list[np.ndarray],
    matrices: list[np.ndarray],
    colour_match: bool = True,
    originals: list[np.ndarray] | None = None,
    keep_detail: bool = True,
    origin: tuple[int, int] = (0, 0),
    frame_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """A new frame with every crop blended in through its warped face mask.

    `originals` are the aligned crops the restorations came from (cut from `frame` when not
    given); colour matching uses them. `keep_detail` adds back the photo's detail that is finer
    than the crop's pixels (faces larger than the crop). Overlapping faces are averaged by their mask weights,
    so the result does not depend on the order of the faces. Pixels that no mask reaches are
    bit-identical to `frame`.

    `frame` may be a window of a larger photo (see `faces_box`): `origin` is its top-left corner
    and `frame_size` the photo's (width, height); `matrices` map photo coordinates. The window
    must hold every face's box; the result is then that window of the whole-photo result, bit
    for bit, without a float copy of the whole photo.
    """
    if len(crops) != len(matrices):
        raise ValueError(f"{len(crops)} crops but {len(matrices)} matrices")
    if originals is not None and len(originals) != len(crops):
        raise ValueError(f"{len(crops)} crops but {len(originals)} originals")
    out = frame.copy()
    if not crops:
        return out
    ox, oy = origin
    width, height = frame_size or (frame.shape[1], frame.shape[0])
    if (ox, oy) != (0, 0) and colour_match and originals is None:
        raise ValueError("a window of a photo needs `originals` for colour matching")

    pieces = []  # (x0, y0, weight (h, w), colour (h, w, 3)) per face, in frame pixels
    for k, (crop, matrix) in enumerate(zip(crops, matrices)):
        size = crop.shape[0]
        mask = _face_mask(size)
        if colour_match:
            original = originals[k] if originals is not None else warp_face(frame, matrix, size)
            crop = match_colour(crop, original, mask)
        placed = _placed_weight(matrix, size, width, height)
        if placed is None:
            continue
        (x0, y0, x1, y1), to_roi, weight = placed
        if x0 < ox or y0 < oy or x1 > ox + frame.shape[1] or y1 > oy + frame.shape[0]:
            raise ValueError(f"face box {(x0, y0, x1, y1)} is not inside the window at {origin}")
        dsize = (x1 - x0, y1 - y0)
        colour = warp_affine(crop.astype(np.float32), to_roi, dsize, cv2.BORDER_CONSTANT, 0.0)
        frame_px_per_crop_px = 1.0 / np.sqrt(abs(np.linalg.det(matrix[:, :2])))
        if keep_detail and frame_px_per_crop_px > 1.0:
            roi = np.asarray(frame[y0 - oy : y1 - oy, x0 - ox : x1 - ox], np.float32)
            sigma = DETAIL_SIGMA_CROP_PX * frame_px_per_crop_px
            detail = cv2.GaussianBlur(roi, (0, 0), sigma)
            np.subtract(roi, detail, out=detail)  # in place: a big face's box can be 50 MP
            colour += detail
            del detail
        pieces.append((x0, y0, weight, colour))
    if not pieces:
        return out

    ux0 = min(p[0] for p in pieces)
    uy0 = min(p[1] for p in pieces)
    ux1 = max(p[0] + p[2].shape[1] for p in pieces)
    uy1 = max(p[1] + p[2].shape[0] for p in pieces)
    if len(pieces) == 1:  # the sums below, without the copies (the same values, bit for bit)
        _, _, weight_sum, colour_sum = pieces[0]
        colour_sum *= weight_sum[:, :, None]
        uncovered = 1.0 - weight_sum
    else:
        weight_sum = np.zeros((uy1 - uy0, ux1 - ux0), np.float32)
        colour_sum = np.zeros((uy1 - uy0, ux1 - ux0, 3), np.float32)
        uncovered = np.ones((uy1 - uy0, ux1 - ux0), np.float32)  # prod(1 - w): the union's alpha
        for x0, y0, weight, colour in pieces:
            sl = (
                slice(y0 - uy0, y0 - uy0 + weight.shape[0]),
                slice(x0 - ux0, x0 - ux0 + weight.shape[1]),
            )
            weight_sum[sl] += weight
            colour *= weight[:, :, None]
            colour_sum[sl] += colour
            uncovered[sl] *= 1.0 - weight
    del pieces

    # region * (1 - alpha) + face * alpha, computed in place over the whole box. Where no mask
    # reaches, alpha is 0 and the face 0, so those pixels keep their value exactly.
    region = out[uy0 - oy : uy1 - oy, ux0 - ox : ux1 - ox]
    alpha = np.subtract(1.0, uncovered, out=uncovered)
    weight_sum[weight_sum == 0] = 1.0  # untouched pixels: 0 / 1, not 0 / 0
    face = np.divide(colour_sum, weight_sum[:, :, None], out=colour_sum)
    np.clip(face, 0.0, 1.0, out=face)
    region *= (1.0 - alpha)[:, :, None]
    face *= alpha[:, :, None]
    region += face
    return out


def faces_box(
    matrices: list[np.ndarray], sizes: list[int], frame_size: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """The smallest box (x0, y0, x1, y1) of a (width, height) photo that `paste_faces` can
    change when pasting crops of `sizes` with `matrices`; None when no face lands in it."""
    width, height = frame_size
    boxes = [_frame_roi(m, s, width, height) for m, s in zip(matrices, sizes)]
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def pasted_mask(matrix: np.ndarray, size: int, frame_shape: tuple[int, int]) -> np.ndarray:
    """One face's blend weight over the whole frame (float32, frame_shape = (height, width)),
    exactly as `paste_faces` lays it in: where it is 0 for every face, the frame is untouched.

    (`unwarp_face(face_mask(size), ...)` is close but not bit-equal: the paste warps only the
    face's box of the frame, and for faces smaller than the crop the area reduction before the
    warp then starts from another pixel, which moves the feather's values by up to ~0.02.)
    """
    height, width = frame_shape[:2]
    out = np.zeros((height, width), np.float32)
    placed = _placed_weight(matrix, size, width, height)
    if placed is not None:
        (x0, y0, x1, y1), _, weight = placed
        out[y0:y1, x0:x1] = weight
    return out


def _placed_weight(
    matrix: np.ndarray, size: int, width: int, height: int
) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray] | None:
    """The frame box a face lands in, the crop -> box affine, and the face mask warped into it
    (clipped to [0, 1]: bicubic overshoots a little); None when the face misses the frame."""
    roi = _frame_roi(matrix, size, width, height)
    if roi is None:
        return None
    x0, y0, x1, y1 = roi
    # crop -> frame, then shifted so that the box's corner is the origin
    to_roi = compose_affine(np.array([[1.0, 0, -x0], [0, 1.0, -y0]]), invert_affine(matrix))
    weight = warp_affine(_face_mask(size), to_roi, (x1 - x0, y1 - y0), cv2.BORDER_CONSTANT, 0.0)
    return roi, to_roi, np.clip(weight, 0.0, 1.0)


def _frame_roi(
    matrix: np.ndarray, size: int, width: int, height: int
) -> tuple[int, int, int, int] | None:
    """Integer frame box (x0, y0, x1, y1) that holds the warped crop, clipped to the frame."""
    corners = np.array(
        [[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]]
    )
    pts = transform_points(corners, invert_affine(matrix))
    x0 = int(np.clip(np.floor(pts[:, 0].min()) - 2, 0, width))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()) + 3, 0, width))
    y0 = int(np.clip(np.floor(pts[:, 1].min()) - 2, 0, height))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()) + 3, 0, height))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1
