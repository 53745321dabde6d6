"""Input expansion (files, folders, globs, stdin), output planning (-o forms, suffix, ext), and
the shared pieces: image names, folder scans, "same file", CSV tables of paths."""

import os
from pathlib import Path

import pytest

from ented_cli.errors import InputError, UsageError
from ented_cli.paths import (
    IMAGE_EXTENSIONS,
    READABLE_EXTENSIONS,
    READABLE_LIST,
    InputItem,
    expand_inputs,
    file_key,
    images_in,
    input_paths,
    plan_output,
    read_path_table,
    same_file,
    scan_folder,
    side_path,
    sniff_ext,
    subfolders,
    unique_path,
)


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Path:
    """shots/ with images, a non-image, hidden files and nested folders; cwd = tmp_path."""
    files = [
        "shots/img10.jpg",
        "shots/img2.JPG",
        "shots/b.png",
        "shots/notes.txt",
        "shots/.hidden.jpg",
        "shots/2020/c.webp",
        "shots/2020/deep/d.tif",
        "shots/.cache/e.png",
        "empty/sub/f.png",
        "single.jpeg",
    ]
    for name in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _rels(items):
    return [item.rel.as_posix() for item in items]


# --- expand_inputs -----------------------------------------------------------------------------


def test_a_file_is_taken_as_given(tree):
    items, errors = expand_inputs(["single.jpeg"])
    assert errors == []
    assert items == [InputItem(Path("single.jpeg"), "single.jpeg", Path("single.jpeg"))]


def test_explicit_file_with_any_extension_is_taken(tree):
    items, errors = expand_inputs(["shots/notes.txt"])
    assert len(items) == 1 and errors == []  # reading it will say what is wrong with it


def test_folder_gives_its_images_in_natural_order_without_hidden_or_nested(tree):
    items, errors = expand_inputs(["shots"])
    assert errors == []
    assert _rels(items) == ["b.png", "img2.JPG", "img10.jpg"]
    assert [i.display for i in items] == ["shots/b.png", "shots/img2.JPG", "shots/img10.jpg"]


def test_recursive_folder_includes_subfolders_but_not_hidden_ones(tree):
    items, errors = expand_inputs(["shots/"], recursive=True)
    assert errors == []
    assert _rels(items) == ["2020/c.webp", "2020/deep/d.tif", "b.png", "img2.JPG", "img10.jpg"]
    assert items[1].path == Path("shots/2020/deep/d.tif")


def test_folder_without_images_is_reported_with_a_recursive_hint(tree):
    items, errors = expand_inputs(["empty"])
    assert items == []
    assert len(errors) == 1 and errors[0].startswith("empty: no images")
    assert "--recursive" in errors[0]
    items, errors = expand_inputs(["empty"], recursive=True)
    assert _rels(items) == ["sub/f.png"] and errors == []


def test_folder_with_images_and_sub_folders_notes_the_sub_folders_it_skipped(tree):
    (tree / "shots" / "2021").mkdir()
    notes = []
    items, errors = expand_inputs(["shots"], notes=notes)
    assert errors == [] and len(items) == 3
    assert notes == ["shots: skipped 2 sub-folder(s); add -R (--recursive) to include them"]
    for args, recursive in ((["shots"], True), (["empty"], False), (["single.jpeg"], False)):
        notes = []
        expand_inputs(args, recursive=recursive, notes=notes)
        assert notes == []  # searched, already in the "no images" error, or not a folder


def test_glob_with_double_star_mirrors_from_the_pattern_root(tree):
    items, errors = expand_inputs(["shots/**/*.*"])
    assert errors == []
    assert _rels(items) == ["2020/c.webp", "2020/deep/d.tif", "b.png", "img2.JPG", "img10.jpg"]


def test_glob_skips_non_images(tree):
    items, _ = expand_inputs(["shots/*"])
    assert _rels(items) == ["b.png", "img2.JPG", "img10.jpg"]


def test_glob_matching_only_non_images_is_reported(tree):
    items, errors = expand_inputs(["shots/*.txt"])
    assert items == [] and errors == [
        "shots/*.txt: pattern matched 1 file(s) but no images; check the pattern"
    ]


