"""Face detection on real photos: the London set (with reference landmarks) and real-lq group photos."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ented_cli.faces.align import template
from ented_cli.faces.detect import Face, FaceDetector, nms, select_faces

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DATA = Path(__file__).resolve().parent / "data"

# The shared lm5_raw of this photo lies on the neck and shirt, not the face (the shared aligned
# crop made from it is off in the same way), so it cannot serve as ground truth.
BAD_REFERENCE_LANDMARKS = {"raw/005_neutral.jpg"}


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def london(shared_data: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, BGR photo, reference landmarks (5, 2)) for every London photo with a raw file."""
    root = shared_data / "london"
    with open(root / "london.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["raw"]]
    out = []
    for row in rows:
        image = cv2.imread(str(root / row["raw"]), cv2.IMREAD_COLOR)
        lm = np.array(row["lm5_raw"].split(), dtype=np.float64).reshape(5, 2)
        out.append((row["raw"], image, lm))
    assert len(out) >= 30
    return out


def landmark_error(found: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-point distance in units of the reference inter-ocular distance."""
    return np.linalg.norm(found - reference, axis=1) / np.linalg.norm(reference[1] - reference[0])


@pytest.mark.slow
def test_each_london_portrait_has_one_face_with_accurate_landmarks(detector, london):
    errors = []
    for name, image, reference in london:
        faces = detector.detect(image)
        assert len(faces) == 1, f"{name}: {len(faces)} faces"
        face = faces[0]
        assert face.box.shape == (4,) and face.box.dtype == np.float32
        assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
        assert face.score >= 0.9
        if name not in BAD_REFERENCE_LANDMARKS:
            errors.append(landmark_error(face.landmarks, reference))
    errors = np.array(errors)
    print(f"london landmark error / eye distance: mean {errors.mean():.4f} max {errors.max():.4f}")
    # Measured: mean 0.045, worst point 0.115 (the reference comes from a different detector).
    assert errors.mean() < 0.05
    assert errors.max() < 0.15


def test_landmarks_are_sub_pixel(detector, london):
    landmarks = detector.detect(london[0][1])[0].landmarks
    assert np.any(np.abs(landmarks - np.round(landmarks)) > 0.01)


def test_large_image_is_detected_and_landmarks_scale_with_it(detector, london):
    image = london[1][1]
    small = detector.detect(image)
    big = detector.detect(cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC))
    assert len(big) == 1
    # pixel centres: x_big + 0.5 = 3 (x + 0.5)
    scaled_back = (big[0].landmarks + 0.5) / 3 - 0.5
    assert landmark_error(scaled_back, small[0].landmarks).max() < 0.03
    assert big[0].size == pytest.approx(3 * small[0].size, rel=0.05)


def test_tiny_image_with_a_face_filling_it(detector, london):
    errors = []
    for name, image, reference in london[:8]:
        if name in BAD_REFERENCE_LANDMARKS:
            continue
        side = 189
        tiny = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
        faces = detector.detect(tiny)
        assert len(faces) == 1, name
        errors.append(landmark_error(faces[0].landmarks, (reference + 0.5) * side / 1024 - 0.5))
    assert np.mean(errors) < 0.06


def test_grayscale_uint16_and_bgra_inputs_find_the_same_face(detector, london):
    image = london[2][1]
    colour = detector.detect(image)[0]
    gray = detector.detect(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    deep = detector.detect(image.astype(np.uint16) * 257)
    bgra = detector.detect(cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))
    for faces in (gray, deep, bgra):
        assert len(faces) == 1
        assert landmark_error(faces[0].landmarks, colour.landmarks).max() < 0.05
    assert np.array_equal(deep[0].landmarks, colour.landmarks)  # 16-bit -> 8-bit is exact here


def test_picture_without_a_face_gives_no_faces(detector):
    gradient = np.tile(np.linspace(0, 255, 640, dtype=np.float32), (480, 1)).astype(np.uint8)
    assert detector.detect(np.dstack([gradient, gradient[::-1], np.full_like(gradient, 90)])) == []
    assert detector.detect(np.full((300, 300), 128, np.uint8)) == []


@pytest.mark.parametrize(("name", "count"), [("01.jpg", 4), ("02.png", 4)])
def test_group_photos_find_every_face_and_no_hands(detector, shared_data, name, count):
    # 01.jpg: four men in a 248x189 scan (faces ~52 px); 02.png: BGRA, four men, one raised hand
    image = cv2.imread(str(shared_data / "real-lq" / "whole" / name), cv2.IMREAD_UNCHANGED)
    faces = detector.detect(image)
    assert len(faces) == count
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    for face in faces:  # every landmark lies inside its own box
        x1, y1, x2, y2 = face.box
        assert np.all((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2]))


@pytest.mark.parametrize("name", ["astronaut.png", "astronaut_degraded.jpg", "grace_hopper.jpg"])
def test_bundled_example_has_one_face(detector, name):
    path = EXAMPLES / name
    if not path.is_file():
        pytest.skip(f"examples/{name} is not in the repository yet")
    faces = detector.detect(cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    assert len(faces) == 1
    left_eye, right_eye = faces[0].landmarks[:2]
    assert left_eye[0] < right_eye[0]  # image-left eye first


def test_detection_time_on_a_1024_photo(detector, london):
    image = london[0][1]
    detector.detect(image)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        detector.detect(image)
        times.append(time.perf_counter() - start)
    print(f"detect 1024x1024, one face: {min(times) * 1000:.0f} ms (best of 3)")
    assert min(times) < 2.0  # generous: the CI machine is shared; ~0.1 s measured on 2 cores


def face(x: float, y: float, size: float, score: float = 0.99) -> Face:
    box = np.array([x - size / 2, y - size / 2, x + size / 2, y + size / 2], np.float32)
    return Face(box=box, score=score, landmarks=np.zeros((5, 2), np.float32))


def test_select_faces_modes_and_min_face():
    shape = (1000, 1600)  # height, width
    centre_small = face(800, 500, 40)
    off_centre_big = face(600, 450, 300)
    corner = face(100, 100, 200)
    faces = [corner, centre_small, off_centre_big]

    assert select_faces(faces, "all", shape) == faces
    assert select_faces(faces, "match", shape) == faces
    assert select_faces(faces, "largest", shape) == [off_centre_big]
    # a big face a little off-centre beats a tiny bystander exactly in the middle ...
    assert select_faces(faces, "center", shape) == [off_centre_big]
    # ... but of two similar faces the one nearer the centre wins
    assert select_faces([corner, face(850, 520, 190)], "center", shape)[0].box[0] > 700
    assert select_faces(faces, "all", shape, min_face=100) == [corner, off_centre_big]
    assert select_faces(faces, "largest", shape, min_face=1000) == []
    assert face(0, 0, 50).size == pytest.approx(50)
    with pytest.raises(ValueError, match="center"):
        select_faces(faces, "middle", shape)


# ------------------------------------------------- degraded faces, close-ups, faces inside faces


def test_second_look_finds_a_heavily_degraded_face(detector):
    """London 004 as a 512 px crop, blurred, down-sampled x16 and back up, noisy, JPEG q10
    (tests/data/README.md). The first pass sees no face at all (best score 0.06) and the photo
    would be copied unchanged; shrunk until the face is about 60 px, it is a face again."""
    image = cv2.imread(str(DATA / "london-004-x16.jpg"), cv2.IMREAD_COLOR)
    assert FaceDetector(rescue=False).detect(image) == []
    faces = detector.detect(image)
    assert len(faces) == 1
    # the crop is aligned to the template: the landmarks found must be near it
    eye_distance = np.linalg.norm(template(512)[1] - template(512)[0])
    error = np.linalg.norm(faces[0].landmarks - template(512), axis=1).mean() / eye_distance
    print(f"second look: score {faces[0].score:.3f}, landmark error {error:.3f} eye distances")
    assert error < 0.2


def test_second_look_finds_nothing_in_a_picture_without_a_face(detector, london):
    """The second look only runs when the first finds nothing, and must not invent a face: the
    shirts and backdrops below the London faces, degraded like the face above."""
    image = london[0][1]
    below = image[-300:]
    blurred = cv2.resize(cv2.resize(below, None, fx=1 / 12, fy=1 / 12), below.shape[1::-1])
    assert detector.detect(below) == []
    assert detector.detect(blurred) == []


def test_nms_drops_a_box_inside_a_better_one_but_keeps_separate_faces():
    boxes = np.array(
        [
            [100, 100, 300, 360],  # a face, 0.99
            [130, 230, 270, 360],  # its lower half seen as a "face", 0.91: IoU 0.35, inside
            [260, 200, 340, 300],  # a child's face by the cheek: half of it inside the box
            [500, 100, 560, 170],  # a small face elsewhere
            [515, 115, 545, 160],  # and a box inside that one, but scoring higher: kept
        ],
        dtype=np.float64,
    )
    scores = np.array([0.99, 0.91, 0.95, 0.93, 0.97])
    kept = sorted(nms(boxes, scores, 0.4).tolist())
    assert kept == [0, 2, 3, 4]


def test_a_child_beside_an_adults_cheek_is_a_second_face(detector, london):
    adult, child = london[2][1], london[9][1]
    big = detector.detect(adult)[0]
    small = detector.detect(child)[0]
    # the child's head, scaled so its face is 45 % of the adult's, pressed to the adult's cheek
    scale = 0.45 * big.size / small.size
    x0, y0, x1, y1 = small.box
    pad = 0.6 * (x1 - x0)
    head = child[int(y0 - pad) : int(y1 + 0.6 * pad), int(x0 - pad) : int(x1 + pad)]
    head = cv2.resize(head, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = head.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    cv2.ellipse(alpha, (w // 2, h // 2), (int(0.45 * w), int(0.48 * h)), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.03 * w)[:, :, None]
    left = int(big.box[2] - 0.15 * big.size - pad * scale)
    top = int((big.box[1] + big.box[3]) / 2 - h / 2)
    photo = adult.copy()
    spot = photo[top : top + h, left : left + w].astype(np.float32)
    photo[top : top + h, left : left + w] = (spot * (1 - alpha) + head * alpha).astype(np.uint8)
    faces = detector.detect(photo)
    assert len(faces) == 2
    assert sorted(f.size for f in faces)[0] < 0.6 * sorted(f.size for f in faces)[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["005_neutral", "022_neutral", "132_neutral"])
def test_a_close_up_is_one_face(detector, shared_data, name):
    """A face larger than the detector's biggest anchors (512 px) used to come out as two to five
    faces (its halves, its chin), each restored; at 1024 and 1600 px these are one face."""
    crop = cv2.imread(str(shared_data / "london" / "aligned" / f"{name}.jpg"), cv2.IMREAD_COLOR)
    for side in (1024, 1600):
        image = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
        faces = detector.detect(image)
        assert len(faces) == 1, (side, [(f.score, f.box.tolist()) for f in faces])
        # and it is the whole face: its eyes where the template puts them
        eye_distance = np.linalg.norm(template(side)[1] - template(side)[0])
        error = np.linalg.norm(faces[0].landmarks - template(side), axis=1).mean()
        assert error < 0.15 * eye_distance
