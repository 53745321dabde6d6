"""The `--save-cmp` pictures, made to judge a restoration by eye.

- The frame (`frame_comparison`): before | after, side by side at the output's size, under a
  band that says which half is which and at what fidelity. Frames past 2048 px are shrunk; small
  ones are enlarged by a whole factor (nearest pixel, so nothing is invented) until the labels
  are readable, as far as 2048 px allows.
- The faces (`faces_comparison`): one tile per restored face, its aligned 256 px crop before |
  after | the reference photo it was paired with, headed by the face's index in the `--json`
  report. A small face in a big photo is judged at the network's own size. Faces left as they
  were (not chosen by --faces, skipped by --unmatched, kept by the guard) have no tile: their
  `--json` entry says why.

Both are 8-bit BGR arrays, encoded by `encode_comparison` (`paths.side_path` names them: PNG
next to a lossless output, else JPEG).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ented_cli.imaging.pixels import LoadedImage, to_float_bgr, to_uint8

if TYPE_CHECKING:
    from ented_cli.pipeline.restore import FaceJob

MAX_SIDE = 2048  # the frame comparison's longest side
MIN_HALF = 384  # a half narrower than this is enlarged (whole factors) so its label fits
FACE = 256  # the crops' size (the network's)

BAND = (32, 32, 32)  # label bands and gaps: dark, so white text reads on any photo
TEXT = (255, 255, 255)
EMPTY = (90, 90, 90)  # the reference cell of a face restored without one
FONT = cv2.FONT_HERSHEY_SIMPLEX


def encode_comparison(bgr: np.ndarray, ext: str, quality: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:  # pragma: no cover - OpenCV encodes any 8-bit BGR array
        raise RuntimeError(f"OpenCV could not encode a {ext} comparison")
    return buf.tobytes()


def frame_comparison(
    before: LoadedImage, after: LoadedImage, fidelity: float, max_side: int = MAX_SIDE
) -> np.ndarray:
    """Before | after at the output's size with a thin divider, under a labelled band. `before`
    may be the input at its own size (--upscale): it is resized straight to the half. Large
    frames are shrunk in their own bit depth, so a huge scan never becomes a float copy."""
    w, h = after.size
    scale = min(1.0, max_side / max(h, 2 * w + max(2, w // 200)))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Small frames: whole factors, nearest pixel, as far as the longest side allows.
    room = max_side // max(size[1], 2 * size[0] + 2)
    grow = max(1, min(math.ceil(MIN_HALF / size[0]), room))

    def half(image: LoadedImage) -> np.ndarray:
        pixels = image.pixels
        if image.size != size:
            enlarge = size[0] > image.size[0]
            interp = cv2.INTER_LANCZOS4 if enlarge else cv2.INTER_AREA
            pixels = cv2.resize(pixels, size, interpolation=interp)
        bgr = to_uint8(to_float_bgr(replace(image, pixels=pixels, alpha=None)))
        return np.repeat(np.repeat(bgr, grow, axis=0), grow, axis=1) if grow > 1 else bgr

    left, right = half(before), half(after)
    divider = np.full((left.shape[0], max(2, left.shape[1] // 200), 3), 255, np.uint8)
    both = np.concatenate([left, divider, right], axis=1)
    x_after = left.shape[1] + divider.shape[1]
    band = label_band(
        both.shape[1],
        [(0, left.shape[1], "before"), (x_after, right.shape[1], _after_label(fidelity, True))],
    )
    return np.concatenate([band, both])


def faces_comparison(
    faces: Sequence[FaceJob], fidelity: float, columns: int | None = None
) -> np.ndarray | None:
    """A grid of tiles, one per restored face of `faces` (the pipeline's FaceJobs, in report
    order): "face i" (its index in `--json`'s faces) and how it was restored, then before | after
    | reference. The reference column is there when a face of the photo had one. None when no
    face was restored."""
    restored = [(i, f) for i, f in enumerate(faces) if f.restored is not None]
    if not restored:
        return None
    with_refs = any(f.matched for _, f in restored)
    tiles = [_face_tile(i, f, fidelity, with_refs) for i, f in restored]
    if columns is None:  # about as wide as the frame comparison
        columns = max(1, min(len(tiles), MAX_SIDE // tiles[0].shape[1]))
    return _grid(tiles, columns, gap=max(4, FACE // 32))


def _after_label(fidelity: float, frame: bool) -> str:
    return f"after (ented, fidelity {fidelity:g})" if frame else f"after (fidelity {fidelity:g})"


def _face_tile(index: int, face: FaceJob, fidelity: float, with_refs: bool) -> np.ndarray:
    before, after = to_uint8(face.crop), to_uint8(face.restored)
    cells = [before, after]
    labels = ["before", _after_label(fidelity, False)]
    if with_refs:
        ref = face.match.faces[0].crop if face.matched else None  # the one the guard checks
        cells.append(ref if ref is not None else np.full((FACE, FACE, 3), EMPTY, np.uint8))
        labels.append("reference" if ref is not None else "no reference")
    gap = FACE // 64
    row = _join([_fit(c) for c in cells], gap, axis=1)
    xs = [k * (FACE + gap) for k in range(len(cells))]
    how = f"with reference '{face.match.person}'" if face.matched else "blind (no reference)"
    title = label_band(row.shape[1], [(0, row.shape[1], f"face {index}: {how}")], basis=FACE)
    names = label_band(row.shape[1], [(x, FACE, t) for x, t in zip(xs, labels)])
    return np.concatenate([title, names, row])


def _fit(crop: np.ndarray) -> np.ndarray:
    if crop.shape[:2] == (FACE, FACE):
        return crop
    return cv2.resize(crop, (FACE, FACE), interpolation=cv2.INTER_AREA)


def _join(parts: list[np.ndarray], gap: int, axis: int) -> np.ndarray:
    """`parts` with `gap` px of band colour between them (same height, or width, for `axis`)."""
    out = [parts[0]]
    for p in parts[1:]:
        shape = list(p.shape)
        shape[axis] = gap
        out += [np.full(shape, BAND, np.uint8), p]
    return np.concatenate(out, axis=axis)


def _grid(tiles: list[np.ndarray], columns: int, gap: int) -> np.ndarray:
    """Tiles (all the same size) in rows of `columns`, the last row padded with band colour."""
    blank = np.full_like(tiles[0], BAND)
    rows = []
    for start in range(0, len(tiles), columns):
        row = tiles[start : start + columns]
        if rows:  # pad the last row only when there is a row above to line up with
            row = row + [blank] * (columns - len(row))
        rows.append(_join(row, gap, axis=1))
    return _join(rows, gap, axis=0)


def label_band(
    width: int, labels: list[tuple[int, int, str]], basis: int | None = None
) -> np.ndarray:
    """A dark band `width` px wide with each (x, room, text) written at x. Capitals are 5 % of
    `basis` px tall (default: the narrowest room), 12 px at least, and shrink (to 10 px) to fit
    their room; a label that still does not fit is cut short with "..."."""
    basis = basis or min(room for _, room, _ in labels)
    height = max(12, min(48, round(basis * 0.05)))
    pad = max(3, height // 2)
    band = np.full((height + 2 * pad, width, 3), BAND, np.uint8)
    for x, room, text in labels:
        scale, thick = _font(text, height, room - 2 * pad)
        shown, cut = text, len(text)
        while _text_width(shown, scale, thick) > room - 2 * pad and cut > 1:
            cut -= 1
            shown = text[:cut] + "..."
        cv2.putText(band, shown, (x + pad, pad + height), FONT, scale, TEXT, thick, cv2.LINE_AA)
    return band


def _font(text: str, height: int, room: int) -> tuple[float, int]:
    """Scale and stroke for capitals `height` px tall, smaller (down to 10 px) to fit `room`."""
    cap = cv2.getTextSize("H", FONT, 1.0, 1)[0][1]
    scale = height / cap
    width = _text_width(text, scale, 1)
    if width > room:
        scale = max(10 / cap, scale * room / width)
    return scale, max(1, round(scale * 1.6))


def _text_width(text: str, scale: float, thick: int) -> int:
    return cv2.getTextSize(text, FONT, scale, thick)[0][0]
