"""Property tests (hypothesis) for the geometry: alignment, its inverse, warping, paste-back, and the
order of the five landmarks, over random image sizes, face positions, rolls and sizes.

A face here is described the way the pipeline sees it: the similarity that maps the image onto
the aligned crop. Its "size" is the side of the crop's square in the image (20 to 1000 px), its
roll is within +-60 degrees, and its centre may lie anywhere in the image, or a little outside it.
All runs are derandomised (the same examples every run, no example database) and sized to finish
in a few seconds.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ented_cli.faces.align import (
    compose_affine,
    estimate_alignment,
    invert_affine,
    template,
    transform_points,
    unwarp_face,
    warp_face,
)
from ented_cli.faces.detect import Face, select_faces
from ented_cli.faces.paste import (
    face_mask,
    faces_box,
    paste_faces,
    pasted_mask,
)
from tests.conftest import EXAMPLES

# Image-left eye, image-right eye, nose, mouth corners: mirroring an image swaps left and right.
MIRROR_ORDER = [1, 0, 2, 4, 3]


def properties(examples: int):
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        # no "explain" phase: it traces every line of numpy and OpenCV glue, minutes per failure
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def face_matrix(cx: float, cy: float, face_px: float, roll_deg: float, size: int) -> np.ndarray:
    """Image -> crop similarity for a face of `face_px` centred at (cx, cy), rolled by roll_deg."""
    scale = size / face_px
    a = np.deg2rad(roll_deg)
    rot = scale * np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    centre = np.full(2, (size - 1) / 2)
    return np.hstack([rot, (centre - rot @ [cx, cy])[:, None]])


rolls = st.floats(-60, 60)
face_sizes = st.floats(20, 1000)
crop_sizes = st.sampled_from([128, 256, 512])


@st.composite
def faces_in_frames(draw, max_side: int = 4000, outside: float = 0.3):
    """(height, width, matrix, size): one face, its centre up to `outside` of its size off-frame."""
    face_px = draw(face_sizes)
    height = draw(st.integers(16, max_side))
    width = draw(st.integers(16, max_side))
    margin = outside * face_px
    cx = draw(st.floats(-margin, width + margin))
    cy = draw(st.floats(-margin, height + margin))
    size = draw(crop_sizes)
    return height, width, face_matrix(cx, cy, face_px, draw(rolls), size), size


def crop_scale(matrix: np.ndarray) -> float:
    """Crop pixels per image pixel."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def roll_of(matrix: np.ndarray) -> float:
    """The matrix's rotation in degrees (the face's roll, sign as in face_matrix)."""
    return float(np.degrees(np.arctan2(-matrix[1, 0], matrix[0, 0])))


def pixel_grid(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x.ravel(), y.ravel()], axis=1).astype(np.float64)


# ------------------------------------------------------------------- alignment and its inverse


@properties(200)
@given(faces_in_frames(), st.sampled_from(["lstsq", "lmeds"]))
def test_the_alignment_puts_the_landmarks_on_the_template(face, method):
    _, _, truth, size = face
    landmarks = transform_points(template(size), invert_affine(truth))
    matrix = estimate_alignment(landmarks, size, method)
    hit = transform_points(landmarks, matrix)
    # float32 template, float64 fit: far below a pixel, at every face size and roll
    np.testing.assert_allclose(hit, template(size), atol=1e-3 * size / 256)
    np.testing.assert_allclose(matrix[:, :2], truth[:, :2], rtol=0, atol=1e-5 * crop_scale(truth))
    assert np.linalg.det(matrix[:, :2]) > 0  # never a mirror image


@properties(200)
@given(faces_in_frames(), st.floats(0.0, 0.08))
def test_noisy_landmarks_still_land_near_the_template(face, noise):
    """Landmark noise of up to 8 % of the eye distance moves the fit by about as much, no more."""
    _, _, truth, size = face
    exact = transform_points(template(size), invert_affine(truth))
    eye_distance = float(np.linalg.norm(exact[1] - exact[0]))
    rng = np.random.default_rng(int(noise * 1e6))
    # at most noise x the eye distance along each axis (a clipped normal)
    landmarks = exact + rng.normal(0, 0.5, exact.shape).clip(-2, 2) * (noise * eye_distance / 2)
    matrix = estimate_alignment(landmarks, size)
    error = np.linalg.norm(transform_points(landmarks, matrix) - template(size), axis=1)
    template_eyes = float(np.linalg.norm(template(size)[1] - template(size)[0]))
    assert error.max() <= 3.0 * noise * template_eyes + 1e-3
    assert abs(roll_of(matrix) - roll_of(truth)) < 0.1 + 120 * noise  # degrees


