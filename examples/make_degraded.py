"""Rebuild examples/astronaut_degraded.jpg from examples/astronaut.png.

The degradation is fixed (no randomness), so running this again gives the same pixels with the
same OpenCV/libjpeg build:
    downscale x2 (INTER_AREA) -> Gaussian blur (sigma 1.2 px at the small size)
    -> JPEG quality 30 -> upscale back to the original size (bicubic) -> save as JPEG quality 90.

Usage:  python examples/make_degraded.py [--check]
    --check  compare with the file on disk instead of writing it (exit 1 when they differ).
"""

import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "astronaut.png"
TARGET = HERE / "astronaut_degraded.jpg"

FACTOR = 2
BLUR_SIGMA = 1.2
JPEG_QUALITY_DEGRADE = 30
JPEG_QUALITY_SAVE = 90


def degrade(bgr: np.ndarray) -> np.ndarray:
    h, w = bgr.shape[:2]
    small = cv2.resize(bgr, (w // FACTOR, h // FACTOR), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), BLUR_SIGMA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY_DEGRADE])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    small = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def encode(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY_SAVE])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def main(argv: list[str]) -> int:
    bgr = cv2.imread(str(SOURCE), cv2.IMREAD_COLOR)
    if bgr is None:
        print(f"{SOURCE}: cannot read it; restore it from git", file=sys.stderr)
        return 1
    data = encode(degrade(bgr))
    if "--check" in argv:
        same = TARGET.is_file() and TARGET.read_bytes() == data
        print(f"{TARGET.name}: {'up to date' if same else 'differs from a fresh build'}")
        return 0 if same else 1
    TARGET.write_bytes(data)
    print(f"wrote {TARGET} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
