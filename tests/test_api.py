"""The Python API restores like the CLI and keeps the caller's array layout."""

import cv2
import numpy as np
import pytest

from ented_cli.api import Ented
from ented_cli.errors import InputError
from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def ented():
    # These tests are about the API's plumbing; the do-no-harm guard has its own tests.
    return Ented(device="cpu", guard=False)


@pytest.mark.slow
def test_restore_a_file_with_a_reference_file(ented):
    result = ented.restore(EXAMPLES / "astronaut_degraded.jpg", refs=[EXAMPLES / "astronaut.png"])
    assert result.status == "restored"
    (face,) = result.faces
    assert face["mode"] == "reference" and face["identity_after"] is not None
    original = cv2.imread(str(EXAMPLES / "astronaut_degraded.jpg"))
    assert result.image.shape == original.shape and result.image.dtype == np.uint8


def test_arrays_keep_gray_and_alpha_layouts(ented):
    bgr = cv2.imread(str(EXAMPLES / "grace_hopper.jpg"))
    gray = ented.restore(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    assert gray.image.ndim == 2 and gray.status == "restored"
    alpha = np.full(bgr.shape[:2], 200, np.uint8)
    bgra = ented.restore(np.dstack([bgr, alpha]), refs=[bgr])
    assert bgra.image.shape == (*bgr.shape[:2], 4)
    assert np.array_equal(bgra.image[..., 3], alpha)
    assert bgra.faces[0]["mode"] == "reference"


def test_the_callers_array_is_never_changed_nor_handed_back(ented):
    photo = cv2.imread(str(EXAMPLES / "grace_hopper.jpg"))
    kept = photo.copy()
    restored = ented.restore(photo)
    assert restored.status == "restored" and np.array_equal(photo, kept)
    blank = np.full((64, 64, 3), 128, np.uint8)  # no face: an equal image, not the same array
    result = ented.restore(blank)
    assert result.status == "no_face" and np.array_equal(result.image, blank)
    result.image[:] = 0
    assert (blank == 128).all()


def test_a_float_array_is_refused_with_a_clear_error(ented):
    with pytest.raises(InputError, match="uint8/uint16"):
        ented.restore(np.zeros((64, 64, 3), np.float32))


def test_a_per_call_fidelity_is_for_that_call_only(ented):
    photo = cv2.imread(str(EXAMPLES / "grace_hopper.jpg"))
    before = ented.restore(photo).image
    assert not np.array_equal(ented.restore(photo, fidelity=1.0).image, before)
    assert np.array_equal(ented.restore(photo).image, before)  # back to the default 0.5


@pytest.mark.slow
def test_a_reference_array_is_known_by_its_content_not_its_id(ented, tmp_path):
    """Python reuses the id of a freed array; a later reference must never get the features of
    an earlier one that happened to live at the same address."""
    degraded = cv2.imread(str(EXAMPLES / "astronaut_degraded.jpg"))
    astronaut = cv2.imread(str(EXAMPLES / "astronaut.png"))
    hopper = cv2.imread(str(EXAMPLES / "grace_hopper.jpg"))
    cv2.imwrite(str(tmp_path / "hopper.png"), hopper)
    # -1: pair every face with the reference, whoever it is, so the reference's features count.
    api = Ented(device="cpu", guard=False, match_threshold=-1)
    expected = api.restore(degraded, refs=[tmp_path / "hopper.png"]).image
    ids = set()
    for _ in range(3):  # free and remake the arrays so their ids come round again
        first = astronaut.copy()
        ids.add(id(first))
        api.restore(degraded, refs=[first])
        del first
        second = hopper.copy()
        ids.add(id(second))
        assert np.array_equal(api.restore(degraded, refs=[second]).image, expected)
        del second
    assert len(ids) < 6  # the ids did repeat, so this exercised the reuse


@pytest.mark.slow
def test_a_reference_photo_is_encoded_once_for_many_faces():
    ented = Ented(device="cpu")
    model = ented.pipeline.restorer.model
    encoded = []
    original = model.encode_reference
    model.encode_reference = lambda x: encoded.append(len(x)) or original(x)
    for _ in range(3):
        result = ented.restore(
            EXAMPLES / "astronaut_degraded.jpg", refs=[EXAMPLES / "astronaut.png"]
        )
        assert result.faces[0]["mode"] == "reference"
    assert encoded == [1]  # the reference once; the three faces reuse its features
