"""A reference is never dropped silently (issue 13, item 5): a face that had references to
choose from and got none says so on stderr and in --json (mode, match_similarity, reason)."""

import cv2
import numpy as np
import pytest

from ented_cli.pipeline.references import ReferenceFace, ReferenceGallery
from tests.test_cli import ASTRONAUT, DEGRADED, HOPPER, ented, json_lines


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ented: warning:")]


@pytest.mark.slow  # the shipped network and the real detector
def test_a_reference_of_someone_else_is_reported_not_used_silently(tmp_path):
    result = ented("restore", DEGRADED, "--ref", HOPPER, "-o", tmp_path / "o.jpg", "--json")
    assert result.exit_code == 0, result.stderr
    (line,) = warnings_of(result.stderr)
    assert "astronaut_degraded.jpg: the face matches no reference" in line
    assert "closest: grace_hopper, similarity 0." in line and "threshold 0.92" in line
    assert "restored without a reference" in line
    (report,) = json_lines(result.stdout)
    (face,) = report["faces"]
    assert face["mode"] == "blind" and face["reason"] == "below_threshold"
    assert 0 < face["match_similarity"] < 0.92
    assert report["warnings"] == [line.removeprefix("ented: warning: ")]


@pytest.mark.slow  # the shipped network and the real detector
def test_faces_match_with_a_reference_that_matches_nobody_says_so(tmp_path):
    result = ented(
        "restore", DEGRADED, "--ref", HOPPER, "--faces", "match", "-o", tmp_path / "o.jpg", "--json"
    )
    assert result.exit_code == 0, result.stderr
    (line,) = warnings_of(result.stderr)
    assert "left unchanged (--faces match)" in line and "threshold 0.92" in line
    (report,) = json_lines(result.stdout)
    assert report["status"] == "unchanged"
    assert report["faces"][0]["mode"] == "skipped"
    assert report["faces"][0]["reason"] == "below_threshold"


@pytest.mark.slow  # the shipped network and the real detector
def test_a_batch_names_the_reference_that_matched_no_photo(tmp_path):
    second = tmp_path / "again.jpg"
    second.write_bytes(DEGRADED.read_bytes())
    result = ented("restore", DEGRADED, second, "--ref", HOPPER, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    lines = warnings_of(result.stderr)
    assert len(lines) == 3, result.stderr  # one per face, then one for the unused reference
    assert "grace_hopper.jpg: this reference matched no face in 2 photo(s)" in lines[-1]


@pytest.mark.slow  # the shipped network and the real detector
def test_group_photo_says_why_each_face_has_no_reference(tmp_path):
    # Two copies of one person side by side and one reference of that person: the person goes
    # to one face; the other is "person_taken". A run without references gives "no_references".
    face = cv2.imread(str(ASTRONAUT))
    group = tmp_path / "group.png"
    cv2.imwrite(str(group), np.hstack([face, cv2.flip(face, 1)]))
    result = ented("restore", group, "--ref", ASTRONAUT, "-o", tmp_path / "g.png", "--json")
    assert result.exit_code == 0, result.stderr
    (report,) = json_lines(result.stdout)
    modes = sorted((f["mode"], f["reason"]) for f in report["faces"])
    assert modes == [("blind", "person_taken"), ("reference", None)], modes
    (line,) = warnings_of(result.stderr)
    assert "(of 2) is close to astronaut" in line and "who went to a closer face" in line

    blind = ented("restore", group, "--faces", "largest", "-o", tmp_path / "b.png", "--json")
    (report,) = json_lines(blind.stdout)
    reasons = sorted(f["reason"] for f in report["faces"])
    assert reasons == ["no_references", "not_chosen"], reasons
    assert warnings_of(blind.stderr) == []  # nothing was dropped: no reference was given


@pytest.mark.parametrize("threshold", [0.5, 0.99])
def test_an_unmatched_face_knows_its_closest_person(threshold):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 128))
    crop = np.zeros((256, 256, 3), np.uint8)
    gallery = ReferenceGallery(
        [ReferenceFace("ann", "ann.jpg", crop, a), ReferenceFace("bob", "bob.jpg", crop, b)]
    )
    query = b + 0.3 * rng.normal(size=128)
    (match,) = gallery.assign(query[None], threshold)
    single = gallery.match(query, threshold)
    if match.person is None:
        assert match.closest == single.closest == "bob"
    else:
        assert match.person == single.person == "bob" and match.closest is None
