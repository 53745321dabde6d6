"""`ented restore --save-cmp`: a labelled before | after of the photo, in the output's lossless
format when it has one, and a sheet of the restored faces' crops (before | after | reference),
one tile per restored face. Real detector, identity model and shipped weights on examples/."""

import json

import cv2
import numpy as np
import pytest

from ented_cli.faces.align import estimate_alignment, warp_face
from ented_cli.imaging.pixels import LoadedImage
from ented_cli.pipeline.compare_image import BAND, frame_comparison
from tests.test_cli import ASTRONAUT, DEGRADED, HOPPER
from tests.test_cli import ented as run_ented


def ented(*args):
    result = run_ented(*args)
    assert result.exit_code == 0, result.stderr
    (report,) = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return report


def has_text(band: np.ndarray) -> bool:
    """White label strokes on the dark band."""
    return int((band.min(axis=2) > 200).sum()) > 50


def group_photo(path):
    """Three faces side by side: the degraded astronaut, Grace Hopper, the astronaut mirrored."""
    a, h = cv2.imread(str(DEGRADED)), cv2.imread(str(HOPPER))
    h = cv2.resize(h, (round(h.shape[1] * a.shape[0] / h.shape[0]), a.shape[0]), cv2.INTER_AREA)
    cv2.imwrite(str(path), np.concatenate([a, h, a[:, ::-1]], axis=1))
    return path


def sheet_tiles(sheet: np.ndarray, image: np.ndarray, faces: list[dict]) -> list[int]:
    """Which faces' aligned crops of `image` (the "before" of a tile) the sheet shows, in
    reading order. The panels are the 256 px blocks that the band's colour separates (a JPEG
    sheet's band is only near that colour)."""
    photo = (np.abs(sheet.astype(int) - BAND).max(axis=2) > 24).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(photo)
    panels = [(y, x) for x, y, w, h, _ in stats[1:] if 248 <= w <= 264 and 248 <= h <= 264]
    rows: list[list[tuple[int, int]]] = []
    for y, x in sorted(panels):  # a row's panels start within a few pixels of each other
        if not rows or y - rows[-1][0][0] > 100:
            rows.append([])
        rows[-1].append((y, x))
    panels = [p for row in rows for p in sorted(row, key=lambda p: p[1])]
    crops = {
        i: warp_face(image, estimate_alignment(np.float32(f["landmarks"]), 256), 256)
        for i, f in enumerate(faces)
    }
    shown = []
    for y, x in panels:
        panel = sheet[y : y + 256, x : x + 256].astype(float)
        diffs = {i: np.abs(panel - c).mean() for i, c in crops.items()}
        best = min(diffs, key=diffs.get)
        if diffs[best] < 4.0:  # the same crop (the report's landmarks are rounded)
            shown.append(best)
    return shown


@pytest.mark.slow
def test_png_photo_gets_a_labelled_lossless_comparison_and_a_face_sheet(tmp_path):
    src = tmp_path / "astronaut.png"
    cv2.imwrite(str(src), cv2.imread(str(DEGRADED)))
    out = tmp_path / "out" / "astronaut.png"
    report = ented("restore", src, "--ref", ASTRONAUT, "-o", out, "--json", "--save-cmp")
    cmp_path, faces_path = out.parent / "astronaut_cmp.png", out.parent / "astronaut_cmp_faces.png"
    assert report["comparison"] == str(cmp_path) and report["comparison_faces"] == str(faces_path)
    before, after = cv2.imread(str(src)), cv2.imread(str(out))
    cmp = cv2.imread(str(cmp_path))
    h, w = before.shape[:2]
    band = cmp.shape[0] - h
    assert band >= 20  # a label band above the photos, not a plain concatenation
    # Lossless: below the band, the halves are the input and the output, pixel for pixel.
    assert np.array_equal(cmp[band:, :w], before)
    assert np.array_equal(cmp[band:, -w:], after)
    assert has_text(cmp[:band, :w]) and has_text(cmp[:band, -w:])  # "before", "after (...)"

    sheet = cv2.imread(str(faces_path))
    assert sheet_tiles(sheet, before, report["faces"]) == [0]
    assert has_text(sheet[:20])  # "face 0: with reference 'astronaut'"
    assert report["faces"][0]["mode"] == "reference"
    # The third panel of the tile is the reference it was paired with, aligned.
    ref = cv2.imread(str(ASTRONAUT))
    assert sheet_tiles(sheet, ref, [{"landmarks": _landmarks(ref)}]) == [0]


