"""Aligned face crops for evaluation: read as 8-bit RGB, resized between the model and GT sizes.

Benchmarks hold aligned crops (FFHQ-style template, any square size, as CelebA-Test or the
project's data). Everything is scored in 8 bits, as a saved image would be: 16-bit files are
rounded down, gray is replicated to three channels, alpha is ignored.

Resizing is bicubic when enlarging and area averaging when shrinking (bicubic would alias), so
a 512 ground truth is compared with the 256 output enlarged bicubically, and a 512 degraded
input reaches the 256 network by area averaging.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ented_cli.errors import InputError
from ented_cli.imaging.atomic import write_atomic
from ented_cli.imaging.pixels import to_float_bgr
from ented_cli.imaging.read import read_image

MODEL_SIZE = 256


def read_crop(path: Path) -> np.ndarray:
    """An aligned square face crop as H×W×3 uint8 RGB; InputError naming the file otherwise."""
    img = read_image(path)
    rgb = to_float_bgr(img)[:, :, ::-1]
    h, w = rgb.shape[:2]
    if h != w:
        raise InputError(
            f"{path}: {w}x{h} is not a square aligned face crop; align it first "
            "(ented restore --save-faces writes aligned crops)"
        )
    return np.ascontiguousarray(np.rint(rgb * 255).astype(np.uint8))


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Square resize to `size`: bicubic up, area down. uint8 stays uint8 (cv2 saturates it);
    float images are clipped to [0, 1], since bicubic overshoots at edges."""
    if image.shape[0] == size:
        return image
    mode = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    out = cv2.resize(image, (size, size), interpolation=mode)
    return out if out.dtype == np.uint8 else np.clip(out, 0, 1)


def to_model(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB crop of any size → float32 256×256×3 in [0, 1], the restorer's input."""
    return resize(rgb.astype(np.float32) / 255, MODEL_SIZE)


def from_model(rgb: np.ndarray, size: int) -> np.ndarray:
    """Restorer output (float RGB in [0, 1] at 256) → uint8 RGB at `size`, rounded once."""
    return np.rint(resize(np.asarray(rgb, np.float32), size) * 255).astype(np.uint8)


def enlarge_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """The `input` baseline: the degraded crop itself brought to the GT size (uint8)."""
    return from_model(rgb.astype(np.float32) / 255, size)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write a uint8 RGB image as a lossless PNG, atomically (what is scored is what is on disk)."""
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:  # pragma: no cover - cv2 always encodes a uint8 image as PNG
        raise InputError(f"{path}: could not encode the image as PNG")
    write_atomic(path, png.tobytes())
