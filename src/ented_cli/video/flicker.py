"""Flicker: how much a face changes from one frame to the next, where it should not.

Each restored face is looked at in its own aligned 256 px crop (the track's smoothed alignment),
so the face's motion through the frame cancels out and what is left is change of the face
itself: noise, compression, and for the output also anything the restorer does differently
from frame to frame. The measure is the mean absolute change of luma (8-bit levels) between
consecutive frames, weighted by the paste-back face mask, for the input and for the output of
the same faces. A restorer that flickers scores above its input; one that steadies the face,
below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ented_cli.faces.align import warp_affine
from ented_cli.faces.paste import face_mask
from ented_cli.model.restorer import FACE_SIZE

_LUMA_BGR = np.array([0.114, 0.587, 0.299], np.float32)


def _luma(crop: np.ndarray) -> np.ndarray:
    """A BGR crop (float in [0, 1], or uint8/uint16) as luma in 8-bit levels."""
    if crop.dtype == np.uint8:
        scale = 1.0
    elif crop.dtype == np.uint16:
        scale = 255.0 / 65535.0
    else:
        scale = 255.0
    return (crop.astype(np.float32) @ _LUMA_BGR) * np.float32(scale)


@dataclass
class FlickerMeter:
    """`meter.add(track_id, frame_index, input_crop, output_frame, matrix)` for each restored face
    of each frame, in order; `meter.result()` at the end."""

    input_sum: float = 0.0
    output_sum: float = 0.0
    pairs: int = 0

    def __post_init__(self):
        self._last: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
        mask = face_mask(FACE_SIZE).astype(np.float32)
        self._weights = mask / mask.sum()

    def add(
        self,
        track_id: int,
        frame_index: int,
        input_crop: np.ndarray,
        output_frame: np.ndarray,
        matrix: np.ndarray,
    ) -> None:
        out_crop = warp_affine(output_frame, matrix, (FACE_SIZE, FACE_SIZE))
        now = (frame_index, _luma(input_crop), _luma(out_crop))
        before = self._last.get(track_id)
        if before is not None and before[0] == frame_index - 1:
            self.input_sum += float((np.abs(now[1] - before[1]) * self._weights).sum())
            self.output_sum += float((np.abs(now[2] - before[2]) * self._weights).sum())
            self.pairs += 1
        self._last[track_id] = now

    def result(self) -> dict | None:
        """Mean change per frame pair (8-bit luma levels), input vs output; None before any pair."""
        if not self.pairs:
            return None
        inp, out = self.input_sum / self.pairs, self.output_sum / self.pairs
        return {
            "input": round(inp, 3),
            "output": round(out, 3),
            "ratio": round(out / inp, 3) if inp > 0 else None,
            "frame_pairs": self.pairs,
        }