def test_missing_arguments_are_reported_and_the_rest_still_expand(tree):
    items, errors = expand_inputs(["nope.jpg", "single.jpeg", "shots/*.gif"])
    assert _rels(items) == ["single.jpeg"]
    assert errors == [
        "nope.jpg: no such file or folder; check the path",
        "shots/*.gif: pattern matched no files; check the pattern",
    ]


def test_stdin_is_one_item_and_only_once(tree):
    items, errors = expand_inputs(["-", "single.jpeg", "-"])
    assert items[0] == InputItem(None, "-", Path("stdin"))
    assert items[0].is_stdin and len(items) == 2
    assert len(errors) == 1 and errors[0].startswith("-: stdin was given more than once")


def test_the_same_file_reached_twice_is_processed_once(tree):
    os.symlink(tree / "shots/b.png", tree / "link.png")
    items, errors = expand_inputs(["shots/b.png", "./shots/b.png", "shots", "link.png"])
    assert errors == []
    assert [i.display for i in items] == ["shots/b.png", "shots/img2.JPG", "shots/img10.jpg"]


def test_file_names_with_glob_characters_are_taken_literally(tree):
    (tree / "photo[1].jpg").write_bytes(b"x")
    items, errors = expand_inputs(["photo[1].jpg"])
    assert errors == [] and items[0].path == Path("photo[1].jpg")


# --- plan_output -------------------------------------------------------------------------------


def _item(path: str, rel: str | None = None) -> InputItem:
    return InputItem(Path(path), path, Path(rel or Path(path).name))


def test_no_output_goes_to_results_with_the_input_name(tree):
    out = plan_output(_item("single.jpeg"), None, many=False, suffix=None, ext=None)
    assert out == Path("results/single.jpeg")


def test_output_file_for_a_single_input(tree):
    out = plan_output(_item("single.jpeg"), "restored.png", many=False, suffix="x", ext=None)
    assert out == Path("restored.png")  # a named file is used as typed; the suffix is for folders


def test_output_file_with_several_inputs_is_a_usage_error(tree):
    with pytest.raises(UsageError, match="exactly one input"):
        plan_output(_item("single.jpeg"), "restored.png", many=True, suffix=None, ext=None)


def test_output_file_and_a_different_ext_is_a_usage_error(tree):
    with pytest.raises(UsageError, match="different formats"):
        plan_output(_item("single.jpeg"), "restored.png", many=False, suffix=None, ext="jpg")
    out = plan_output(_item("single.jpeg"), "r.jpeg", many=False, suffix=None, ext=".jpg")
    assert out == Path("r.jpeg")  # .jpg and .jpeg are the same format


@pytest.mark.parametrize("output", ["out/", "out_dir", "shots"])
def test_output_folder_forms(tree, output):
    out = plan_output(_item("single.jpeg"), output, many=False, suffix=None, ext=None)
    assert out == Path(output) / "single.jpeg"


def test_several_inputs_mirror_their_folder_tree_in_the_output_folder(tree):
    item = _item("shots/2020/deep/d.tif", rel="2020/deep/d.tif")
    out = plan_output(item, "restored", many=True, suffix=None, ext=None)
    assert out == Path("restored/2020/deep/d.tif")


def test_stdout_output(tree):
    assert plan_output(_item("single.jpeg"), "-", many=False, suffix=None, ext=None) == "-"
    with pytest.raises(UsageError, match="stdout takes exactly one image"):
        plan_output(_item("single.jpeg"), "-", many=True, suffix=None, ext=None)


@pytest.mark.parametrize(
    ("suffix", "ext", "expected"),
    [
        ("fixed", None, "single_fixed.jpeg"),
        ("_fixed", None, "single_fixed.jpeg"),
        ("-v2", None, "single-v2.jpeg"),
        (None, "png", "single.png"),
        (None, ".PNG", "single.png"),
        ("fixed", "webp", "single_fixed.webp"),
    ],
)
def test_suffix_and_ext_shape_the_name(tree, suffix, ext, expected):
    out = plan_output(_item("single.jpeg"), None, many=False, suffix=suffix, ext=ext)
    assert out == Path("results") / expected


def test_unsupported_ext_and_bad_suffix_are_usage_errors(tree):
    with pytest.raises(UsageError, match=r"cannot write '\.gif' images"):
        plan_output(_item("single.jpeg"), None, many=False, suffix=None, ext="gif")
    with pytest.raises(UsageError, match="path separator"):
        plan_output(_item("single.jpeg"), None, many=False, suffix="a/b", ext=None)


