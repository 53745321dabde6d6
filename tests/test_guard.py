"""Do no harm: a restoration less like its reference than the input is not used."""

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

    def __init__(self, replace: bool):
        self.replace = replace
        hopper = cv2.imread(str(HOPPER))[60:260, 120:320]
        self.other = cv2.resize(hopper, (256, 256)).astype(np.float32) / 255  # BGR, as given

    def add_reference(self, key, face):
        pass

    def forget_references(self, keys):
        pass

    def restore(self, faces, references, fidelity):
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
    job = run(models, SwapRestorer(replace=False), True, tmp_path / "same")
    (face,) = job.report.to_json()["faces"]
    assert face["guard"] == "passed" and face["restored"] is True
