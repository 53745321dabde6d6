"""Pixel conversions of aligned face crops (float32 in [0, 1], OpenCV's BGR channel order).

The whole restore path works in BGR, as OpenCV reads images; the one flip to the network's RGB
is inside the restorer (model/restorer.py), at the network boundary.
"""

from __future__ import annotations

import numpy as np

# ITU-R BT.601 luma weights, in BGR order.
_LUMA_BGR = np.array([0.114, 0.587, 0.299], np.float32)


def to_uint8(crop: np.ndarray) -> np.ndarray:
    """A float crop in [0, 1] as 8-bit pixels (rounded, clipped)."""
    return np.rint(np.clip(crop, 0, 1) * 255).astype(np.uint8)


def desaturate(crop: np.ndarray) -> np.ndarray:
    """A BGR crop as gray in three equal channels (restored faces of a gray photo)."""
    luma = crop @ _LUMA_BGR
    return np.repeat(luma[..., None], 3, axis=2)