def test_stdin_and_unwritable_input_formats_default_to_png(tree):
    stdin = InputItem(None, "-", Path("stdin"))
    assert plan_output(stdin, None, many=False, suffix=None, ext=None) == Path("results/stdin.png")
    gif = plan_output(_item("anim.gif"), "out/", many=False, suffix=None, ext=None)
    assert gif == Path("out/anim.png")


@pytest.mark.parametrize("name", ["y.gif", "y.AVIF", "y.heic", "y.jp2"])
def test_output_named_like_an_image_ented_cannot_write_is_a_usage_error(tree, name):
    with pytest.raises(UsageError, match=r"cannot write .* use one of \.jpg, \.jpeg, \.png"):
        plan_output(_item("single.jpeg"), f"out/{name}", many=False, suffix=None, ext=None)
    with pytest.raises(UsageError, match="cannot write"):
        plan_output(_item("single.jpeg"), f"out/{name}", many=True, suffix=None, ext=None)


@pytest.mark.parametrize("output", ["name.with.dots/", "kept.gif/", "results.v2"])
def test_dotted_names_ending_in_a_slash_or_without_image_extension_stay_folders(tree, output):
    out = plan_output(_item("single.jpeg"), output, many=False, suffix=None, ext=None)
    assert out == Path(output) / "single.jpeg"


def test_an_existing_folder_named_like_an_image_stays_a_folder(tree):
    (tree / "album.gif").mkdir()
    out = plan_output(_item("single.jpeg"), "album.gif", many=False, suffix=None, ext=None)
    assert out == Path("album.gif/single.jpeg")