@properties(300)
@given(
    faces_in_frames(), st.lists(st.tuples(st.floats(-5e3, 5e3), st.floats(-5e3, 5e3)), min_size=1)
)
def test_invert_affine_undoes_the_alignment(face, points):
    _, _, matrix, _ = face
    inverse = invert_affine(matrix)
    identity = np.hstack([np.eye(2), np.zeros((2, 1))])
    np.testing.assert_allclose(compose_affine(matrix, inverse), identity, atol=1e-9)
    np.testing.assert_allclose(compose_affine(inverse, matrix), identity, atol=1e-9)
    np.testing.assert_allclose(invert_affine(inverse), matrix, rtol=1e-12, atol=1e-9)
    pts = np.array(points)
    there_and_back = transform_points(transform_points(pts, matrix), inverse)
    np.testing.assert_allclose(there_and_back, pts, atol=1e-7)


# ----------------------------------------------------------------------- warp and inverse warp


def smooth_image(height: int, width: int, shortest_wave: float, seed: int) -> np.ndarray:
    """Float BGR: a few plane waves, none shorter than `shortest_wave` px, values in [0.14, 0.86]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.full((height, width, 3), 0.5, np.float32)
    for c in range(3):
        for _ in range(3):
            wave = rng.uniform(shortest_wave, 4 * shortest_wave)
            theta, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
            k = 2 * np.pi / wave
            image[..., c] += 0.12 * np.cos(k * (x * np.cos(theta) + y * np.sin(theta)) + phase)
    return image


def well_inside(matrix: np.ndarray, size: int, height: int, width: int) -> np.ndarray:
    """Image pixels whose interpolation reads only real data, both ways: inside the crop and
    inside the image by the cubic kernel's reach (2 px, rounded up to 3) on the coarser grid."""
    px_per_crop_px = 1.0 / crop_scale(matrix)
    reach = 3.0 * max(px_per_crop_px, 1.0)  # image pixels
    in_crop = transform_points(pixel_grid(height, width), matrix).reshape(height, width, 2)
    lo, hi = reach / px_per_crop_px - 0.5, size - 0.5 - reach / px_per_crop_px
    inside = ((in_crop >= lo) & (in_crop <= hi)).all(axis=2)
    m = int(np.ceil(reach))
    inside[:m], inside[height - m :], inside[:, :m], inside[:, width - m :] = (
        False,
        False,
        False,
        False,
    )
    return inside


@pytest.mark.slow
@properties(60)
@given(faces_in_frames(max_side=1400), st.integers(0, 2**16))
def test_warp_then_inverse_warp_gives_back_the_face(face, seed):
    height, width, matrix, size = face
    # Waves of at least 16 px on both grids: what bicubic interpolation reproduces closely.
    shortest = 16.0 * max(1.0, 1.0 / crop_scale(matrix))
    image = smooth_image(height, width, shortest, seed)
    crop = warp_face(image, matrix, size)
    back = unwarp_face(crop, matrix, (height, width))
    assert crop.shape == (size, size, 3) and back.shape == image.shape
    inside = well_inside(matrix, size, height, width)
    error = np.abs(back - image)[inside]
    if error.size:
        # measured: max 0.013, mean 0.0013 on waves of amplitude 0.36
        assert error.max() < 0.03 and error.mean() < 0.003
    # the inverse warp is 0 wherever the crop does not reach
    footprint = unwarp_face(np.ones((size, size), np.float32), matrix, (height, width))
    assert not back[footprint == 0].any()


# ---------------------------------------------------------------------------------- paste-back


