"""Do no harm: a restoration less like its reference than the input is not used, and neither is
one that is no sharper than the input (pipeline/sharpness.py)."""

import cv2
import numpy as np
import pytest

from tests.conftest import EXAMPLES
from tests.test_bench import make_jobs

ASTRONAUT = EXAMPLES / "astronaut.png"
DEGRADED = EXAMPLES / "astronaut_degraded.jpg"
HOPPER = EXAMPLES / "grace_hopper.jpg"


class SwapRestorer:
    """A real (if silly) restorer: pastes another person's face over every face, or returns the
    input untouched. Purpose-built to make identity worse, or to leave it as it was."""

    name = "swap"
    batch_size = 1

    def __init__(self, replace: bool | str):
        self.replace = replace  # True: another person; "reference": the reference; False: input
        self.reference = None
        hopper = cv2.imread(str(HOPPER))[60:260, 120:320]
        self.other = cv2.resize(hopper, (256, 256)).astype(np.float32) / 255  # BGR, as given

    def add_reference(self, key, face):
        self.reference = face  # the aligned crop of the person's sharp photo

    def forget_references(self, keys):
        pass

    def restore(self, faces, references, fidelity):
        if self.replace == "reference":
            return np.stack([self.reference for _ in faces])
        return np.stack([self.other if self.replace else f for f in faces])


@pytest.fixture(scope="module")
def models():
    from ented_cli.faces.detect import FaceDetector
    from ented_cli.faces.identity import IdentityEncoder

    return FaceDetector(), IdentityEncoder()


def run(models, restorer, guard: bool, out_dir):
    from ented_cli.pipeline.batch import BatchRunner
    from ented_cli.pipeline.references import ReferenceGallery
    from ented_cli.pipeline.restore import RestoreOptions, RestorePipeline

    detector, encoder = models
    pipeline = RestorePipeline(restorer, detector, encoder, RestoreOptions(guard=guard))
    errors = []
    gallery = ReferenceGallery(pipeline.references.faces([("collins", ASTRONAUT)], errors))
    (job,) = make_jobs([DEGRADED], out_dir)
    list(BatchRunner(pipeline, workers=0).run([job], lambda item: gallery))
    return job


def test_a_restoration_that_loses_the_person_keeps_the_input_face(models, tmp_path):
    job = run(models, SwapRestorer(replace=True), True, tmp_path / "guarded")
    (face,) = job.report.to_json()["faces"]
    assert (
        face["guard"] == "kept_input" and face["restored"] is False and face["mode"] == "reference"
    )
    assert job.report.status == "unchanged"
    assert job.output.read_bytes() == DEGRADED.read_bytes()  # the input, byte for byte


def test_without_the_guard_the_worse_face_is_written(models, tmp_path):
    job = run(models, SwapRestorer(replace=True), False, tmp_path / "unguarded")
    (face,) = job.report.to_json()["faces"]
    assert face["guard"] is None and face["restored"] is True
    assert job.report.status == "restored"
    assert job.output.read_bytes() != DEGRADED.read_bytes()


def test_a_restoration_that_keeps_the_person_passes(models, tmp_path):
    # A perfect restorer: the person's own sharp photo, aligned as the face is.
    job = run(models, SwapRestorer(replace="reference"), True, tmp_path / "same")
    (face,) = job.report.to_json()["faces"]
    assert face["guard"] == "passed" and face["restored"] is True
    assert face["guard_reason"] is None


def test_a_restoration_no_sharper_than_the_input_keeps_the_input(models, tmp_path):
    job = run(models, SwapRestorer(replace=False), True, tmp_path / "no-gain")
    (face,) = job.report.to_json()["faces"]
    assert face["guard"] == "kept_input" and face["guard_reason"] == "already_sharp"
    assert job.report.status == "unchanged"
    assert job.output.read_bytes() == DEGRADED.read_bytes()


@pytest.mark.parametrize("sigma", [0.0, 1.0, 2.0, 6.0, 11.0])
def test_relative_blur_reads_how_much_blurrier_the_input_is(sigma):
    from ented_cli.pipeline.sharpness import SHARP_BLUR, already_sharp, relative_blur

    sharp = cv2.resize(cv2.imread(str(ASTRONAUT))[40:340, 140:440], (256, 256))
    sharp = sharp.astype(np.float32) / 255
    face = sharp if sigma == 0 else cv2.GaussianBlur(sharp, (0, 0), sigma)
    noise = np.random.default_rng(0).normal(0, 3 / 255, face.shape).astype(np.float32)
    face = np.clip(face + noise, 0, 1)  # noise must not read as sharpness
    assert relative_blur(face, sharp) == pytest.approx(sigma, abs=0.6 if sigma < 3 else 1.5)
    assert already_sharp(face, sharp, span=300) == (sigma <= SHARP_BLUR)
    assert not already_sharp(face, sharp, span=45)  # a small face: its size alone degrades it


def test_crop_span_is_the_photo_pixels_across_the_crop():
    from ented_cli.pipeline.sharpness import crop_span

    rotate_and_enlarge = cv2.getRotationMatrix2D((50, 50), 30, 256 / 64)
    assert crop_span(rotate_and_enlarge) == pytest.approx(64)