@pytest.mark.parametrize(
    ("data", "ext"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", ".jpg"),
        (b"\x89PNG\r\n\x1a\n\x00", ".png"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", ".webp"),
        (b"II*\x00\x08\x00", ".tif"),
        (b"MM\x00*\x00\x00", ".tif"),
        (b"BM\x36\x00", ".bmp"),
        (b"GIF89a", None),
        (b"not an image", None),
        (b"", None),
    ],
)
def test_stdin_bytes_name_their_own_format(data, ext):
    assert sniff_ext(data) == ext


def test_stdin_output_keeps_the_sniffed_format_unless_ext_says_otherwise(tree):
    stdin = InputItem(None, "-", Path("stdin"))
    plan = {"many": False, "suffix": None, "stdin_ext": ".jpg"}
    assert plan_output(stdin, None, ext=None, **plan) == Path("results/stdin.jpg")
    assert plan_output(stdin, "out/", ext="png", **plan) == Path("out/stdin.png")


def test_input_extension_case_is_kept(tree):
    out = plan_output(_item("shots/img2.JPG"), None, many=False, suffix=None, ext=None)
    assert out == Path("results/img2.JPG")


def test_output_into_the_input_folder_never_replaces_the_input(tree):
    out = plan_output(_item("shots/b.png"), "shots/", many=False, suffix=None, ext=None)
    assert out == Path("shots/b_ented.png")


def test_output_file_equal_to_the_input_never_replaces_it(tree):
    out = plan_output(_item("shots/b.png"), "./shots/b.png", many=False, suffix=None, ext=None)
    assert out == Path("shots/b_ented.png")


def test_output_reaching_the_input_through_a_symlink_never_replaces_it(tree):
    os.symlink(tree / "shots", tree / "alias")
    out = plan_output(_item("shots/b.png"), "alias", many=False, suffix=None, ext=None)
    assert out == Path("alias/b_ented.png")


# --- unique_path and side_path -----------------------------------------------------------------


def test_unique_path_numbers_collisions_within_a_run():
    taken: set[Path] = set()
    names = [unique_path(Path("results/a.png"), taken) for _ in range(3)]
    assert names == [Path("results/a.png"), Path("results/a_1.png"), Path("results/a_2.png")]
    assert unique_path(Path("results/b.png"), taken) == Path("results/b.png")
    assert Path("results/b.png") in taken


def test_unique_path_seeded_with_inputs_never_hits_another_input(tree):
    items, _ = expand_inputs(["shots/b.png"])
    (tree / "shots/b_ented.png").write_bytes(b"x")  # a second input that planning would hit
    items += expand_inputs(["shots/b_ented.png"])[0]
    taken = input_paths(items)
    out = plan_output(items[0], "shots", many=True, suffix=None, ext=None)
    assert out == Path("shots/b_ented.png")
    assert unique_path(out, taken) == Path("shots/b_ented_1.png")


def test_side_outputs_sit_beside_the_output():
    out = Path("results/sub/a.jpg")
    assert side_path(out, "faces") == Path("results/sub/faces/a_face00.png")
    assert side_path(out, "faces", index=3) == Path("results/sub/faces/a_face03.png")
    assert side_path(str(out), "cmp") == Path("results/sub/a_cmp.jpg")
    with pytest.raises(UsageError):
        side_path("-", "cmp")
    with pytest.raises(ValueError):
        side_path(out, "masks")


# --- odd folders (issue 6) ---------------------------------------------------------------------


def test_symlink_loops_in_a_recursive_scan_neither_hang_nor_duplicate(tmp_path):
    album = tmp_path / "in" / "album"
    album.mkdir(parents=True)
    (album / "a.jpg").write_bytes(b"x")
    (album / "up").symlink_to("..")  # in/album/up/album/up/... forever
    (tmp_path / "in" / "again").symlink_to("album")  # the same folder under another name
    (tmp_path / "in" / "loop.jpg").symlink_to("loop.jpg")
    items, errors = expand_inputs([str(tmp_path / "in")], recursive=True)
    assert errors == []
    # a.jpg once, under its real folder; the looping link is an input (its read will fail).
    assert _rels(items) == ["album/a.jpg", "loop.jpg"]


def test_gif_and_avif_are_found_in_folders_and_written_as_png(tmp_path):
    for name in ("anim.gif", "phone.avif", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    items, _ = expand_inputs([str(tmp_path)])
    assert _rels(items) == ["anim.gif", "phone.avif"]
    outs = [plan_output(item, "out/", many=True, suffix=None, ext=None) for item in items]
    assert [p.name for p in outs] == ["anim.png", "phone.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can list any folder")
def test_a_folder_that_cannot_be_listed_is_reported(tmp_path):
    (tmp_path / "ok.jpg").write_bytes(b"x")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "hidden_from_us.jpg").write_bytes(b"x")
    locked.chmod(0)
    try:
        items, errors = expand_inputs([str(tmp_path)], recursive=True)
    finally:
        locked.chmod(0o755)
    assert _rels(items) == ["ok.jpg"]
    assert len(errors) == 1 and "locked: cannot list this folder" in errors[0]


# --- one list of image names, one scanner, one "same file", one CSV dialect (issue 12) ---------


def test_every_readable_extension_is_decoded_by_read_image(tmp_path):
    """The list is what ented can really read: each suffix decodes through read.read_image."""
    from PIL import Image, features

    from ented_cli.imaging.read import read_image

    pillow_format = {".jpg": "JPEG", ".jfif": "JPEG", ".tif": "TIFF", ".pgm": "PPM"}
    pixels = Image.new("RGB", (16, 16), (200, 120, 40))
    for ext in sorted(READABLE_EXTENSIONS):
        if ext == ".avif" and not features.check("avif"):
            continue  # an older Pillow; test_imageio covers AVIF where it can
        path = tmp_path / f"x{ext}"
        image = pixels.convert("L") if ext == ".pgm" else pixels
        image.save(path, format=pillow_format.get(ext))
        assert read_image(path).size == (16, 16), ext
    assert IMAGE_EXTENSIONS <= READABLE_EXTENSIONS
    assert {".jp2", ".pgm", ".ppm", ".gif", ".avif"} <= READABLE_EXTENSIONS
    assert all(ext in READABLE_LIST for ext in READABLE_EXTENSIONS)


def test_jp2_pgm_and_ppm_are_found_and_listed_in_the_no_images_message(tmp_path):
    for name in ("scan.jp2", "gray.PGM", "colour.ppm"):
        (tmp_path / "in" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"x")
    items, _ = expand_inputs([str(tmp_path / "in")])
    assert _rels(items) == ["colour.ppm", "gray.PGM", "scan.jp2"]
    (tmp_path / "none").mkdir()
    _, errors = expand_inputs([str(tmp_path / "none")])
    assert f"(looked for {READABLE_LIST})" in errors[0] and ".jp2" in errors[0]


def test_scan_folder_options(tree):
    flat = scan_folder("shots")
    assert [p.as_posix() for p in flat.images] == ["b.png", "img2.JPG", "img10.jpg"]
    assert flat.has_subfolders and flat.problems == []
    deep = scan_folder(tree / "shots", recursive=True)
    assert [p.as_posix() for p in deep.images][:2] == ["2020/c.webp", "2020/deep/d.tif"]
    assert images_in("shots") == [
        Path("shots/b.png"),
        Path("shots/img2.JPG"),
        Path("shots/img10.jpg"),
    ]
    assert images_in("shots", recursive=True)[0] == Path("shots/2020/c.webp")


def test_subfolders_are_visible_folders_in_natural_order(tmp_path):
    for name in ("person10", "person2", ".cache", "Person3"):
        (tmp_path / name).mkdir()
    (tmp_path / "person1.jpg").write_bytes(b"x")
    (tmp_path / "link").symlink_to("person2")
    assert [p.name for p in subfolders(tmp_path)] == ["link", "person2", "Person3", "person10"]
    with pytest.raises(InputError, match="cannot list this folder"):
        subfolders(tmp_path / "missing")


def test_same_file_sees_links_spellings_and_hard_links_and_never_raises(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "soft.jpg").symlink_to("a.jpg")
    os.link(tmp_path / "a.jpg", tmp_path / "hard.jpg")
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    assert same_file("a.jpg", tmp_path / "sub" / ".." / "a.jpg")
    assert same_file("soft.jpg", "a.jpg") and file_key("soft.jpg") == file_key("a.jpg")
    assert same_file("hard.jpg", "a.jpg") and file_key("hard.jpg") != file_key("a.jpg")
    assert not same_file("a.jpg", "b.jpg") and not same_file("loop.jpg", "a.jpg")
    assert file_key("loop.jpg")  # Path.resolve() would raise on the loop


COLUMNS = {"input": ("input", "lq"), "ref": ("ref", "refs")}


def test_path_table_dialect(tmp_path):
    csv_path = tmp_path / "lists" / "t.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(
        "# made by hand\nnote,REFS,lq\n\nx, r1.jpg ; /abs/r2.jpg;,in/a.jpg\n,,\n"
        "# skipped\n'x',~/r.jpg,b.jpg,extra\n",
        encoding="utf-8-sig",
    )
    table = read_path_table(csv_path, COLUMNS)
    assert table.has_header and [row.line for row in table.rows] == [4, 7]
    first, second = table.rows
    assert first.cells == {"input": "in/a.jpg", "ref": "r1.jpg ; /abs/r2.jpg;"}
    assert not first.short and not first.spills and second.spills
    assert table.path(first.cells["input"]) == csv_path.parent / "in/a.jpg"
    assert table.paths(first.cells["ref"]) == [csv_path.parent / "r1.jpg", Path("/abs/r2.jpg")]
    assert table.path(second.cells["ref"]) == Path.home() / "r.jpg"