def mask_reach(matrix: np.ndarray, size: int, height: int, width: int) -> np.ndarray:
    """Image pixels the warped face mask can touch: the mask's support (grown by a crop pixel, for
    the rounding below) mapped into the image, grown by the reach of the interpolation (cubic
    kernel, plus the area reduction when the face is smaller in the image than the crop) and a
    3 px margin."""
    # the cubic kernel reads 2 crop px each way, along the crop's (rolled) axes: 2 sqrt(2) px
    reach = int(np.ceil(2.0 * np.sqrt(2.0) * max(1.0 / crop_scale(matrix), 1.0))) + 3
    crop_support = cv2.dilate((face_mask(size) > 0).astype(np.uint8), np.ones((3, 3), np.uint8))
    # on a grid padded by the reach: support just beyond the frame's edge reaches into it
    grid = pixel_grid(height + 2 * reach, width + 2 * reach) - reach
    in_crop = np.round(transform_points(grid, matrix)).astype(np.int64)  # nearest crop pixel
    inside = np.all((in_crop >= 0) & (in_crop < size), axis=1)
    support = np.zeros(len(grid), np.uint8)
    support[inside] = crop_support[in_crop[inside, 1], in_crop[inside, 0]]
    support = support.reshape(height + 2 * reach, width + 2 * reach)
    grown = cv2.dilate(support, np.ones((2 * reach + 1,) * 2, np.uint8)) > 0
    return grown[reach : reach + height, reach : reach + width]


@st.composite
def frames_with_faces(draw):
    height = draw(st.integers(16, 900))
    width = draw(st.integers(16, 900))
    size = draw(st.sampled_from([64, 128, 256]))
    faces = []
    for _ in range(draw(st.integers(0, 4))):
        face_px = draw(st.floats(20, 1.5 * max(height, width)))
        margin = 0.8 * face_px  # partly outside the frame, sometimes entirely
        cx = draw(st.floats(-margin, width + margin))
        cy = draw(st.floats(-margin, height + margin))
        faces.append(face_matrix(cx, cy, face_px, draw(rolls), size))
    return height, width, size, faces


@pytest.mark.slow
@properties(120)
@given(frames_with_faces(), st.booleans(), st.booleans(), st.integers(0, 2**16))
def test_paste_never_changes_a_pixel_outside_the_face_masks(case, colour_match, keep_detail, seed):
    height, width, size, matrices = case
    rng = np.random.default_rng(seed)
    frame = rng.random((height, width, 3), dtype=np.float32)
    crops = [rng.random((size, size, 3), dtype=np.float32) for _ in matrices]
    out = paste_faces(frame, crops, matrices, colour_match=colour_match, keep_detail=keep_detail)
    assert out.shape == frame.shape and out.dtype == frame.dtype

    # Where every face's blend weight is exactly 0, the frame is bit-identical ...
    untouched = np.ones((height, width), bool)
    reached = np.zeros((height, width), bool)
    for matrix in matrices:
        weight = pasted_mask(matrix, size, (height, width))
        untouched &= weight == 0
        reached |= mask_reach(matrix, size, height, width)
        # ... and that weight is 0 beyond the mask's support (plus interpolation reach) ...
        assert not weight[~mask_reach(matrix, size, height, width)].any()
    assert np.array_equal(out[untouched], frame[untouched])
    # ... so nothing beyond the faces changes, whatever the crops hold.
    assert np.array_equal(out[~reached], frame[~reached])


