"""Seams of a paste-back, measured on scenes whose background is known.

A London studio photo's backdrop (smooth, light, grey) is keyed out and replaced with navy or a
flag, or kept; the picture is then blurred and covered in noise like an old print. Because the
backdrop pixels are known, any change to them after pasting a face back is a halo; and the noise
level on both sides of the blend's edge says whether a clean face sits in a noisy photo with a
visible step. Used by tests/test_paste.py and scripts/paste_seam.py (docs/paste-back.md).

Images are float32 BGR in [0, 1] (as `paste_faces` takes them); levels are in 8-bit units.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ented_cli.faces.paste import noise_level

BACKGROUNDS = ("navy", "flag", "studio")
NAVY_BGR = (0.31, 0.14, 0.08)
FLAG_RED_BGR = (0.21, 0.13, 0.70)
FLAG_WHITE_BGR = (0.96, 0.96, 0.96)


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # float32 BGR [0, 1]: the photo to restore
    backdrop: np.ndarray  # float32 (h, w): 1 where the pixel is backdrop, 0 on the person
    landmarks: np.ndarray  # (5, 2) in `image` pixels


def key_backdrop(bgr: np.ndarray) -> np.ndarray:
    """Soft backdrop matte (1 = backdrop) of a studio photo whose top rows and side columns
    show the backdrop: a smooth grey surface (a quadratic per channel, fitted robustly), matched
    up to shading (shadows on it are darker), and only where it is connected to the border."""
    h, w = bgr.shape[:2]
    img = bgr.astype(np.float64)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w], np.float64)[:, None, None]
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], axis=-1)
    sample = np.zeros((h, w), bool)
    sample[: int(0.1 * h)] = True
    sample[:, : int(0.06 * w)] = True
    sample[:, w - int(0.06 * w) :] = True
    model = np.empty_like(img)
    for c in range(3):
        chosen = sample
        for _ in range(3):  # refit without the outliers (hair reaching the sample)
            coef, *_ = np.linalg.lstsq(basis[chosen], img[:, :, c][chosen], rcond=None)
            fit = basis @ coef
            residual = np.abs(img[:, :, c] - fit)
            chosen = sample & (residual < 3 * 1.4826 * np.median(residual[chosen]) + 2)
        model[:, :, c] = fit
    shade = img.mean(axis=2) / np.maximum(model.mean(axis=2), 1e-6)
    colour_off = np.linalg.norm(img - model * shade[:, :, None], axis=2)  # 8-bit levels
    matte = (
        np.clip((14 - colour_off) / 8, 0, 1)
        * np.clip((shade - 0.5) / 0.1, 0, 1)
        * np.clip((1.12 - shade) / 0.06, 0, 1)
    )
    _, labels = cv2.connectedComponents((matte > 0.5).astype(np.uint8))
    edge = np.unique(np.concatenate([labels[0], labels[:, 0], labels[:, -1]]))
    connected = np.isin(labels, edge[edge > 0]).astype(np.uint8)
    connected = cv2.dilate(connected, np.ones((5, 5), np.uint8))  # keep the soft fringe
    return (matte * connected).astype(np.float32)


def flag(h: int, w: int) -> np.ndarray:
    """Red and white stripes with a navy canton full of white stars (float32 BGR)."""
    out = np.empty((h, w, 3), np.float32)
    stripe = h / 13
    rows = (np.arange(h) // stripe).astype(int)
    out[:] = np.where((rows % 2 == 0)[:, None, None], FLAG_RED_BGR, FLAG_WHITE_BGR)
    ch, cw = round(7 * stripe), round(0.55 * w)
    out[:ch, :cw] = NAVY_BGR
    radius = 0.3 * stripe
    star = np.array(
        [
            [np.sin(a) * r, -np.cos(a) * r]
            for k in range(10)
            for a, r in [(k * np.pi / 5, radius if k % 2 == 0 else 0.4 * radius)]
        ]
    )
    canvas = (out * 255).astype(np.uint8)
    for y in np.arange(stripe * 0.6, ch - stripe * 0.3, stripe * 0.8):
        for x in np.arange(stripe * 0.6, cw - stripe * 0.3, stripe * 0.9):
            pts = np.round((star + [x, y]) * 16).astype(np.int32)
            white = tuple(int(v * 255) for v in FLAG_WHITE_BGR)
            cv2.fillPoly(canvas, [pts], white, cv2.LINE_AA, 4)
    return canvas.astype(np.float32) / 255


def make_scene(
    photo: np.ndarray,
    landmarks: np.ndarray,
    background: str,
    noise: float,
    blur: float = 1.0,
    side: int = 320,
    seed: int = 0,
) -> Scene:
    """A head shot of a London studio photo (uint8 BGR) on `background`, `side` px wide, blurred
    (Gaussian `blur` px) and covered in colour noise of sigma `noise` levels."""
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; use one of {', '.join(BACKGROUNDS)}")
    eyes, mouth = landmarks[:2].mean(axis=0), landmarks[3:].mean(axis=0)
    # from the top of the photo down to just below the chin, square, the face in the middle
    bottom = int(min(mouth[1] + 1.3 * (mouth[1] - eyes[1]), photo.shape[0]))
    left = int(np.clip(round(eyes[0] - bottom / 2), 0, max(photo.shape[1] - bottom, 0)))
    matte = key_backdrop(photo[:bottom])[:, left : left + bottom]
    shot = photo[:bottom, left : left + bottom]
    scale = side / shot.shape[1]
    size = (side, round(shot.shape[0] * scale))
    shot = cv2.resize(shot, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    matte = cv2.resize(matte, size, interpolation=cv2.INTER_AREA)
    landmarks = (np.asarray(landmarks, np.float64) - [left, 0] + 0.5) * scale - 0.5
    if background == "navy":
        new = np.empty_like(shot)
        new[:] = NAVY_BGR
    elif background == "flag":
        new = flag(*shot.shape[:2])
    else:
        new = shot
    image = shot * (1 - matte[:, :, None]) + new * matte[:, :, None]
    if blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur)
    rng = np.random.default_rng(seed)
    image = image + rng.normal(0.0, noise / 255, image.shape).astype(np.float32)
    return Scene(np.clip(image, 0, 1).astype(np.float32), matte, landmarks)


def halo(
    out: np.ndarray,
    before: np.ndarray,
    backdrop: np.ndarray,
    region: np.ndarray,
    quantile: float | None = None,
) -> float:
    """Mean change (8-bit levels, over the channels) of the sure backdrop pixels (matte >= 0.98,
    2 px away from the person) inside `region` (say the aligned crop's square in the photo), or
    the change that `quantile` of them do not exceed: 0 = no halo."""
    sure = cv2.erode((backdrop >= 0.98).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    where = sure & region
    if not where.any():
        return 0.0
    change = np.abs(out - before)[where].mean(axis=1) * 255
    return float(change.mean() if quantile is None else np.quantile(change, quantile))


def grain_step(out: np.ndarray, weight: np.ndarray, width: int = 6) -> float:
    """Noise level of `out` just inside the blend's edge (where the paste is at full weight,
    within `width` px of where it is not) over that just outside (weight 0, within `width` px of
    the mask): 1 = the grain runs on across the seam, near 0 = a clean face in a noisy photo."""
    kernel = np.ones((2 * width + 1,) * 2, np.uint8)
    full = (weight >= 0.98).astype(np.uint8)
    inside = (full > 0) & (cv2.dilate(1 - full, kernel) > 0)
    touched = (weight > 0).astype(np.uint8)
    outside = (touched == 0) & (cv2.dilate(touched, kernel) > 0)
    gray = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_BGR2GRAY)
    return noise_level(gray, inside) / max(noise_level(gray, outside), 1e-9)
