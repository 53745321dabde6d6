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

# The face outline on the FFHQ-style template, in crop units (fractions of the crop side), image-
# left first: dlib's 17 jaw points averaged over 204 London and 260 CelebA aligned crops and
# made left-right symmetric (scripts/face_outline.py), closed over the forehead by a half-ellipse
# from jaw point 0 to point 16 whose top is `FOREHEAD_TOP` (rule of thirds: hairline to brows as
# far as brows to the base of the nose, 0.27 of the crop, above the brows at 0.385; a little lower
# so a tilted head does not reach the background). The outline stays 7.5 % of the crop side or
# more inside every border, so a reflect-padded crop border can never show in the photo.
JAW_OUTLINE = (
    (0.222, 0.483),
    (0.226, 0.557),
    (0.236, 0.629),
    (0.250, 0.701),
    (0.274, 0.769),
    (0.315, 0.828),
    (0.368, 0.877),
    (0.430, 0.914),
    (0.500, 0.925),
    (0.570, 0.914),
    (0.632, 0.877),
    (0.685, 0.828),
    (0.726, 0.769),
    (0.750, 0.701),
    (0.764, 0.629),
    (0.774, 0.557),
    (0.778, 0.483),
)
FOREHEAD_TOP = 0.15
# The blend weight is 1 deeper than this inside the outline and falls to 0 on it (a smoothstep of
# the distance): the feather lies on the face, so nothing of the network's background (a lighter
# halo on a dark backdrop, smeared stars of a flag) is blended into the photo around the head.
MASK_FEATHER = 0.09
# Grain at the seam. A restored face is clean; a noisy photo around it is not, and the change of
# grain across the feather reads as a seam. Where the photo around the face (a ring this wide
# outside the outline) is noisier than the restored face near its edge, the restored face's finest
# detail (a high-pass, Gaussian sigma `GRAIN_SIGMA_PX` photo pixels) is replaced by the photo's
# own over the feather, and from there on inwards less and less, gone `GRAIN_FADE` further in.
# Across the feather the blend then carries exactly the photo's grain, so no step shows where the
# face meets the photo, and the clean restoration takes over gradually inside the face. Full
# replacement from a noise ratio of `GRAIN_FULL_RATIO`, none at 1 (a clean or blurred photo
# keeps the whole restoration).
GRAIN_RING = 0.06
GRAIN_FADE = 0.1
GRAIN_SIGMA_PX = 1.0
GRAIN_FULL_RATIO = 2.0
MIN_GRAIN_PIXELS = 64
# Chroma spread may be rescaled at most this much by colour matching (guards against a flat or
# grey original turning a colour restoration into noise amplification).
CHROMA_STD_RANGE = (0.5, 2.0)
# A face bigger in the photo than the crop loses the photo's finest detail when the crop is scaled
# back up. Detail finer than the crop can hold (a high-pass of the photo, Gaussian σ = this many
# crop pixels) is added back, so a sharp 400 px face never comes out softer than it went in.
DETAIL_SIGMA_CROP_PX = 0.5


def face_outline(points_per_arc: int = 24) -> np.ndarray:
    """The closed face outline in crop units, (N, 2): the jaw, then the forehead arc."""
    jaw = np.array(JAW_OUTLINE, dtype=np.float64)
    left, right = jaw[0], jaw[-1]
    centre = (left + right) / 2
    radii = np.array([(right[0] - left[0]) / 2, centre[1] - FOREHEAD_TOP])
    # from the right end (angle 0) over the top (the crop's y grows downwards) to the left end
    angles = np.linspace(0.0, np.pi, points_per_arc + 2)[1:-1]
    arc = centre + np.stack([np.cos(angles), -np.sin(angles)], axis=1) * radii
    return np.concatenate([jaw, arc])


# The signed distance is measured on a raster this many times finer than the crop, then averaged
# down: within 1/8 of a crop pixel of the exact distance, in milliseconds.
DISTANCE_SUPERSAMPLE = 4


@lru_cache(maxsize=8)
def _signed_distance(size: int) -> np.ndarray:
    """Distance of each crop pixel centre to the face outline, in crop units: > 0 inside."""
    fine = size * DISTANCE_SUPERSAMPLE
    bits = 4  # fillPoly's sub-pixel precision
    # crop units -> fine pixel coordinates (pixel centres at integers), in 1/16 pixels
    vertices = np.round((face_outline() * fine - 0.5) * (1 << bits)).astype(np.int32)
    inside = np.zeros((fine, fine), np.uint8)
    cv2.fillPoly(inside, [vertices], 1, cv2.LINE_8, bits)
    to_edge_in = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    to_edge_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # each side's distance is to the nearest pixel of the other side: the edge is half-way
    signed = np.where(inside > 0, to_edge_in - 0.5, 0.5 - to_edge_out).astype(np.float32)
    distance = cv2.resize(signed, (size, size), interpolation=cv2.INTER_AREA) / fine
    distance.setflags(write=False)
    return distance


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@lru_cache(maxsize=8)
def _face_mask(size: int) -> np.ndarray:
    mask = _smoothstep(_signed_distance(size) / MASK_FEATHER).astype(np.float32)
    mask.setflags(write=False)
    return mask