def _landmarks(image: np.ndarray) -> list:
    from ented_cli.faces.detect import FaceDetector

    face = max(FaceDetector().detect(image), key=lambda f: f.size)
    return face.landmarks.tolist()


@pytest.mark.slow
def test_group_photo_face_sheet_has_one_tile_per_restored_face(tmp_path):
    src = group_photo(tmp_path / "group.jpg")
    out = tmp_path / "out" / "group.jpg"
    # --no-guard: the group is made of sharp photos, which the guard would leave as they were.
    args = ("--ref", ASTRONAUT, "-o", out, "--json", "--save-cmp", "--no-guard")
    report = ented("restore", src, *args)
    assert report["comparison"] == str(out.parent / "group_cmp.jpg")  # JPEG output: JPEG
    restored = [i for i, f in enumerate(report["faces"]) if f["restored"]]
    assert len(restored) == 3
    sheet = cv2.imread(report["comparison_faces"])
    assert report["comparison_faces"] == str(out.parent / "group_cmp_faces.jpg")
    image = cv2.imread(str(src))
    assert sheet_tiles(sheet, image, report["faces"]) == restored  # in the report's order


@pytest.mark.slow
def test_faces_left_as_they_were_have_no_tile(tmp_path):
    src = group_photo(tmp_path / "group.png")
    report = ented(
        "restore",
        src,
        "--faces",
        "largest",
        "-o",
        tmp_path / "o.png",
        "--json",
        "--save-cmp",
        "--no-guard",
    )
    restored = [i for i, f in enumerate(report["faces"]) if f["restored"]]
    assert len(report["faces"]) == 3 and len(restored) == 1
    sheet = cv2.imread(report["comparison_faces"])
    assert sheet_tiles(sheet, cv2.imread(str(src)), report["faces"]) == restored


def test_small_photo_comparison_is_enlarged_so_its_labels_are_readable():
    tiny = np.full((40, 60, 3), 128, np.uint8)
    image = LoadedImage(tiny, None, None, None, "png", "tiny.png")
    cmp = frame_comparison(image, image, fidelity=0.7)
    grow = 7  # the smallest whole factor that makes the 60 px halves at least 384 px wide
    half, photo_rows, divider = 60 * grow, 40 * grow, 2
    assert cmp.shape[1] == 2 * half + divider
    band = cmp.shape[0] - photo_rows
    assert band >= 20 and has_text(cmp[:band, :half]) and has_text(cmp[:band, -half:])
    # Nearest-pixel enlargement: the photo's pixels are repeated, not invented.
    assert np.all(cmp[band:, :half] == 128) and np.all(cmp[band:, -half:] == 128)


def test_comparison_names_keep_the_old_jpeg_name_and_follow_lossless_outputs():
    from pathlib import Path

    from ented_cli.paths import side_path

    assert side_path("out/a.jpg", "cmp") == Path("out/a_cmp.jpg")  # as before --save-cmp v2
    assert side_path("out/a.jpg", "cmp_faces") == Path("out/a_cmp_faces.jpg")
    for lossless in ("a.png", "a.TIF", "a.tiff", "a.bmp"):
        assert side_path(lossless, "cmp").suffix == ".png"
        assert side_path(lossless, "cmp_faces").suffix == ".png"
    assert side_path("a.webp", "cmp").suffix == ".jpg"
    assert side_path("a.webp", "cmp", quality=100).suffix == ".png"  # lossless WebP
