"""Seams of the paste-back, before and after a change to faces/paste.py (docs/paste-back.md).

    python scripts/paste_seam.py --before aac578a --images docs/img

Scenes (src/ented_cli/evaluation/seams.py): London studio photos (CC BY 4.0) as 320 px head
shots, the backdrop keyed out and replaced by navy or a flag, or kept, then blurred (1 px) and
covered in colour noise. Each is read, detected, aligned and restored blind by the shipped
weights (the real pipeline), and the restored faces are pasted back twice: with faces/paste.py
as it is in git revision `--before`, and as it is in the working tree. Printed per background:

- halo: mean change of the backdrop pixels in the face's crop square (8-bit levels; 0 = none),
  and in brackets the change that 1 % of them exceed;
- grain step: the output's noise level just inside the blend's edge over that just outside it
  (1 = the photo's grain runs on across the seam; near 0 = a clean face in a noisy photo), and
  in brackets the same ratio of the input photo along the same edge (what "no seam" reads);
- face grain: the noise level in the middle of the face over that of the photo around it (how
  much of the clean restoration is kept inside the face).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from git_module import module_at

from ented_cli.evaluation.seams import grain_step, halo, make_scene
from ented_cli.faces.align import unwarp_face
from ented_cli.faces.paste import noise_level
from ented_cli.imaging.pixels import to_float_bgr
from ented_cli.pipeline.restore import RestoreOptions, RestorePipeline

ROOT = Path(__file__).resolve().parents[1]
LONDON = ROOT.parent / "shared" / "data" / "london"
# (background, noise sigma in 8-bit levels, name of its picture for the docs): a dark backdrop,
# a busy one, a noisy photo
SCENES = (
    ("navy", 3.0, "paste-back-navy"),
    ("flag", 5.0, "paste-back-flag"),
    ("navy", 12.0, "paste-back-noisy"),
    ("studio", 12.0, None),
)


def measure(
    module, frame: np.ndarray, faces: list, backdrop: np.ndarray
) -> tuple[np.ndarray, dict]:
    crops = [f.restored for f in faces]
    matrices = [f.matrix for f in faces]
    out = module.paste_faces(frame, crops, matrices, originals=[f.crop for f in faces])
    weight = np.max([module.pasted_mask(m, 256, frame.shape[:2]) for m in matrices], axis=0)
    square = (
        np.max(
            [unwarp_face(np.ones((256, 256), np.float32), m, frame.shape[:2]) for m in matrices],
            axis=0,
        )
        > 0
    )
    gray = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    core = np.max(
        [unwarp_face(module.face_mask(256), m, frame.shape[:2]) for m in matrices], axis=0
    )
    core = cv2.erode((core >= 0.999).astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
    around = (weight == 0) & (
        cv2.dilate((weight > 0).astype(np.uint8), np.ones((13, 13), np.uint8)) > 0
    )
    numbers = {
        "halo": halo(out, frame, backdrop, square),
        "halo_p99": halo(out, frame, backdrop, square, quantile=0.99),
        "grain_step": grain_step(out, weight),
        "photo_step": grain_step(frame, weight),
        "face_grain": noise_level(gray, core) / max(noise_level(gray, around), 1e-9),
    }
    return out, numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="HEAD", help="git revision of the old faces/paste.py")
    parser.add_argument("--people", type=int, default=4, help="London people (neutral photos)")
    parser.add_argument(
        "--images", type=Path, help="write the docs' before/after pictures (first person) here"
    )
    args = parser.parse_args()
    if not (LONDON / "london.csv").is_file():
        sys.exit(f"paste_seam: {LONDON} is missing; this needs the project's ../shared/data")

    import ented_cli.faces.paste as current

    before = module_at(args.before, "src/ented_cli/faces/paste.py")
    with open(LONDON / "london.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["raw"] and r["expression"] == "neutral"]
    rows = rows[: args.people]
    pipeline = RestorePipeline.from_weights(None, RestoreOptions(), device="cpu")
    results: dict[tuple[str, float], list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, row in enumerate(rows):
            photo = cv2.imread(str(LONDON / row["raw"]), cv2.IMREAD_COLOR)
            landmarks = np.array(row["lm5_raw"].split(), dtype=np.float64).reshape(5, 2)
            for background, noise, picture in SCENES:
                scene = make_scene(photo, landmarks, background, noise, seed=k)
                path = Path(tmp) / f"{k}-{background}-{noise:g}.png"
                cv2.imwrite(str(path), np.round(scene.image * 255).astype(np.uint8))
                work = pipeline.prepare(path, None)
                pipeline.restore([work])
                faces = [f for f in work.faces if f.restored is not None]
                if not faces:
                    print(f"{row['raw']} on {background}: no face found", file=sys.stderr)
                    continue
                frame = to_float_bgr(work.image)
                old, old_numbers = measure(before, frame, faces, scene.backdrop)
                new, new_numbers = measure(current, frame, faces, scene.backdrop)
                results.setdefault((background, noise), []).append((old_numbers, new_numbers))
                if args.images and picture and k == 0:
                    save_crops(args.images, picture, frame, old, new, faces[0])

    print(
        f"{len(rows)} London people; before = faces/paste.py at {args.before}, after = working tree"
    )
    print(
        f"{'background':>10} {'noise':>5} | {'halo (p99)':>22} | {'grain step (photo)':>25} | "
        f"{'face grain':>11}"
    )
    for (background, noise), pairs in results.items():
        old, new = ({k: np.mean([p[i][k] for p in pairs]) for k in pairs[0][i]} for i in (0, 1))
        print(
            f"{background:>10} {noise:5g} | {old['halo']:4.2f} ({old['halo_p99']:4.1f}) → "
            f"{new['halo']:4.2f} ({new['halo_p99']:4.1f}) | "
            f"{old['grain_step']:4.2f} ({old['photo_step']:4.2f}) → "
            f"{new['grain_step']:4.2f} ({new['photo_step']:4.2f}) | "
            f"{old['face_grain']:4.2f} → {new['face_grain']:4.2f}"
        )


def save_crops(folder: Path, name: str, frame, old, new, face) -> None:
    """input | before | after around the head, enlarged 2x (nearest) so the grain shows."""
    folder.mkdir(parents=True, exist_ok=True)
    x0, y0, x1, y1 = face.face.box
    size = 1.6 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = frame.shape[:2]
    left = int(np.clip(cx - size / 2, 0, w - size))
    top = int(np.clip(cy - size / 2, 0, h - size))
    side = int(size)
    tiles = [im[top : top + side, left : left + side] for im in (frame, old, new)]
    strip = np.hstack([np.pad(t, ((0, 0), (0, 4), (0, 0)), constant_values=1.0) for t in tiles])
    strip = (np.clip(strip, 0, 1) * 255 + 0.5).astype(np.uint8)
    strip = cv2.resize(strip, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(folder / f"{name}.jpg"), strip, [cv2.IMWRITE_JPEG_QUALITY, 80])


if __name__ == "__main__":
    main()
