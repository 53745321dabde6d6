"""Do no harm, part two: does the network make this face clearly sharper than the photo has it?

A lightly degraded face still holds nearly everything; the small network re-draws it slightly
off (colour, shape, expression), so on `mild` faces its raw output scored worse than the input
itself (issue 11). The guard keeps such a face's input pixels. The gain is measured against the
restoration itself: σ* = argmin_σ ‖input − G_σ(restored)‖ over the inner face, the Gaussian blur
that best turns the restoration into the input (noise in the input adds the same error at every
σ, so it does not move the minimum). A small σ* means the input is about as sharp as the
restoration, or that the restoration re-drew the face's coarse shapes so that no blur of it
explains the input. Only faces the photo shows with enough pixels are judged so: a small face
(fewer than `MIN_SPAN` photo pixels across the crop) is degraded by its size alone, and there the
network is what the user came for. The thresholds were fitted on CelebA validation identities,
not on the London benchmark (weights/README.md, "Do no harm").
"""

from __future__ import annotations

import cv2
import numpy as np

# Candidate blurs of the input relative to the restoration, in pixels of a 256 px crop.
SIGMA_GRID = (0.0, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 11.0, 16.0)
# At most this blur (px at 256), the input is kept. On CelebA val (20 faces per level) σ* was
# 1–3 at `mild`, 2–4 at `medium`, 6–8 at `severe`. Keeping faces up to 3 gives mild exactly the
# input's scores (the raw network: LPIPS 0.328 against the input's 0.185) and, with the shipped
# weights, medium LPIPS 0.401 (input 0.416) at identity 0.952 (input 0.950).
SHARP_BLUR = 3.0
# Photo pixels across the 256 px crop from which a face can be "sharp enough": `mild` (×2) faces
# span 128, `medium` (×4) 64; the faces of a real low-quality group photo 40–60.
MIN_SPAN = 96.0


def _inner_face(size: int) -> np.ndarray:
    """The cheeks-to-chin ellipse of the FFHQ-style template: skin and features, no hair or
    backdrop (where the estimate would read the background's sharpness instead)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    return ((xx - 0.5) / 0.35) ** 2 + ((yy - 0.55) / 0.43) ** 2 < 1


def _gray(image: np.ndarray) -> np.ndarray:
    # The channels' mean: the same number for BGR (the pipeline) and RGB (`ented eval`) crops.
    return np.asarray(image, np.float32).mean(axis=2)


def relative_blur(face: np.ndarray, restored: np.ndarray) -> float:
    """σ* in pixels of a 256 px crop: how much blurrier `face` is than `restored`. Both square
    H×W×3 float images in [0, 1] of the same size and channel order."""
    size = face.shape[0]
    inner = _inner_face(size)
    f, r = _gray(face), _gray(restored)
    errors = []
    for sigma in SIGMA_GRID:
        blurred = r if sigma == 0 else cv2.GaussianBlur(r, (0, 0), sigma * size / 256)
        errors.append(float(np.mean((f - blurred)[inner] ** 2)))
    return SIGMA_GRID[int(np.argmin(errors))]


def already_sharp(face: np.ndarray, restored: np.ndarray, span: float) -> bool:
    """True when restoring `face` cannot be trusted to improve it: the photo shows it with at
    least `MIN_SPAN` pixels across the crop (`span`), and its blur relative to the restoration
    is at most `SHARP_BLUR`."""
    return span >= MIN_SPAN and relative_blur(face, restored) <= SHARP_BLUR


def crop_span(matrix: np.ndarray, size: int = 256) -> float:
    """Photo pixels across a `size` px crop made with the 2×3 photo → crop `matrix`."""
    scale = float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))
    return size / max(scale, 1e-9)
