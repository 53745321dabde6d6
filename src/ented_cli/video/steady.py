"""Steadying restored faces over time, so a video's faces do not shimmer.

A restorer sees each frame alone: the fresh noise of every frame becomes a slightly different
restoration, and the face shimmers even when the person holds still. Each track's restored crop
(in its own aligned 256 px frame, where the face stands still) is therefore blended with the
track's previous steadied crop, pixel by pixel:

    out_t = restored_t + w · (out_{t-1} - restored_t),   w = W_MAX · exp(-(change / TAU)²)

where `change` is how much the *input* face changed there since the previous frame (its luma,
blurred so that noise does not count as change). Where the face is still (a cheek, a forehead)
the output is an average over the last few frames; where it moves (a mouth speaking, eyes
blinking) `w` falls to 0 and the output follows the current frame, so nothing drags behind.
"""

from __future__ import annotations

import cv2
import numpy as np

# Weight of the previous frame where the input did not change: 0.6 averages about four frames,
# cutting frame-to-frame noise to about a third, while one frame of motion already lowers it.
W_MAX = 0.75
# Input change (8-bit luma levels, after the blur) at which the previous frame's weight has
# fallen to 1/e of W_MAX: above blurred sensor and compression noise, below a blink or a lip.
TAU = 8.0
BLUR_SIGMA = 2.0  # crop pixels
_LUMA_BGR = np.array([0.114, 0.587, 0.299], np.float32)


def _blurred_luma(crop: np.ndarray) -> np.ndarray:
    luma = crop.astype(np.float32) @ _LUMA_BGR * np.float32(255.0)
    return cv2.GaussianBlur(luma, (0, 0), BLUR_SIGMA)


class Steadier:
    """`restored = steadier(track_id, frame_index, input_crop, restored_crop)` for each restored
    face, frames in order. Crops are float32 BGR in [0, 1], aligned 256 x 256."""

    def __init__(self, w_max: float = W_MAX, tau: float = TAU):
        self.w_max, self.tau = w_max, tau
        self._last: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}

    def __call__(
        self, track_id: int, frame_index: int, input_crop: np.ndarray, restored: np.ndarray
    ) -> np.ndarray:
        luma = _blurred_luma(input_crop)
        before = self._last.get(track_id)
        out = restored
        if before is not None and before[0] == frame_index - 1 and self.w_max > 0:
            _, last_luma, last_out = before
            change = np.abs(luma - last_luma) / np.float32(self.tau)
            weight = (np.float32(self.w_max) * np.exp(-(change**2)))[:, :, None]
            out = restored + weight * (last_out - restored)
        self._last[track_id] = (frame_index, luma, out)
        return out

    def forget(self, track_id: int) -> None:
        self._last.pop(track_id, None)
