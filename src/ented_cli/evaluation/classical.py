"""Classical reference transfer, no learning: the bar a learned model must clear (TRAINING.md).

Given an aligned degraded face, an aligned reference photo of the same person and dlib's 68
landmarks on both (`refwarp.Landmarks68`):

1. the reference is warped piecewise-affinely onto the face's geometry (`refwarp.warp_reference`),
   which also gives a feathered validity mask (inside the landmark hull, less where it stretches);
2. it is colour-matched to the face: per channel, the mean and standard deviation of the
   low-passed warped reference inside the mask are mapped to those of the low-passed face;
3. the output is the face's low frequencies plus the matched reference's high frequencies
   (a Gaussian split at `sigma` pixels) inside the mask, and the face itself everywhere else.

Its failures are plain to the eye (TRAINING.md: teeth pasted from a smiling reference, doubled
contours, the input's JPEG blocks left in place, a sharp face inside blurry hair), which is what a
learned fusion must fix; `ented eval` scores it as the `classical` row. Pure numpy/cv2, no I/O;
about 10 ms per 256 px face plus the two landmark runs.
"""

from __future__ import annotations

import cv2
import numpy as np

from ented_cli.faces.refwarp import warp_reference

# Gaussian low-pass σ in pixels of a 256 px crop (scaled for other sizes): its half-power period
# is about 21 px, what a ×12 down-sampling (`severe`) keeps of a 256 face. On 10 London faces, σ
# 2/3/4/6 gave dlib identity to the ground truth 0.922/0.929/0.935/0.944 at severe (input 0.890)
# and LPIPS 0.556/0.535/0.522/0.507 (input 0.661); on mild σ 2 was best (identity 0.993 vs input
# 0.994). Larger σ also carries more of the reference's expression (doubled contours), so 4.
DEFAULT_SIGMA = 4.0
_GAIN_RANGE = (0.5, 2.0)  # colour match: bounds of the per-channel std ratio


def low_pass(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an H×W×C float image (σ in pixels, reflected borders)."""
    return cv2.GaussianBlur(rgb, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)


def _masked_stats(image: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel weighted mean and standard deviation of an H×W×C image."""
    w = weight[..., None]
    total = max(float(weight.sum()), 1e-6)
    mean = (image * w).sum(axis=(0, 1)) / total
    var = (((image - mean) ** 2) * w).sum(axis=(0, 1)) / total
    return mean, np.sqrt(np.maximum(var, 1e-10))


def classical_transfer(
    face_rgb01: np.ndarray,
    ref_rgb01: np.ndarray,
    face_pts: np.ndarray,
    ref_pts: np.ndarray,
    sigma: float | None = None,
    return_mask: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The face (H×W×3 float RGB in [0, 1]) with the reference's detail transferred onto it.

    `ref_rgb01` is a square crop of the same template (resized to the face's size if it is
    another size; its points are scaled with it); `face_pts` and `ref_pts` are (68, 2) (x, y)
    landmarks of each in its own pixels. `sigma` is the Gaussian cutoff separating the face's
    low frequencies from the reference's high ones, in pixels ([default: `DEFAULT_SIGMA` at
    256 px, proportionally at other sizes]); larger takes more of the reference.
    Returns float32 RGB in [0, 1] of the face's size; with `return_mask`, also the H×W float32
    mask where the reference was used (the output equals the face exactly where it is 0).
    """
    face = np.ascontiguousarray(face_rgb01, dtype=np.float32)
    ref = np.ascontiguousarray(ref_rgb01, dtype=np.float32)
    if face.ndim != 3 or face.shape[2] != 3 or face.shape[0] != face.shape[1]:
        raise ValueError(f"expected a square H×W×3 face, got {face.shape}")
    size = face.shape[0]
    ref_pts = np.asarray(ref_pts, np.float32)
    if ref.shape[:2] != face.shape[:2]:
        ref_pts = ref_pts * (size / ref.shape[0])
        mode = cv2.INTER_AREA if ref.shape[0] > size else cv2.INTER_CUBIC
        ref = np.clip(cv2.resize(ref, (size, size), interpolation=mode), 0, 1)
    if sigma is None:
        sigma = DEFAULT_SIGMA * size / 256
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")

    warped, mask = warp_reference(ref, ref_pts, np.asarray(face_pts, np.float32))
    mask = np.clip(mask, 0.0, 1.0).astype(np.float32)
    face_low = low_pass(face, sigma)
    warped_low = low_pass(warped, sigma)

    # Colour match, measured on the low-passed images (the face's own detail is noise and
    # blocks): matched = (warped - ref_mean) * gain + face_mean. Only its high band is used, where
    # the means cancel and the per-channel gain scales the reference's detail.
    _, face_std = _masked_stats(face_low, mask)
    _, ref_std = _masked_stats(warped_low, mask)
    gain = np.clip(face_std / ref_std, *_GAIN_RANGE).astype(np.float32)
    detail = (warped - warped_low) * gain  # the matched reference's high frequencies

    fused = np.clip(face_low + detail, 0.0, 1.0)
    m = mask[..., None]
    out = face + m * (fused - face)
    out = np.where(m > 0, out, face).astype(np.float32)  # exactly the face outside the mask
    return (out, mask) if return_mask else out
