"""Reference sources (--ref, --ref-dir, --pairs) and gallery matching on real london faces."""

import csv
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from ented_cli.errors import InputError
from ented_cli.faces.identity import MATCH_THRESHOLD, IdentityEncoder, similarity
from ented_cli.pipeline.references import (
    ReferenceFace,
    ReferenceGallery,
    collect_reference_files,
    read_pairs_csv,
)

GALLERY_PEOPLE = 30  # the first 30 london people (by id) are in the gallery
STRANGERS = 10  # the next 10 are not


def load_crop(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def london(shared_data: Path) -> dict:
    """Neutral photos of 30 people as the gallery; smiling photos of them and of 10 strangers."""
    root = shared_data / "london"
    photos: dict[str, dict[str, Path]] = {}
    with open(root / "london.csv", newline="") as f:
        for row in csv.DictReader(f):
            photos.setdefault(row["person"], {})[row["expression"]] = root / row["aligned"]
    persons = [p for p in sorted(photos) if len(photos[p]) == 2][: GALLERY_PEOPLE + STRANGERS]
    encoder = IdentityEncoder()
    gallery = ReferenceGallery.from_crops(
        [
            (p, photos[p]["neutral"], load_crop(photos[p]["neutral"]))
            for p in persons[:GALLERY_PEOPLE]
        ],
        encoder,
    )
    smiling = {p: load_crop(photos[p]["smiling"]) for p in persons}
    embeddings = dict(zip(smiling, encoder.embed(list(smiling.values()))))
    return {
        "encoder": encoder,
        "gallery": gallery,
        "smiling": smiling,
        "query": embeddings,
        "persons": persons,
    }


def persons_in(london: dict, strangers: bool = False) -> list[str]:
    persons = london["persons"]
    return persons[GALLERY_PEOPLE:] if strangers else persons[:GALLERY_PEOPLE]


# --- gallery matching (real faces) ---------------------------------------------------------------


@pytest.mark.slow
def test_gallery_picks_the_right_person_among_30_people(london):
    gallery = london["gallery"]
    assert len(gallery.persons()) == GALLERY_PEOPLE
    hits = 0
    for person in persons_in(london):
        match = gallery.match(london["query"][person])
        if match.person == person:
            hits += 1
            assert match.similarity >= MATCH_THRESHOLD
            assert [face.person for face in match.faces] == [person]
    accuracy = hits / GALLERY_PEOPLE
    print(f"\ngallery of {GALLERY_PEOPLE}: {accuracy:.1%} of smiling queries find their person")
    assert accuracy >= 0.95


@pytest.mark.slow
def test_person_missing_from_gallery_is_mostly_unmatched(london):
    gallery = london["gallery"]
    results = [gallery.match(london["query"][p]) for p in persons_in(london, strangers=True)]
    unmatched = [r for r in results if r.person is None]
    for r in unmatched:
        assert r.faces == [] and r.similarity < MATCH_THRESHOLD
    print(
        f"\nstrangers against a {GALLERY_PEOPLE}-person gallery: {len(unmatched)}/{STRANGERS} unmatched"
    )
    # Each extra person in a gallery is another chance of a look-alike; 30 people is a big one.
    assert len(unmatched) >= 0.7 * STRANGERS


@pytest.mark.slow
def test_single_wrong_reference_is_reported_as_unmatched(london):
    faces = london["gallery"].faces
    accepted = 0
    for stranger in persons_in(london, strangers=True):
        for face in faces:
            single = ReferenceGallery([face])
            accepted += single.match(london["query"][stranger]).person is not None
    total = STRANGERS * len(faces)
    print(f"\nwrong single reference accepted: {accepted}/{total}")
    assert accepted <= 0.02 * total


@pytest.mark.slow
def test_threshold_minus_one_forces_the_single_reference(london):
    face = london["gallery"].faces[0]
    stranger = london["query"][persons_in(london, strangers=True)[0]]
    single = ReferenceGallery([face])
    assert single.match(stranger).person is None
    forced = single.match(stranger, threshold=-1)
    assert forced.person == face.person and forced.faces == [face]


@pytest.mark.slow
def test_match_returns_the_persons_photos_most_similar_first_capped_at_max_refs(london):
    # Five photos of one person: their smiling crop, its flip and the neutral crop, plus a
    # blurred and a darker copy. The exact smiling crop must come first; only 4 come back.
    person = persons_in(london)[0]
    smiling = london["smiling"][person]
    neutral = next(f for f in london["gallery"].faces if f.person == person).crop
    crops = [
        neutral,
        cv2.GaussianBlur(smiling, (0, 0), 3),
        smiling,
        cv2.flip(smiling, 1),
        (smiling * 0.6).astype(np.uint8),
    ]
    gallery = ReferenceGallery.from_crops(
        [(person, Path(f"{k}.jpg"), crop) for k, crop in enumerate(crops)], london["encoder"]
    )
    assert gallery.max_refs == 4
    match = gallery.match(london["query"][person])
    assert match.person == person
    assert len(match.faces) == 4
    assert match.faces[0].path == Path("2.jpg")
    sims = [similarity(f.embedding, london["query"][person]) for f in match.faces]
    assert sims == sorted(sims, reverse=True)


@pytest.mark.slow
def test_assign_gives_each_person_to_one_face_of_a_group_photo(london):
    gallery = london["gallery"]
    a, b = persons_in(london)[:2]
    query = london["query"]
    # A group photo with a, b and a second, blurred copy of a: a goes to the clearer face.
    blurred_a = london["encoder"].embed([cv2.GaussianBlur(london["smiling"][a], (0, 0), 3)])[0]
    faces = np.stack([blurred_a, query[b], query[a]])
    result = gallery.assign(faces)
    assert [r.person for r in result] == [None, b, a]
    # The blurred face would match a on its own; it lost a to the closer face.
    assert gallery.match(blurred_a).person == a
    assert result[0].faces == [] and MATCH_THRESHOLD <= result[0].similarity < result[2].similarity
    named = [r.person for r in result if r.person]
    assert len(named) == len(set(named))


@pytest.mark.slow
def test_assign_agrees_with_match_when_faces_are_different_people(london):
    gallery = london["gallery"]
    persons = persons_in(london)[2:6] + persons_in(london, strangers=True)[:2]
    embeddings = np.stack([london["query"][p] for p in persons])
    assigned = gallery.assign(embeddings)
    assert [r.person for r in assigned] == [gallery.match(e).person for e in embeddings]


def test_empty_gallery_matches_nothing_even_when_forced():
    gallery = ReferenceGallery()
    assert gallery.persons() == []
    assert gallery.match(np.ones(128), threshold=-1) == (None, -1.0, [], None)
    assert gallery.assign(np.ones((2, 128)), threshold=-1) == [(None, -1.0, [], None)] * 2


def test_gallery_rejects_embeddings_of_another_size():
    gallery = ReferenceGallery(
        [ReferenceFace("a", Path("a.jpg"), np.zeros((256, 256, 3), np.uint8), np.ones(128))]
    )
    with pytest.raises(ValueError, match="shape"):
        gallery.add(
            ReferenceFace("b", Path("b.jpg"), np.zeros((256, 256, 3), np.uint8), np.ones(512))
        )


# --- --ref / --ref-dir ---------------------------------------------------------------------------


def write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 8, 3), 128, np.uint8))
    return path