@properties(80)
@given(frames_with_faces(), st.booleans(), st.booleans(), st.integers(0, 2**16))
def test_pasting_into_the_faces_box_alone_gives_the_same_pixels(
    case, colour_match, keep_detail, seed
):
    """What `ented restore` does on big photos: only the box around the faces goes through float.
    That window's result equals the same window of a whole-frame paste, bit for bit, and nothing
    outside the box changes."""
    height, width, size, matrices = case
    rng = np.random.default_rng(seed)
    frame = rng.random((height, width, 3), dtype=np.float32)
    crops = [rng.random((size, size, 3), dtype=np.float32) for _ in matrices]
    originals = [rng.random((size, size, 3), dtype=np.float32) for _ in matrices]
    options = dict(colour_match=colour_match, originals=originals, keep_detail=keep_detail)
    whole = paste_faces(frame, crops, matrices, **options)
    box = faces_box(matrices, [size] * len(matrices), (width, height))
    if box is None:
        assert np.array_equal(whole, frame)
        return
    x0, y0, x1, y1 = box
    window = paste_faces(
        frame[y0:y1, x0:x1].copy(),
        crops,
        matrices,
        origin=(x0, y0),
        frame_size=(width, height),
        **options,
    )
    assert np.array_equal(window, whole[y0:y1, x0:x1])
    outside = np.ones((height, width), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(whole[outside], frame[outside])


@properties(40)
@given(frames_with_faces())
def test_paste_changes_the_face_itself(case):
    """The other half of the property: where a mask is fully on, the restored face shows."""
    height, width, size, matrices = case
    frame = np.zeros((height, width, 3), np.float32)
    crops = [np.ones((size, size, 3), np.float32) for _ in matrices]
    out = paste_faces(frame, crops, matrices, colour_match=False, keep_detail=False)
    for matrix in matrices:
        core = pasted_mask(matrix, size, (height, width)) >= 0.999
        assert np.all(out[core] > 0.99)
        # the pipeline's inverse warp of the mask agrees with the pasted one (measured: 0.022
        # at most, on small faces, where the area reduction starts from another pixel)
        unwarped = unwarp_face(face_mask(size), matrix, (height, width)).clip(0, 1)
        assert np.abs(unwarped - pasted_mask(matrix, size, (height, width))).max() < 0.05


# --------------------------------------------------------------------------- landmark order


@properties(150)
@given(faces_in_frames(outside=0.0))
def test_landmarks_in_template_order_describe_an_upright_face(face):
    """Image-left eye, image-right eye, nose, mouth-left, mouth-right: for a face rolled less than
    60 degrees, the eyes are left-to-right along the face, above the nose, above the mouth."""
    _, _, truth, size = face
    landmarks = transform_points(template(size), invert_affine(truth))
    a = np.deg2rad(roll_of(truth))
    along, down = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    x, y = landmarks @ along, landmarks @ down  # coordinates in the face's own frame
    assert x[0] < x[2] < x[1] and x[3] < x[4]
    assert max(y[0], y[1]) < y[2] < min(y[3], y[4])
    if abs(roll_of(truth)) < 45:  # for moderate rolls this also holds in image coordinates
        assert landmarks[0, 0] < landmarks[1, 0] and landmarks[3, 0] < landmarks[4, 0]


@properties(150)
@given(faces_in_frames(max_side=2000, outside=0.0))
def test_mirroring_the_image_mirrors_the_alignment(face):
    """Mirror the photo: the landmarks mirror and swap sides (MIRROR_ORDER). The new alignment is
    the old one seen in a mirror, up to the template's own slight asymmetry."""
    _height, width, truth, size = face
    landmarks = transform_points(template(size), invert_affine(truth))
    flip_image = np.array([[-1.0, 0, width - 1], [0, 1.0, 0]])
    flip_crop = np.array([[-1.0, 0, size - 1], [0, 1.0, 0]])
    mirrored = transform_points(landmarks, flip_image)[MIRROR_ORDER]
    matrix = estimate_alignment(mirrored, size)
    # The mirror image of the old alignment, corrected by the fit of the mirrored template onto
    # itself (the template is not quite symmetric; the correction is the same for every face).
    mirror_of_truth = compose_affine(flip_crop, compose_affine(truth, flip_image))
    asymmetry = estimate_alignment(transform_points(template(size), flip_crop)[MIRROR_ORDER], size)
    expected = compose_affine(asymmetry, mirror_of_truth)
    corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], float)
    crop_corners = transform_points(corners, invert_affine(expected))
    gap = np.linalg.norm(transform_points(crop_corners, matrix) - corners, axis=1)
    assert gap.max() < 1e-6 * size  # crop pixels: the same map
    # and that correction is small: 1.5 % of the crop at its corners, 0.6 degrees
    gap_asym = np.linalg.norm(transform_points(corners, asymmetry) - corners, axis=1)
    assert gap_asym.max() < 0.02 * size and abs(roll_of(asymmetry)) < 1.0
    assert abs(roll_of(matrix) + roll_of(truth)) < 1.0  # the roll changes sign
    # Left and right kept as they were (not swapped) is not a face the alignment can fit.
    wrong = estimate_alignment(transform_points(landmarks, flip_image), size)
    residual = np.linalg.norm(
        transform_points(transform_points(landmarks, flip_image), wrong) - template(size), axis=1
    )
    assert residual.mean() > 0.1 * size