@lru_cache(maxsize=8)
def _grain_maps(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop-space weights for the grain at the seam: the band inside the outline where the
    photo's grain is carried in (1 over the feather, fading to 0 `GRAIN_FADE` further in), and
    the ring outside the outline where the photo's noise is measured."""
    distance = _signed_distance(size)
    fade = 1.0 - _smoothstep((distance - MASK_FEATHER) / GRAIN_FADE)
    band = np.where(distance > 0, fade, 0.0).astype(np.float32)
    ring = ((distance <= 0) & (distance > -GRAIN_RING)).astype(np.float32)
    band.setflags(write=False)
    ring.setflags(write=False)
    return band, ring


def face_mask(size: int = 256) -> np.ndarray:
    """Blend weight in crop space, float32 (size, size): 1 on the face, 0 from the face outline
    (`face_outline`) outwards, smoothly in between; the background corners of the crop are 0.

    The feather is a fixed fraction of the crop, so it scales with the face in the photo.
    """
    return _face_mask(int(size)).copy()


def noise_level(gray: np.ndarray, where: np.ndarray) -> float:
    """Robust noise level of a float gray image over the pixels where `where` is true: the median
    absolute high-pass (Gaussian `GRAIN_SIGMA_PX`), scaled as a Gaussian's sigma. Edges are few
    next to flat pixels, so they barely move the median; 0 when no pixel is given."""
    if not where.any():
        return 0.0
    high = gray - cv2.GaussianBlur(gray, (0, 0), GRAIN_SIGMA_PX)
    return float(1.4826 * np.median(np.abs(high[where])))


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
    match_grain: bool = True,
) -> np.ndarray:
    """A new frame with every crop blended in through its warped face mask.

    `originals` are the aligned crops the restorations came from (cut from `frame` when not
    given); colour matching uses them. `keep_detail` adds back the photo's detail that is finer
    than the crop's pixels (faces larger than the crop). `match_grain` carries the photo's noise
    into the face's edge where the photo around it is noisier than the restoration (see
    `GRAIN_FADE`). Overlapping faces are averaged by their mask weights, so the result does not
    depend on the order of the faces. Pixels that no mask reaches are bit-identical to `frame`.

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
        if match_grain:
            roi = np.asarray(frame[y0 - oy : y1 - oy, x0 - ox : x1 - ox], np.float32)
            _carry_grain(colour, roi, weight, to_roi, size)
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


def _carry_grain(
    colour: np.ndarray, roi: np.ndarray, weight: np.ndarray, to_roi: np.ndarray, size: int
) -> None:
    """In place: swap the finest detail of the pasted face (`colour`, in the face's box `roi` of
    the photo) for the photo's own across the band inside the outline, as far as the photo
    around the face is noisier than the face there (`GRAIN_FULL_RATIO`)."""
    band_crop, ring_crop = _grain_maps(size)
    dsize = (roi.shape[1], roi.shape[0])
    band = warp_affine(band_crop, to_roi, dsize, cv2.BORDER_CONSTANT, 0.0)
    ring = warp_affine(ring_crop, to_roi, dsize, cv2.BORDER_CONSTANT, 0.0) > 0.5
    edge = (band > 0.25) & (weight > 0.25)
    if ring.sum() < MIN_GRAIN_PIXELS or edge.sum() < MIN_GRAIN_PIXELS:
        return  # a face mostly outside the photo, or a few pixels wide: nothing to go by
    around = noise_level(_luma(roi), ring)
    face = noise_level(_luma(colour), edge)
    ratio = around / max(face, 1e-6)
    strength = float(np.clip((ratio - 1.0) / (GRAIN_FULL_RATIO - 1.0), 0.0, 1.0))
    if strength == 0.0:
        return
    # photo's high-pass minus the face's, with as few full-size copies as a big face allows
    grain = cv2.GaussianBlur(roi, (0, 0), GRAIN_SIGMA_PX)
    np.subtract(roi, grain, out=grain)
    grain += cv2.GaussianBlur(colour, (0, 0), GRAIN_SIGMA_PX)
    grain -= colour
    grain *= (strength * np.clip(band, 0.0, 1.0))[:, :, None]
    colour += grain


def _luma(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(bgr, np.float32), cv2.COLOR_BGR2GRAY)


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