def test_gallery_folder_gives_one_person_per_subfolder_and_per_loose_file(tmp_path):
    root = tmp_path / "gallery"
    alice1 = write_image(root / "alice" / "1.jpg")
    alice2 = write_image(root / "alice" / "2020" / "beach.PNG")  # nested and upper-case suffix
    bob = write_image(root / "bob.jpg")
    carol = write_image(root / "carol" / "c.webp")
    write_image(root / "alice" / ".thumbs" / "t.jpg")  # hidden: skipped
    write_image(root / ".git" / "x.jpg")
    (root / "notes.txt").write_text("not an image")
    (root / "empty").mkdir()
    extra = write_image(tmp_path / "dave.jpeg")

    found = collect_reference_files([extra], root)
    assert found == [
        ("dave", extra),
        ("alice", alice1),
        ("alice", alice2),
        ("bob", bob),
        ("carol", carol),
    ]


def test_same_reference_file_given_twice_is_listed_once(tmp_path):
    ref = write_image(tmp_path / "g" / "eve.jpg")
    assert collect_reference_files([ref, ref], tmp_path / "g") == [("eve", ref)]


def test_missing_reference_file_names_the_path(tmp_path):
    with pytest.raises(InputError, match=r"nope\.jpg does not exist.*--ref"):
        collect_reference_files([tmp_path / "nope.jpg"], None)


def test_folder_given_as_ref_or_file_given_as_ref_dir_says_which_flag(tmp_path):
    image = write_image(tmp_path / "a.jpg")
    with pytest.raises(InputError, match="--ref-dir"):
        collect_reference_files([tmp_path], None)
    with pytest.raises(InputError, match="is a file.*--ref"):
        collect_reference_files([], image)
    with pytest.raises(InputError, match="does not exist.*--ref-dir"):
        collect_reference_files([], tmp_path / "missing")