# ----------------------------------------------------------------------- the real detector


@pytest.fixture(scope="module")
def detector():
    from ented_cli.faces.detect import FaceDetector

    return FaceDetector()


@pytest.fixture(scope="module")
def portraits(detector):
    """The bundled example portraits with their detected landmarks (one face each)."""
    out = []
    for name in ("astronaut.png", "grace_hopper.jpg"):
        image = cv2.imread(str(EXAMPLES / name))
        (face,) = detector.detect(image)
        out.append((image, face.landmarks.astype(np.float64)))
    return out


def rotate_photo(image: np.ndarray, roll_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """The photo rolled by `roll_deg` on a canvas large enough to hold it, and the 2x3 map."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), -roll_deg, 1.0)
    corners = transform_points(
        np.array([[0, 0], [width, 0], [0, height], [width, height]], float), matrix
    )
    lo, hi = corners.min(0), corners.max(0)
    matrix[:, 2] -= lo
    side = tuple(int(v) for v in np.ceil(hi - lo))
    rotated = cv2.warpAffine(image, matrix, side, flags=cv2.INTER_CUBIC, borderValue=(128,) * 3)
    return rotated, matrix


@properties(12)
@given(st.integers(0, 1), st.floats(-60, 60), st.booleans())
def test_the_detector_keeps_landmark_order_for_rolled_and_mirrored_faces(
    detector, portraits, which, roll, mirror
):
    image, landmarks = portraits[which]
    expected = landmarks
    if mirror:
        image = image[:, ::-1].copy()
        flip = np.array([[-1.0, 0, image.shape[1] - 1], [0, 1.0, 0]])
        expected = transform_points(landmarks, flip)[MIRROR_ORDER]
    rotated, matrix = rotate_photo(image, roll)
    expected = transform_points(expected, matrix)
    faces = detector.detect(rotated)
    assert len(faces) == 1
    found = faces[0].landmarks.astype(np.float64)
    eye_distance = float(np.linalg.norm(expected[1] - expected[0]))
    # Same points in the same order (a swap would put two of them an eye distance away).
    assert np.linalg.norm(found - expected, axis=1).max() < 0.2 * eye_distance
    # And the alignment built from them is the expected roll, upright in the crop.
    assert (
        abs(roll_of(estimate_alignment(found, 256)) - roll_of(estimate_alignment(expected, 256)))
        < 5
    )


# ----------------------------------------------------------------------------- select_faces


@st.composite
def detected_faces(draw):
    height, width = draw(st.integers(32, 3000)), draw(st.integers(32, 3000))
    faces = []
    for _ in range(draw(st.integers(0, 8))):
        x, y = draw(st.floats(0, width)), draw(st.floats(0, height))
        w, h = draw(st.floats(1, 600)), draw(st.floats(1, 600))
        box = np.array([x, y, x + w, y + h], np.float32)
        faces.append(Face(box=box, score=0.99, landmarks=np.zeros((5, 2), np.float32)))
    return (height, width), faces


@properties(300)
@given(detected_faces(), st.floats(0, 400), st.sampled_from(["all", "largest", "center", "match"]))
def test_select_faces_only_ever_drops_faces(case, min_face, mode):
    shape, faces = case
    chosen = select_faces(faces, mode, shape, min_face)
    big_enough = [f for f in faces if f.size >= min_face]
    assert all(any(c is f for f in big_enough) for c in chosen)
    if mode in ("all", "match"):
        assert [id(f) for f in chosen] == [id(f) for f in big_enough]  # order kept
    else:
        assert len(chosen) == min(1, len(big_enough))
    if mode == "largest" and chosen:
        assert chosen[0].size == max(f.size for f in big_enough)
    # The choice does not depend on the order the detector listed the faces in.
    again = select_faces(faces[::-1], mode, shape, min_face)
    assert sorted(f.size for f in again) == sorted(f.size for f in chosen)
