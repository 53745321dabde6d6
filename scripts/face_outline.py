"""The mean face outline on the aligned-crop template, for faces/paste.py's `JAW_OUTLINE`.

    python scripts/face_outline.py

dlib's 68-point predictor (faces/refwarp.py) on aligned crops from ../shared/data: every London
crop (204, studio, frontal) and every third CelebA-wild validation crop plus every fortieth
training crop (in-the-wild poses). The 17 jaw points are averaged per set, the two sets'
means averaged, and the result made left-right symmetric about the crop's middle (the template
is). Printed in crop units (fractions of the crop side), image-left first.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np

from ented_cli.faces.refwarp import Landmarks68

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def jaw_points(paths: list[Path], landmarks: Landmarks68) -> np.ndarray:
    """(N, 17, 2) jaw points in crop units."""
    out = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        out.append(landmarks(np.ascontiguousarray(bgr[:, :, ::-1]))[:17] / bgr.shape[1])
    return np.array(out)


def main() -> None:
    if not (DATA / "london" / "london.csv").is_file():
        sys.exit(f"face_outline: {DATA} is missing; this needs the project's ../shared/data")
    landmarks = Landmarks68()
    with open(DATA / "london" / "london.csv", newline="") as f:
        london = [DATA / "london" / r["aligned"] for r in csv.DictReader(f)]
    with open(DATA / "celeba-wild.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    celeba = [r for r in rows if r["split"] == "val"][::3] + [
        r for r in rows if r["split"] == "train"
    ][::40]
    celeba = [DATA / r["path"] for r in celeba]
    means = [jaw_points(paths, landmarks).mean(axis=0) for paths in (london, celeba)]
    mean = (means[0] + means[1]) / 2
    mirrored = np.stack([1.0 - mean[::-1, 0], mean[::-1, 1]], axis=1)
    outline = (mean + mirrored) / 2
    print(f"{len(london)} London + {len(celeba)} CelebA-wild crops; JAW_OUTLINE = (")
    for x, y in outline:
        print(f"    ({x:.3f}, {y:.3f}),")
    print(")")


if __name__ == "__main__":
    main()