def test_path_table_without_header_takes_columns_in_order(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("a.jpg,r.jpg\nonly.jpg\ninput,ref\n")  # a header row later is data
    rows = read_path_table(csv_path, COLUMNS).rows
    assert [row.cells for row in rows] == [
        {"input": "a.jpg", "ref": "r.jpg"},
        {"input": "only.jpg", "ref": ""},
        {"input": "input", "ref": "ref"},
    ]
    assert [row.short for row in rows] == [False, True, False]


def test_path_table_errors_name_the_csv_and_the_fix(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_bytes(b"input,ref\n\xff\xfe,x\n")
    with pytest.raises(UsageError, match=r"t\.csv: not UTF-8 text; save it as a UTF-8 CSV"):
        read_path_table(csv_path, COLUMNS, error=UsageError)
    csv_path.write_text("# header below\nlq,person\n")
    with pytest.raises(InputError, match=r"t\.csv: no ref column \(one of ref, refs\); add a"):
        read_path_table(csv_path, COLUMNS, header_required=True)
    csv_path.write_text("\n# nothing\n")
    table = read_path_table(csv_path, COLUMNS, header_required=True)
    assert not table.has_header and table.rows == []


def test_video_sniffing_never_opens_a_fifo(tmp_path):
    # Opening a named pipe blocks until a writer comes: a batch with one must not hang on it.
    import os

    from ented_cli.paths import is_video_file

    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    assert is_video_file(fifo) is False
