"""Face detection on heavily degraded crops and on close-ups, before and after a change to
faces/detect.py, and with and without the second look (docs/paste-back.md).

    python scripts/detect_recall.py --before aac578a
    python scripts/detect_recall.py --save-case tests/data/london-004-x16.jpg

Faces: the first `--faces` London neutral aligned crops (512 px, ../shared/data). Each is degraded
at three levels with train/degrade.py's `apply_params` (blur, down-sampling x8/x12/x16 and back
up, colour noise, JPEG q10; a fixed noise seed per face). A face counts as found when the
detector returns a face whose eyes, nose and mouth lie within a third of the eye distance of the
template's on average (the crops are aligned to it). Close-ups: the clean crops enlarged to
1024-1600 px (faces of 500-800 px, beyond the biggest anchor) must give one face. Non-faces: the
parts of the London photos and of the real-lq group photos away from every face, clean and
degraded the same ways; any detection there is a false one. Times are CPU milliseconds per
image, with one thread. "before" is faces/detect.py at git revision `--before`.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from git_module import module_at

from ented_cli.faces.align import TEMPLATE_512
from ented_cli.faces.detect import FaceDetector
from ented_cli.train.degrade import DegradationParams, apply_params

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
# blur sigma at 512 px, down-sampling factor, noise sigma (8-bit levels), JPEG quality
LEVELS = {
    "x8": DegradationParams(4.0, 4.0, 0.0, 8.0, 10.0, False, 10, False),
    "x12": DegradationParams(6.0, 6.0, 0.0, 12.0, 12.0, False, 10, False),
    "x16": DegradationParams(8.0, 8.0, 0.0, 16.0, 15.0, False, 10, False),
}
EYE_DISTANCE_512 = float(np.linalg.norm(TEMPLATE_512[1] - TEMPLATE_512[0]))


def degrade(bgr: np.ndarray, params: DegradationParams | None, seed: int) -> np.ndarray:
    if params is None:
        return bgr
    x = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)[None]
    x = x.float() / 127.5 - 1
    y = apply_params(x, [params], None, blur_radius=40, noise_seed=seed)
    out = ((y[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return np.ascontiguousarray(out[:, :, ::-1])


def on_the_face(faces: list, side: int) -> bool:
    """Some face's landmarks are within a third of the eye distance of the template's."""
    template = TEMPLATE_512 * side / 512
    for face in faces:
        error = np.linalg.norm(face.landmarks - template, axis=1).mean()
        if error < EYE_DISTANCE_512 * side / 512 / 3:
            return True
    return False


def timed(detector: FaceDetector, image: np.ndarray) -> tuple[list, float]:
    """Faces and the CPU seconds they took (one thread: steady on a shared machine)."""
    start = time.process_time()
    faces = detector.detect(image)
    return faces, time.process_time() - start


def non_faces(first: FaceDetector) -> list[np.ndarray]:
    """Parts of real photos with no face in them: below the chin and at the sides of the London
    portraits, and 256 px tiles of the real-lq group photos away from every face found."""
    out = []
    with open(DATA / "london" / "london.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["raw"]]
    for row in rows:
        photo = cv2.imread(str(DATA / "london" / row["raw"]), cv2.IMREAD_COLOR)
        lm = np.array(row["lm5_raw"].split(), dtype=np.float64).reshape(5, 2)
        chin = int(lm[:, 1].max() + 0.8 * (lm[:, 1].max() - lm[:, 1].min()))
        if photo.shape[0] - chin > 300:
            out.append(photo[chin:])
        out += [photo[:, :200], photo[:, -200:]]
    for path in sorted((DATA / "real-lq" / "whole").iterdir()):
        photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
        busy = np.zeros(photo.shape[:2], bool)
        for face in first.detect(photo):
            x0, y0, x1, y1 = face.box
            pad = 0.75 * max(x1 - x0, y1 - y0)
            busy[
                max(int(y0 - pad), 0) : max(int(y1 + pad), 0),
                max(int(x0 - pad), 0) : max(int(x1 + pad), 0),
            ] = True
        tile = 256 if min(photo.shape[:2]) >= 256 else min(photo.shape[:2])
        for y in range(0, photo.shape[0] - tile + 1, tile):
            for x in range(0, photo.shape[1] - tile + 1, tile):
                if not busy[y : y + tile, x : x + tile].any():
                    out.append(photo[y : y + tile, x : x + tile])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=100)
    parser.add_argument("--before", default="HEAD", help="git revision of the old faces/detect.py")
    parser.add_argument(
        "--save-case", type=Path, help="write one x16 crop only the second look finds"
    )
    args = parser.parse_args()
    if not (DATA / "london" / "london.csv").is_file():
        sys.exit(f"detect_recall: {DATA} is missing; this needs the project's ../shared/data")
    old = module_at(args.before, "src/ented_cli/faces/detect.py").FaceDetector(threads=1)
    first = FaceDetector(threads=1, rescue=False)
    both = FaceDetector(threads=1)
    with open(DATA / "london" / "london.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["expression"] == "neutral"][: args.faces]
    crops = [cv2.imread(str(DATA / "london" / r["aligned"]), cv2.IMREAD_COLOR) for r in rows]

    print(f"{len(crops)} London faces, 512 px crops; found = landmarks on the face")
    print(f"before = faces/detect.py at {args.before}; times in CPU ms, one thread")
    print(
        f"{'level':>6} | {'before':>6} | {'first pass':>10} | {'+ second':>8} | "
        "extra ms where the first pass finds none"
    )
    saved = False
    for name, params in LEVELS.items():
        found_old = found_first = found_both = 0
        extra = []
        for k, crop in enumerate(crops):
            image = degrade(crop, params, seed=1000 + k)
            found_old += on_the_face(old.detect(image), 512)
            faces_1, t1 = timed(first, image)
            faces_2, t2 = timed(both, image)
            found_first += on_the_face(faces_1, 512)
            found_both += on_the_face(faces_2, 512)
            if not faces_1:
                extra.append((t2 - t1) * 1000)
            if args.save_case and not saved and name == "x16" and not faces_1 and faces_2:
                case = image
                if on_the_face(faces_2, 512) and _still_a_case(first, both, case, args.save_case):
                    saved = True
                    print(f"saved {args.save_case} ({rows[k]['aligned']}, seed {1000 + k})")
        ms = f"{np.mean(extra):.0f} (n={len(extra)})" if extra else "-"
        print(f"{name:>6} | {found_old:>6} | {found_first:>10} | {found_both:>8} | {ms}")

    print(f"\nclose-ups: the same crops enlarged, pictures with exactly one face (of {len(crops)})")
    print(f"{'side':>6} | {'before':>6} | {'after':>6}")
    for side in (1024, 1280, 1600):
        single_old = single_new = 0
        for crop in crops:
            image = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
            single_old += len(old.detect(image)) == 1
            single_new += len(both.detect(image)) == 1
        print(f"{side:>6} | {single_old:>6} | {single_new:>6}")

    negatives = non_faces(first)
    print(f"\n{len(negatives)} pictures without a face: pictures with a (false) detection")
    print(f"{'level':>6} | {'before':>6} | {'first pass':>10} | {'+ second':>8} | extra ms")
    for name, params in {"clean": None, **LEVELS}.items():
        false_0 = false_1 = false_2 = 0
        extra = []
        for k, picture in enumerate(negatives):
            image = degrade(picture, params, seed=k)
            false_0 += bool(old.detect(image))
            faces_1, t1 = timed(first, image)
            faces_2, t2 = timed(both, image)
            false_1 += bool(faces_1)
            false_2 += bool(faces_2)
            if not faces_1:
                extra.append((t2 - t1) * 1000)
        print(f"{name:>6} | {false_0:>6} | {false_1:>10} | {false_2:>8} | {np.mean(extra):.0f}")


def _still_a_case(first: FaceDetector, both: FaceDetector, image: np.ndarray, path: Path) -> bool:
    """Write `image` as a JPEG (q95) and keep it if, read back, it still needs the second look."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    again = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if first.detect(again) or not on_the_face(both.detect(again), 512):
        path.unlink()
        return False
    return True


if __name__ == "__main__":
    main()
