"""Test clips made on the spot: a photo with a face moving and scaling over a textured background,
fresh sensor-like noise in every frame, and a sine tone as the sound track. `ented bench --video`
and the tests use them, so no video file ships with ented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

TONE_HZ = 440.0
SAMPLE_RATE = 48_000


@dataclass
class ClipTruth:
    """What was put into a clip: per frame, the photo → frame affine and the time (s)."""

    size: tuple[int, int]  # width, height as displayed
    matrices: list[np.ndarray] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    pts: list[int] = field(default_factory=list)
    time_base: Fraction = Fraction(1, 90_000)


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A textured, colourful background (blurred noise over a gradient): any change to it shows."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    texture = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(0.25, 0.75, width, dtype=np.float32)[None, :, None]
    tint = np.array([0.9, 0.6, 0.4], np.float32)
    frame = ramp * tint + 0.08 * texture
    return (np.clip(frame, 0, 1) * 255).astype(np.uint8)


def placement(t: float, photo_size: tuple[int, int], frame_size: tuple[int, int], still: bool):
    """The photo → frame affine at time `t`: the face drifts sideways and zooms in and out."""
    pw, ph = photo_size
    fw, fh = frame_size
    base = 0.6 * fh / ph  # the photo fills 60 % of the height
    if still:
        scale, cx, cy = base, fw / 2, fh / 2
    else:
        scale = base * (1.0 + 0.15 * math.sin(2 * math.pi * t / 4.0))
        cx = fw / 2 + 0.15 * fw * math.sin(2 * math.pi * t / 5.0)
        cy = fh / 2 + 0.05 * fh * math.sin(2 * math.pi * t / 3.0)
    return np.array(
        [[scale, 0, cx - scale * pw / 2], [0, scale, cy - scale * ph / 2]], dtype=np.float64
    )


def make_face_clip(
    path: str | Path,
    photo: np.ndarray,
    *,
    size: tuple[int, int] = (1280, 720),
    fps: float = 30,
    frames: int = 60,
    noise: float = 3.0,
    still: bool = False,
    rotation: int = 0,
    vfr: bool = False,
    audio: bool = True,
    preset: str = "ultrafast",
    crf: int = 18,
    blank_after: int | None = None,
    seed: int = 0,
) -> ClipTruth:
    """Write an H.264 (+ AAC sine tone) clip of `photo` (BGR uint8) moving over a background.

    `noise`: std of the fresh Gaussian noise in each frame (8-bit levels), the input's own
    flicker. `rotation`: the container's display rotation (degrees counter-clockwise, like a
    phone filming sideways); the coded pictures are turned the other way so the clip shows
    upright. `vfr`: frame durations alternate between 1 and 2 frame periods. `blank_after`:
    frames from this one on show no photo (cheap long clips without faces).
    """
    import av

    width, height = size
    rng = np.random.default_rng(seed)
    bg = background(width, height, seed)
    ph, pw = photo.shape[:2]
    soft = np.zeros((ph, pw), np.float32)
    margin = max(4, min(ph, pw) // 20)
    soft[margin:-margin, margin:-margin] = 1.0
    soft = cv2.GaussianBlur(soft, (0, 0), margin / 2)[:, :, None]
    truth = ClipTruth(size)
    tb = truth.time_base
    out = av.open(str(path), "w")
    rate = Fraction(str(fps))
    stream = out.add_stream("libx264", rate=rate)
    turns = round(rotation / 90) % 4
    stream.width, stream.height = (height, width) if turns % 2 else (width, height)
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = tb
    stream.options = {"preset": preset, "crf": str(crf)}
    cc = stream.codec_context
    cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = 1, 1, 1, 1  # BT.709, TV
    if rotation:
        stream.set_display_rotation(rotation)
    tone = _Tone(out) if audio else None
    pts = 0
    for i in range(frames):
        t = float(pts * tb)
        matrix = placement(t, (pw, ph), size, still)
        shown = blank_after is None or i < blank_after
        if shown or noise:
            frame = bg.astype(np.float32)
            if shown:
                warped = cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_LINEAR)
                alpha = cv2.warpAffine(soft, matrix, size, flags=cv2.INTER_LINEAR)[:, :, None]
                frame = frame * (1 - alpha) + warped.astype(np.float32) * alpha
            if noise:
                frame += rng.standard_normal(frame.shape, np.float32) * np.float32(noise)
            pixels = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
        else:  # the bare background: nothing to compute (long clips)
            pixels = bg
        coded = np.ascontiguousarray(np.rot90(pixels, -turns)) if turns else pixels
        picture = av.VideoFrame.from_ndarray(coded, format="bgr24")
        step = round(1 / rate / tb) * (2 if vfr and i % 3 == 2 else 1)
        picture.pts, picture.time_base, picture.duration = pts, tb, step
        truth.matrices.append(matrix)
        truth.times.append(t)
        truth.pts.append(pts)
        out.mux(stream.encode(picture))
        pts += step
        if tone is not None:  # the sound up to this frame's end: the file is interleaved
            tone.write_until(float(pts * tb))
    out.mux(stream.encode(None))
    if tone is not None:
        tone.close()
    out.close()
    return truth


class _Tone:
    """A sine tone, AAC, written in step with the pictures."""

    def __init__(self, out):
        self.out = out
        self.stream = out.add_stream("aac", rate=SAMPLE_RATE)
        self.stream.layout = "mono"
        self.done = 0  # samples written

    def write_until(self, seconds: float, chunk: int = 1024) -> None:
        import av

        total = round(seconds * SAMPLE_RATE)
        while self.done < total:
            n = min(chunk, total - self.done)
            t = (self.done + np.arange(n)) / SAMPLE_RATE
            samples = (0.3 * np.sin(2 * math.pi * TONE_HZ * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, self.done
            self.out.mux(self.stream.encode(frame))
            self.done += n

    def close(self) -> None:
        self.out.mux(self.stream.encode(None))
