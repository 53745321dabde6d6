"""Paste-back: soft face mask, seamless blending, untouched background, colour matching."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from ented_cli.faces.align import estimate_alignment, template, unwarp_face, warp_face
from ented_cli.faces.paste import face_mask, match_colour, paste_faces


@pytest.fixture(scope="module")
def portrait(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """A London photo as float32 BGR in [0, 1] and its 5 landmarks."""
    root = shared_data / "london"
    with open(root / "london.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["raw"])
    frame = cv2.imread(str(root / row["raw"]), cv2.IMREAD_COLOR).astype(np.float32) / 255.0
    return frame, np.array(row["lm5_raw"].split(), dtype=np.float64).reshape(5, 2)


def footprint(matrix: np.ndarray, size: int, shape: tuple[int, int]) -> np.ndarray:
    """The face mask as it lands in the frame."""
    return unwarp_face(face_mask(size), matrix, shape)


def gradient(image: np.ndarray) -> np.ndarray:
    gray = image.mean(axis=2) if image.ndim == 3 else image
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3) / 8
    return np.hypot(gx, gy)


def test_face_mask_covers_the_face_and_fades_before_the_border():
    for size in (128, 256, 512):
        mask = face_mask(size)
        assert mask.shape == (size, size) and mask.dtype == np.float32
        assert mask.min() == 0.0 and mask.max() == 1.0
        for x, y in template(size):  # eyes, nose and mouth corners are fully restored
            assert mask[round(y), round(x)] == 1.0
        assert mask[round(0.2 * size), size // 2] == 1.0  # forehead
        assert mask[round(0.85 * size), size // 2] == 1.0  # chin
        band = round(0.04 * size)  # nothing near the crop border, where padding may show
        assert not mask[:band].any() and not mask[-band:].any()
        assert not mask[:, :band].any() and not mask[:, -band:].any()
    # the feather is a fixed fraction of the crop, so it looks the same at every size
    half = cv2.resize(face_mask(512), (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(half - face_mask(256)).max() < 0.02
    feather = ((face_mask(512) > 0) & (face_mask(512) < 1)).sum(1).max()
    assert feather > 0.1 * 512


def test_pasting_the_unchanged_crop_changes_nothing_but_interpolation(portrait):
    frame, lm = portrait
    matrix = estimate_alignment(lm, 768)  # finer than the photo, so the round trip keeps detail
    crop = warp_face(frame, matrix, 768)
    out = paste_faces(frame, [crop], [matrix])
    weight = footprint(matrix, 768, frame.shape[:2])
    diff = np.abs(out - frame).max(axis=2)
    assert diff[weight > 0].mean() < 0.005
    assert np.array_equal(out[weight == 0], frame[weight == 0])
    assert (weight == 0).mean() > 0.5  # most of the photo is far from the face


def test_brightened_face_changes_only_inside_its_mask(portrait):
    frame, lm = portrait
    matrix = estimate_alignment(lm, 256)
    crop = warp_face(frame, matrix, 256)
    out = paste_faces(frame, [np.clip(crop + 0.2, 0, 1)], [matrix], colour_match=False)
    weight = footprint(matrix, 256, frame.shape[:2])
    assert (out - frame).mean(axis=2)[weight > 0.99].mean() > 0.15
    outside = weight == 0
    assert np.array_equal(out[outside], frame[outside])  # bit-identical
    assert out.dtype == np.float32 and out.shape == frame.shape
    assert frame is not out


def seam_ratio(out: np.ndarray, frame: np.ndarray, weight: np.ndarray) -> float:
    """Gradient along contours of the blend weight, relative to the photo's own gradient there.

    For each level of the warped mask, take the 1-px ring where it crosses that level and compare
    the median gradient of the result with that of the photo; return the worst level. A seam
    (a step along some contour) shows up as a large ratio at that level.
    """
    ratios = []
    for level in (0.02, 0.25, 0.5, 0.75, 0.98):
        above = (weight > level).astype(np.uint8)
        ring = (above > 0) & (cv2.erode(above, np.ones((3, 3), np.uint8)) == 0)
        ratios.append(np.median(gradient(out)[ring]) / np.median(gradient(frame)[ring]))
    return float(max(ratios))


def test_no_seam_along_the_mask_boundary(portrait):
    frame, lm = portrait
    matrix = estimate_alignment(lm, 256)
    brighter = np.clip(warp_face(frame, matrix, 256) + 0.2, 0, 1)
    weight = footprint(matrix, 256, frame.shape[:2])
    soft = paste_faces(frame, [brighter], [matrix], colour_match=False)
    ratio = seam_ratio(soft, frame, weight)
    print(f"seam: gradient along the mask contours is at most {ratio:.2f}x the photo's")
    assert ratio < 1.5  # measured 0.93
    # the same check does catch a hard-edged paste (measured 6.4)
    hard = frame.copy()
    inside = weight > 0.5
    hard[inside] = unwarp_face(brighter, matrix, frame.shape[:2])[inside]
    assert seam_ratio(hard, frame, weight) > 3


def test_colour_matching_moves_the_mean_colour_to_the_original(portrait):
    frame, lm = portrait
    matrix = estimate_alignment(lm, 256)
    original = warp_face(frame, matrix, 256)
    mask = face_mask(256)
    cast = np.clip(original * [0.8, 1.0, 1.15] + [0.0, 0.03, 0.0], 0, 1).astype(np.float32)

    def mean_colour(image: np.ndarray) -> np.ndarray:
        return (image * mask[:, :, None]).sum((0, 1)) / mask.sum()

    assert np.abs(mean_colour(cast) - mean_colour(original)).max() > 0.05
    fixed = match_colour(cast, original, mask)
    assert fixed.dtype == np.float32 and fixed.shape == original.shape
    assert np.abs(mean_colour(fixed) - mean_colour(original)).max() < 0.01
    # detail survives: matching only shifts colour, it does not blur the crop
    assert np.abs(gradient(fixed) - gradient(original)).mean() < 0.2 * gradient(original).mean()

    # and paste_faces applies it: the pasted face keeps the photo's colour balance
    out = paste_faces(frame, [cast], [matrix])
    core = footprint(matrix, 256, frame.shape[:2]) > 0.99
    assert np.abs(out[core].mean(0) - frame[core].mean(0)).max() < 0.01


def test_overlapping_faces_blend_independently_of_order(portrait):
    frame, lm = portrait
    first = estimate_alignment(lm, 256)
    second = estimate_alignment(lm + [60.0, 20.0], 256)  # a second face overlapping the first
    a = np.clip(warp_face(frame, first, 256) * 0.7, 0, 1)
    b = np.clip(warp_face(frame, second, 256) + 0.25, 0, 1)
    ab = paste_faces(frame, [a, b], [first, second], colour_match=False)
    ba = paste_faces(frame, [b, a], [second, first], colour_match=False)
    np.testing.assert_allclose(ab, ba, atol=1e-5)
    union = np.maximum(
        footprint(first, 256, frame.shape[:2]), footprint(second, 256, frame.shape[:2])
    )
    assert seam_ratio(ab, frame, union) < 1.5
    assert np.array_equal(ab[union == 0], frame[union == 0])


def test_paste_with_no_faces_returns_an_equal_copy(portrait):
    frame, _ = portrait
    out = paste_faces(frame, [], [])
    assert out is not frame and np.array_equal(out, frame)
    with pytest.raises(ValueError):
        paste_faces(frame, [frame[:256, :256]], [])


def test_a_face_larger_than_the_crop_keeps_the_photos_fine_detail():
    """Pasting a 256 crop over a 512 px face must not blur away detail the photo already had."""
    rng = np.random.default_rng(0)
    frame = np.clip(0.5 + 0.2 * rng.standard_normal((700, 700, 3)), 0, 1).astype(np.float32)
    to_crop = np.array([[0.5, 0.0, -50.0], [0.0, 0.5, -50.0]])  # 512 px of the frame -> 256 crop
    flat = np.full((256, 256, 3), 0.5, np.float32)  # a restoration with no fine detail at all

    def fine_detail(img):
        face = img[300:400, 300:400].astype(np.float64)
        return np.abs(face - cv2.GaussianBlur(face, (0, 0), 2)).mean()

    kept = paste_faces(frame, [flat], [to_crop], colour_match=False, keep_detail=True)
    lost = paste_faces(frame, [flat], [to_crop], colour_match=False, keep_detail=False)
    assert fine_detail(lost) < 0.1 * fine_detail(frame)
    assert fine_detail(kept) > 0.5 * fine_detail(frame)


def test_detail_is_not_added_to_faces_smaller_than_the_crop():
    rng = np.random.default_rng(1)
    frame = np.clip(0.5 + 0.2 * rng.standard_normal((300, 300, 3)), 0, 1).astype(np.float32)
    to_crop = np.array([[2.0, 0.0, -100.0], [0.0, 2.0, -100.0]])  # a 128 px face
    flat = np.full((256, 256, 3), 0.5, np.float32)
    a = paste_faces(frame, [flat], [to_crop], colour_match=False, keep_detail=True)
    b = paste_faces(frame, [flat], [to_crop], colour_match=False, keep_detail=False)
    assert np.array_equal(a, b)