def test_gallery_without_images_is_an_error(tmp_path):
    (tmp_path / "people" / "alice").mkdir(parents=True)
    (tmp_path / "people" / "readme.md").write_text("x")
    with pytest.raises(InputError, match=r"people holds no images"):
        collect_reference_files([], tmp_path / "people")


def test_no_reference_flags_give_no_files():
    assert collect_reference_files([], None) == []


# --- --pairs CSV ---------------------------------------------------------------------------------


@pytest.fixture
def pair_files(tmp_path: Path) -> Path:
    for name in ["in/a.jpg", "in/b.png", "refs/a1.jpg", "refs/a2.jpg", "refs/b.jpg"]:
        write_image(tmp_path / name)
    return tmp_path


def test_pairs_csv_resolves_paths_relative_to_its_folder_with_ref_lists(pair_files, monkeypatch):
    other = pair_files / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)  # the CSV's folder, not the working directory, anchors paths
    absolute_ref = pair_files / "refs" / "b.jpg"
    csv_path = pair_files / "pairs.csv"
    csv_path.write_text(
        "input,ref\n"
        "in/a.jpg, refs/a1.jpg ; refs/a2.jpg;\n"
        "\n"
        "# comment lines are skipped\n"
        f'"in/b.png","{absolute_ref}"\n',
        encoding="utf-8",
    )
    assert read_pairs_csv(csv_path).pairs == [
        (pair_files / "in/a.jpg", [pair_files / "refs/a1.jpg", pair_files / "refs/a2.jpg"]),
        (pair_files / "in/b.png", [absolute_ref]),
    ]


def test_pairs_csv_without_header_and_with_bom_and_named_columns(pair_files):
    plain = pair_files / "plain.csv"
    plain.write_text("in/a.jpg,refs/a1.jpg\n", encoding="utf-8-sig")
    assert read_pairs_csv(plain).pairs == [(pair_files / "in/a.jpg", [pair_files / "refs/a1.jpg"])]

    named = pair_files / "named.csv"
    named.write_text("ref,note,input\nrefs/b.jpg,best shot,in/b.png\n")
    assert read_pairs_csv(named).pairs == [(pair_files / "in/b.png", [pair_files / "refs/b.jpg"])]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("in/b.png", "columns 'input,ref'"),
        ("in/b.png,refs/b.jpg,refs/a1.jpg", "columns 'input,ref'"),
        ("in/b.png,", "cell is empty"),
        ("in/b.png, ; ", "lists no file"),
        ("in/a.jpg,refs/b.jpg", "listed again"),
    ],
)
def test_bad_pairs_row_names_the_csv_and_its_line(pair_files, row, message):
    csv_path = pair_files / "pairs.csv"
    csv_path.write_text(f"input,ref\nin/a.jpg,refs/a1.jpg\n{row}\n")
    with pytest.raises(InputError, match=rf"pairs\.csv line 3: .*{message}") as info:
        read_pairs_csv(csv_path)
    assert "\n" not in str(info.value)


def test_pairs_rows_naming_missing_files_are_reported_and_the_other_rows_kept(pair_files):
    csv_path = pair_files / "pairs.csv"
    csv_path.write_text(
        "input,ref\n"
        "in/missing.jpg,refs/b.jpg\n"
        "in/a.jpg,refs/a1.jpg\n"
        "in/b.png,refs/a1.jpg;refs/gone.jpg\n"
    )
    table = read_pairs_csv(csv_path)
    assert table.pairs == [(pair_files / "in/a.jpg", [pair_files / "refs/a1.jpg"])]
    missing_input, missing_ref = table.problems
    assert re.fullmatch(
        r".*pairs\.csv line 2: input .*in/missing\.jpg does not exist: fix the path .*",
        missing_input,
    )
    assert re.fullmatch(
        r".*pairs\.csv line 4: reference .*refs/gone\.jpg does not exist: .*", missing_ref
    )


def test_pairs_csv_whose_every_input_is_missing_reports_every_row(pair_files):
    csv_path = pair_files / "pairs.csv"
    csv_path.write_text("in/x.jpg,refs/b.jpg\nin/y.jpg,refs/b.jpg\n")
    table = read_pairs_csv(csv_path)
    assert table.pairs == [] and len(table.problems) == 2


