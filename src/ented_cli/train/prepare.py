"""`ented prepare-data`: a folder of raw photos (one sub-folder per person) → aligned training crops.

Writes DST/<person>/<photo>.jpg (aligned, JPEG q93) and DST/faces.csv with the columns of the
shared celeba-wild.csv (path, identity, native_px, id_consistency, det_score, lm5, split), so
`ented train` can use it with `data_root = DST`.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ented_cli.errors import EntedError, InputError

CSV_NAME = "faces.csv"
COLUMNS = ("path", "identity", "native_px", "id_consistency", "det_score", "lm5", "split")


def _is_val(person: str, val_fraction: float) -> bool:
    # Hash, not random: the split of a person never changes when photos are added.
    h = int(hashlib.sha1(person.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < val_fraction


def native_px(matrix: np.ndarray, size: int) -> float:
    """Side of the crop in source pixels (the alignment's scale tells how much it was resized)."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    return size / scale


def prepare_dataset(
    src: Path,
    dst: Path,
    *,
    val_fraction: float = 0.1,
    size: int = 256,
    progress: Callable[[str], None] = lambda m: None,
) -> dict:
    from ented_cli.faces.align import estimate_alignment, warp_face
    from ented_cli.faces.detect import FaceDetector
    from ented_cli.faces.identity import IdentityEncoder, similarity
    from ented_cli.imaging.read import read_image
    from ented_cli.paths import images_in, subfolders

    people = subfolders(src)
    if not people:
        raise InputError(
            f"{src}: no sub-folders; put each person's photos in a folder of their own"
        )
    detector, encoder = FaceDetector(), IdentityEncoder()
    rows, skipped = [], []
    for person in people:
        faces = []
        for photo in images_in(person):
            try:
                image = read_image(photo)
            except EntedError as e:
                skipped.append(str(e))
                continue
            found = detector.detect(image.pixels)
            if not found:
                skipped.append(f"{photo}: no face found")
                continue
            face = max(found, key=lambda f: f.size)  # the subject, not bystanders
            matrix = estimate_alignment(face.landmarks, size)
            pixels = (
                image.pixels
                if image.pixels.dtype == np.uint8
                else (image.pixels >> 8).astype(np.uint8)
            )
            crop = warp_face(pixels, matrix, size)
            if crop.ndim == 2:
                crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
            out = Path(dst) / person.name / (photo.stem + ".jpg")
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), crop, [cv2.IMWRITE_JPEG_QUALITY, 93])
            faces.append((out, crop, face, matrix))
        if not faces:
            continue
        embeddings = encoder.embed([c for _, c, _, _ in faces])
        sims = np.atleast_2d(similarity(embeddings, embeddings))
        split = "val" if _is_val(person.name, val_fraction) else "train"
        for i, (out, _, face, matrix) in enumerate(faces):
            others = np.delete(sims[i], i)
            consistency = float(np.median(others)) if len(others) else 1.0
            rows.append(
                {
                    "path": out.relative_to(dst).as_posix(),
                    "identity": person.name,
                    "native_px": round(native_px(matrix, size), 1),
                    "id_consistency": round(consistency, 3),
                    "det_score": round(face.score, 3),
                    "lm5": " ".join(f"{v:.1f}" for v in face.landmarks.flatten()),
                    "split": split,
                }
            )
        progress(f"{person.name}: {len(faces)} face(s) ({split})")
    csv_path = Path(dst) / CSV_NAME
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for message in skipped:
        progress(f"skipped {message}")
    return {
        "csv": str(csv_path),
        "faces": len(rows),
        "people": len({r["identity"] for r in rows}),
        "skipped": len(skipped),
    }
