"""Identity embeddings on real aligned faces (london: 102 people, neutral + smiling)."""

import csv
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ented_cli.faces.identity import MATCH_THRESHOLD, IdentityEncoder, face_box, similarity


def load_crop(path: Path, size: int = 256) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def degrade(crop: np.ndarray) -> np.ndarray:
    """Downscale x4, upscale back, blur sigma 2, JPEG q40: a typical low-quality input."""
    size = crop.shape[0]
    small = cv2.resize(crop, (size // 4, size // 4), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(
        cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), (0, 0), 2
    )
    ok, jpeg = cv2.imencode(".jpg", blurred, [cv2.IMWRITE_JPEG_QUALITY, 40])
    assert ok
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def london_pairs(shared_data: Path) -> list[tuple[str, Path, Path]]:
    """(person, neutral crop path, smiling crop path) for every london person."""
    root = shared_data / "london"
    by_person: dict[str, dict[str, Path]] = {}
    with open(root / "london.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_person.setdefault(row["person"], {})[row["expression"]] = root / row["aligned"]
    return [(p, e["neutral"], e["smiling"]) for p, e in sorted(by_person.items()) if len(e) == 2]


@pytest.fixture(scope="module")
def encoder() -> IdentityEncoder:
    return IdentityEncoder()


@pytest.fixture(scope="module")
def london(shared_data: Path, encoder: IdentityEncoder) -> dict:
    pairs = london_pairs(shared_data)
    neutral = [load_crop(n) for _, n, _ in pairs]
    smiling = [load_crop(s) for _, _, s in pairs]
    start = time.perf_counter()
    neutral_emb = encoder.embed(neutral)
    per_face_ms = (time.perf_counter() - start) / len(neutral) * 1000
    print(f"\nidentity embedding: {per_face_ms:.1f} ms per 256 face ({len(neutral)} faces)")
    return {
        "persons": [p for p, _, _ in pairs],
        "neutral": neutral,
        "smiling": smiling,
        "neutral_emb": neutral_emb,
        "smiling_emb": encoder.embed(smiling),
    }


@pytest.mark.slow
def test_london_has_all_102_people(london):
    assert len(london["persons"]) == 102


@pytest.mark.slow
def test_same_person_across_expressions_matches_for_95_percent_of_people(london):
    same = np.diag(similarity(london["neutral_emb"], london["smiling_emb"]))
    rate = float(np.mean(same >= MATCH_THRESHOLD))
    print(
        f"\nsame person neutral vs smiling: {rate:.1%} >= {MATCH_THRESHOLD} (median {np.median(same):.3f})"
    )
    assert rate >= 0.95


@pytest.mark.slow
def test_different_people_stay_below_threshold_for_99_percent_of_pairs(london):
    sims = similarity(london["neutral_emb"], london["smiling_emb"])
    different = sims[~np.eye(len(sims), dtype=bool)]
    rate = float(np.mean(different < MATCH_THRESHOLD))
    print(f"\ndifferent people below {MATCH_THRESHOLD}: {rate:.2%} of {different.size} pairs")
    assert rate >= 0.99


@pytest.mark.slow
def test_degraded_input_still_matches_its_person_among_all_people(london, encoder):
    # Every third person keeps the runtime modest; the full sweep is in identity.py's comment.
    picks = list(range(0, len(london["persons"]), 3))
    degraded = encoder.embed([degrade(london["smiling"][i]) for i in picks])
    sims = similarity(degraded, london["neutral_emb"])  # (picked, all 102 references)
    own = sims[np.arange(len(picks)), picks]
    match_rate = float(np.mean(own >= MATCH_THRESHOLD))
    rank1_rate = float(np.mean(np.argmax(sims, axis=1) == np.array(picks)))
    print(f"\ndegraded vs clean: match {match_rate:.1%}, nearest is own person {rank1_rate:.1%}")
    assert match_rate >= 0.95
    assert rank1_rate >= 0.95


@pytest.mark.slow
def test_embedding_is_deterministic_across_calls_and_encoders(london, encoder):
    crop = london["smiling"][0]
    first = encoder.embed([crop])
    assert first.shape == (1, 128) and first.dtype == np.float32
    np.testing.assert_array_equal(first, encoder.embed([crop]))
    np.testing.assert_array_equal(first, IdentityEncoder().embed([crop]))
    np.testing.assert_array_equal(first[0], london["smiling_emb"][0])  # batch == single


@pytest.mark.slow
def test_gray_crop_keeps_its_identity(london, encoder):
    gray = cv2.cvtColor(london["smiling"][1], cv2.COLOR_BGR2GRAY)
    emb = encoder.embed([gray])[0]
    assert similarity(emb, london["smiling_emb"][1]) >= MATCH_THRESHOLD
    assert similarity(emb, london["neutral_emb"][1]) >= MATCH_THRESHOLD


@pytest.mark.slow
def test_crop_is_read_as_bgr_and_alpha_is_ignored(london, encoder):
    bgr = london["neutral"][2]
    bgra = np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(encoder.embed([bgra])[0], london["neutral_emb"][2])
    # A crop handed over as RGB instead of BGR is a different image to the network.
    swapped = encoder.embed([np.ascontiguousarray(bgr[:, :, ::-1])])[0]
    assert not np.array_equal(swapped, london["neutral_emb"][2])


@pytest.mark.slow
def test_512_crop_gives_the_same_identity_as_256(shared_data, london, encoder):
    _, neutral, _ = london_pairs(shared_data)[3]
    emb_512 = encoder.embed([load_crop(neutral, 512)])[0]
    assert similarity(emb_512, london["neutral_emb"][3]) > 0.97


def test_face_box_scales_with_crop_size():
    left, top, right, bottom = face_box(256)
    assert 0 <= left < right <= 256 and 0 <= top < bottom <= 256
    assert abs((right - left) - (bottom - top)) <= 1  # square, as dlib's detector boxes are
    assert all(abs(a * 2 - b) <= 1 for a, b in zip(face_box(256), face_box(512)))


def test_non_uint8_or_non_square_crop_is_rejected(encoder):
    with pytest.raises(ValueError, match="uint8"):
        encoder.embed([np.zeros((256, 256, 3), np.float32)])
    with pytest.raises(ValueError, match="square"):
        encoder.embed([np.zeros((256, 200, 3), np.uint8)])


def test_similarity_returns_float_for_vectors_and_matrix_for_stacks():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 128)), rng.normal(size=(5, 128))
    assert isinstance(similarity(a[0], b[0]), float)
    assert similarity(a[0], a[0] * 3) == pytest.approx(1.0)
    assert similarity(a[0], -a[0]) == pytest.approx(-1.0)
    assert similarity(a, b).shape == (3, 5)
    assert similarity(a[0], b).shape == (5,)
    np.testing.assert_allclose(similarity(a, b)[1, 2], similarity(a[1], b[2]))