def test_missing_or_empty_pairs_csv_is_an_error(tmp_path):
    with pytest.raises(InputError, match=r"pairs file .*x\.csv does not exist"):
        read_pairs_csv(tmp_path / "x.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("input,ref\n\n")
    with pytest.raises(InputError, match="lists no pairs"):
        read_pairs_csv(empty)


# --- one dialect, one list of image names (issue 12) ---------------------------------------------


def test_gallery_takes_every_readable_format_and_orders_people_naturally(tmp_path):
    root = tmp_path / "gallery"
    p10 = write_image(root / "person10" / "a.jpg")
    p2 = write_image(root / "person2" / "a.png")
    (root / "person2" / "scan.jp2").write_bytes(b"x")  # listed; reading it is the pipeline's job
    (root / "gray.pgm").write_bytes(b"x")
    (root / "colour.PPM").write_bytes(b"x")
    (root / "twin").symlink_to("person2")  # the same folder twice: its photos once
    found = collect_reference_files([], root)
    assert found == [
        ("colour", root / "colour.PPM"),
        ("gray", root / "gray.pgm"),
        ("person2", p2),
        ("person2", root / "person2" / "scan.jp2"),
        ("person10", p10),
    ]


def test_empty_gallery_message_lists_the_shared_extensions(tmp_path):
    (tmp_path / "people").mkdir()
    with pytest.raises(InputError, match=r"\.jpg, \.jpeg, .*\.jp2, \.pgm, \.ppm\)$"):
        collect_reference_files([], tmp_path / "people")


@pytest.fixture
def eval_files(pair_files: Path) -> Path:
    write_image(pair_files / "gt" / "a.png")
    return pair_files


# The same file in both dialects: --pairs (input,ref) and eval's triplets (degraded,reference,gt).
DIALECT_CASES = {
    "bom, header in another order, comments and blank lines": (
        "\ufeff# exported\r\nref,note,input\r\n\r\nrefs/a1.jpg;refs/a2.jpg,x,in/a.jpg\r\n",
        "\ufeff# exported\r\ngt,note,reference,degraded\r\n\r\n"
        "gt/a.png,x,refs/a1.jpg;refs/a2.jpg,in/a.jpg\r\n",
    ),
    "no header": (
        "in/a.jpg,refs/a1.jpg;refs/a2.jpg\n",
        "in/a.jpg,refs/a1.jpg;refs/a2.jpg,gt/a.png\n",
    ),
    "upper-case header names, quoted cells": (
        'INPUT,Ref\n"in/a.jpg"," refs/a1.jpg ; refs/a2.jpg "\n',
        'DEGRADED,Reference,GT\n"in/a.jpg"," refs/a1.jpg ; refs/a2.jpg ","gt/a.png"\n',
    ),
}


@pytest.mark.parametrize("case", list(DIALECT_CASES))
def test_pairs_and_triplets_csvs_share_one_dialect(eval_files, case, monkeypatch):
    from ented_cli.evaluation.triplets import read_csv

    monkeypatch.chdir(eval_files / "in")  # paths are relative to the CSV, not the cwd
    pairs_text, triplets_text = DIALECT_CASES[case]
    (eval_files / "pairs.csv").write_bytes(pairs_text.encode())
    (eval_files / "triplets.csv").write_bytes(triplets_text.encode())
    refs = [eval_files / "refs/a1.jpg", eval_files / "refs/a2.jpg"]
    assert read_pairs_csv(eval_files / "pairs.csv").pairs == [(eval_files / "in/a.jpg", refs)]
    bench = read_csv(eval_files / "triplets.csv")
    assert bench.problems == []
    [triplet] = bench.triplets
    assert (triplet.degraded, triplet.references, triplet.gt) == (
        eval_files / "in/a.jpg",
        refs,
        eval_files / "gt/a.png",
    )


def test_pairs_and_triplets_name_the_same_line(eval_files):
    from ented_cli.evaluation.triplets import read_csv

    (eval_files / "pairs.csv").write_text("# c\ninput,ref\n\nin/a.jpg,refs/gone.jpg\n")
    (eval_files / "triplets.csv").write_text(
        "# c\ndegraded,reference,gt\n\nin/a.jpg,refs/gone.jpg,gt/a.png\n"
    )
    [pairs_problem] = read_pairs_csv(eval_files / "pairs.csv").problems
    assert re.match(r".*pairs\.csv line 4: reference .*gone\.jpg", pairs_problem)
    [problem] = read_csv(eval_files / "triplets.csv").problems
    assert "gone.jpg: no such file (listed on" in problem and "triplets.csv:4)" in problem


def test_pairs_input_listed_twice_through_a_link_is_caught(pair_files):
    (pair_files / "in" / "alias.jpg").symlink_to("a.jpg")
    (pair_files / "pairs.csv").write_text("in/a.jpg,refs/a1.jpg\nin/alias.jpg,refs/b.jpg\n")
    with pytest.raises(InputError, match=r"line 2: input in/alias\.jpg is listed again"):
        read_pairs_csv(pair_files / "pairs.csv")
