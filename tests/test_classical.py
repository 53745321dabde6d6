"""The classical (no-learning) reference transfer: `ented_cli.evaluation.classical`."""

import cv2
import numpy as np
import pytest

from ented_cli.evaluation.classical import DEFAULT_SIGMA, classical_transfer, low_pass
from ented_cli.faces.refwarp import Landmarks68, to_uint8
from tests.conftest import EXAMPLES, needs_shared

SIZE = 256


@pytest.fixture(scope="module")
def landmarks() -> Landmarks68:
    return Landmarks68()


@pytest.fixture(scope="module")
def example_face(landmarks) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut example aligned to the template at 256 px ([0, 1] RGB) and its 68 points."""
    from ented_cli.faces.align import estimate_alignment, warp_face
    from ented_cli.faces.detect import FaceDetector

    image = cv2.imread(str(EXAMPLES / "astronaut.png"))
    face = max(FaceDetector().detect(image), key=lambda f: f.size)
    bgr = warp_face(image, estimate_alignment(face.landmarks, SIZE), SIZE)
    rgb = np.ascontiguousarray(bgr[:, :, ::-1]).astype(np.float32) / 255
    return rgb, landmarks(to_uint8(rgb))


def test_a_blurred_face_gets_its_detail_back_and_nothing_changes_outside_the_mask(example_face):
    ref, pts = example_face
    face = low_pass(ref, 3.0)  # the same photo without its fine detail
    out, mask = classical_transfer(face, ref, pts, pts, return_mask=True)
    assert out.shape == face.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    outside = mask == 0
    assert outside.mean() > 0.2  # background, hair, corners
    assert np.array_equal(out[outside], face[outside])
    inside = mask > 0.9
    err_before = np.abs(face - ref)[inside].mean()
    err_after = np.abs(out - ref)[inside].mean()
    assert err_after < 0.5 * err_before  # the reference's detail is back where it is trusted


def test_same_image_as_reference_is_returned_unchanged(example_face):
    ref, pts = example_face
    out = classical_transfer(ref, ref, pts, pts)
    assert np.abs(out - ref).max() < 2e-3


def test_sigma_reference_size_and_bad_input(example_face):
    ref, pts = example_face
    face = low_pass(ref, 4.0)
    small, large = (classical_transfer(face, ref, pts, pts, sigma=s) for s in (1.0, 8.0))
    # A larger cutoff takes more of the reference (here: the sharp original).
    assert np.abs(large - ref).mean() < np.abs(small - ref).mean()
    # A reference at another size is resized with its points: about the same result.
    big_ref = cv2.resize(ref, (512, 512), interpolation=cv2.INTER_CUBIC)
    resized = classical_transfer(face, big_ref, pts, pts * 2, sigma=DEFAULT_SIGMA)
    assert np.abs(resized - classical_transfer(face, ref, pts, pts)).mean() < 0.01
    with pytest.raises(ValueError, match="sigma"):
        classical_transfer(face, ref, pts, pts, sigma=0)
    with pytest.raises(ValueError, match="square"):
        classical_transfer(face[:200], ref, pts, pts)


@needs_shared
def test_classical_transfer_raises_identity_on_severe_london_faces(shared_data, landmarks):
    """On severely degraded London faces (×12), transferring the detail of the person's other
    photo brings dlib identity to the ground truth above the degraded input's, and changes
    nothing outside the warp mask."""
    from ented_cli.evaluation.faces import from_model, read_crop, to_model
    from ented_cli.evaluation.synthesize import degrade_crop, read_people
    from ented_cli.faces.identity import IdentityEncoder, similarity

    people = read_people(shared_data / "london" / "london.csv")
    pairs = [photos for photos in people.photos.values() if len(photos) >= 2][:4]
    encoder = IdentityEncoder()

    def embed(rgb_uint8: np.ndarray) -> np.ndarray:
        return encoder.embed([np.ascontiguousarray(rgb_uint8[:, :, ::-1])])[0]

    better = 0
    for index, (gt_path, ref_path) in enumerate(p[:2] for p in pairs):
        gt = read_crop(gt_path)
        face = to_model(degrade_crop(gt, "severe", index))
        ref = to_model(read_crop(ref_path))
        out, mask = classical_transfer(
            face, ref, landmarks(to_uint8(face)), landmarks(to_uint8(ref)), return_mask=True
        )
        outside = mask == 0
        assert outside.any() and np.array_equal(out[outside], face[outside])
        size = gt.shape[0]
        gt_emb = embed(gt)
        before = similarity(embed(from_model(face, size)), gt_emb)
        after = similarity(embed(from_model(out, size)), gt_emb)
        better += after > before
    assert better >= 3, f"identity raised on {better} of 4 faces"
