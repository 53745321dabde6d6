"""`ented restore` end to end: real detector, real identity model, the shipped weights."""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ented_cli.cli.main import main
from tests.conftest import EXAMPLES, needs_shared

ASTRONAUT = EXAMPLES / "astronaut.png"
DEGRADED = EXAMPLES / "astronaut_degraded.jpg"
HOPPER = EXAMPLES / "grace_hopper.jpg"


def ented(*args, input=None):
    result = CliRunner().invoke(main, [str(a) for a in args], input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def face_box_mask(shape, box, margin=0.6) -> np.ndarray:
    """True inside the face box grown by `margin` of its size on every side."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    mask = np.zeros(shape[:2], bool)
    mask[
        max(0, int(y1 - margin * h)) : int(y2 + margin * h),
        max(0, int(x1 - margin * w)) : int(x2 + margin * w),
    ] = True
    return mask


@needs_shared
def test_london_photo_restored_with_the_same_persons_other_photo(shared_data, tmp_path):
    raw = shared_data / "london" / "raw"
    src, ref = raw / "001_neutral.jpg", raw / "001_smiling.jpg"
    out = tmp_path / "out.jpg"
    before = sha(src)
    result = ented("restore", src, "--ref", ref, "-o", out, "--json", "--no-guard")
    assert result.exit_code == 0, result.stderr
    (report,) = json_lines(result.stdout)
    assert report["status"] == "restored" and report["output"] == str(out)
    (face,) = report["faces"]
    assert face["mode"] == "reference" and face["references"] == [str(ref)]
    assert face["identity_before"] > 0.9 and face["identity_after"] is not None
    assert sha(src) == before  # the input is never modified

    a, b = cv2.imread(str(src)).astype(float), cv2.imread(str(out)).astype(float)
    assert a.shape == b.shape
    near = face_box_mask(a.shape, face["box"], margin=0.0)
    far = ~face_box_mask(a.shape, face["box"], margin=0.6)
    assert np.abs(a - b)[near].mean() > 2.0  # the face changed
    assert np.abs(a - b)[far].mean() < 1.0  # the background did not (only JPEG re-encoding)


@needs_shared
def test_png_output_leaves_background_pixels_bit_identical(shared_data, tmp_path):
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), cv2.imread(str(shared_data / "london" / "raw" / "002_neutral.jpg")))
    out = tmp_path / "out.png"
    result = ented("restore", src, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    (face,) = json_lines(result.stdout)[0]["faces"]
    assert face["mode"] == "blind"
    a, b = cv2.imread(str(src)), cv2.imread(str(out))
    far = ~face_box_mask(a.shape, face["box"], margin=0.6)
    assert np.array_equal(a[far], b[far])


@needs_shared
def test_gallery_picks_the_right_person(shared_data, tmp_path):
    raw = shared_data / "london" / "raw"
    gallery = tmp_path / "gallery"
    for person in ("003", "004", "006"):
        (gallery / person).mkdir(parents=True)
        shutil.copy(raw / f"{person}_smiling.jpg", gallery / person / "photo.jpg")
    result = ented(
        "restore", raw / "004_neutral.jpg", "--ref-dir", gallery, "-o", tmp_path / "o.jpg", "--json"
    )
    assert result.exit_code == 0, result.stderr
    (face,) = json_lines(result.stdout)[0]["faces"]
    assert face["person"] == "004"


def test_folder_in_folder_out_with_one_json_line_per_input(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(DEGRADED, src / "a.jpg")
    shutil.copy(HOPPER, src / "sub" / "b.jpg")
    out = tmp_path / "out"
    result = ented("restore", src, "-R", "-o", out, "--json", "--save-cmp", "--save-faces")
    assert result.exit_code == 0, result.stderr
    reports = json_lines(result.stdout)
    # Neither face is made clearly sharper without a reference (Grace Hopper's photo is sharp
    # already): the guard leaves both photos as they were, copied, and says why.
    assert [r["status"] for r in reports] == ["unchanged", "unchanged"]
    assert {r["faces"][0]["guard_reason"] for r in reports} == {"already_sharp"}
    assert "--no-guard restores them" in result.stderr
    result = ented(
        "restore", src, "-R", "-o", out, "--json", "--save-cmp", "--save-faces", "--no-guard"
    )
    reports = json_lines(result.stdout)
    assert [r["status"] for r in reports] == ["restored", "restored"]
    assert (out / "a.jpg").is_file() and (out / "sub" / "b.jpg").is_file()
    assert (out / "a_cmp.jpg").is_file() and (out / "faces" / "a_face00.png").is_file()
    cmp = cv2.imread(str(out / "a_cmp.jpg"))
    assert cmp.shape[1] > 2 * cv2.imread(str(src / "a.jpg")).shape[1]  # before | after


def test_reference_is_used_and_reported(tmp_path):
    result = ented("restore", DEGRADED, "--ref", ASTRONAUT, "-o", tmp_path / "x.png", "--json")
    assert result.exit_code == 0, result.stderr
    (face,) = json_lines(result.stdout)[0]["faces"]
    assert face["mode"] == "reference" and face["match_similarity"] >= 0.9


@pytest.mark.slow
def test_a_stranger_as_reference_is_not_pasted_on_the_face(tmp_path):
    result = ented("restore", DEGRADED, "--ref", HOPPER, "-o", tmp_path / "x.png", "--json")
    (face,) = json_lines(result.stdout)[0]["faces"]
    assert face["mode"] == "blind" and face["person"] is None
    skipped = ented(
        "restore",
        DEGRADED,
        "--ref",
        HOPPER,
        "--unmatched",
        "skip",
        "-o",
        tmp_path / "y.jpg",
        "--json",
    )
    (report,) = json_lines(skipped.stdout)
    assert report["status"] == "unchanged"
    assert sha(tmp_path / "y.jpg") == sha(DEGRADED)  # untouched: a byte-for-byte copy


@pytest.mark.slow
def test_stdin_to_stdout(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ented_cli", "restore", "-", "-o", "-", "-q"],
        input=DEGRADED.read_bytes(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.startswith(b"\xff\xd8\xff")  # a JPEG in, a JPEG out (> fixed.jpg)
    image = cv2.imdecode(np.frombuffer(proc.stdout, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.shape[:2] == cv2.imread(str(DEGRADED)).shape[:2]
    assert proc.stderr == b""


def test_stdin_without_output_is_saved_in_its_own_format(tmp_path, monkeypatch):
    _, jpeg = cv2.imencode(".jpg", np.full((120, 160, 3), 90, np.uint8))
    monkeypatch.chdir(tmp_path)
    result = ented("restore", "-", "--json", input=jpeg.tobytes())
    assert result.exit_code == 0, result.stderr
    (report,) = json_lines(result.stdout)
    assert report["output"] == os.path.join("results", "stdin.jpg")
    assert (tmp_path / "results" / "stdin.jpg").read_bytes() == jpeg.tobytes()  # no face: copied


def test_output_named_like_an_image_ented_cannot_write_is_a_usage_error(tmp_path):
    result = ented("restore", DEGRADED, "-o", tmp_path / "out" / "y.gif")
    assert result.exit_code == 2
    assert "cannot write '.gif'" in result.stderr and ".png" in result.stderr
    assert not (tmp_path / "out").exists()


def test_image_without_a_face_is_copied_and_reported(tmp_path):
    flat = tmp_path / "wall.png"
    cv2.imwrite(str(flat), np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (200, 1)))
    result = ented("restore", flat, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0
    (report,) = json_lines(result.stdout)
    assert report["status"] == "no_face" and report["faces"] == []
    assert sha(tmp_path / "out" / "wall.png") == sha(flat)
    assert "no face found" in result.stderr


def test_bad_inputs_fail_alone_and_the_batch_carries_on(tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(DEGRADED.read_bytes()[:300])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    good = tmp_path / "good.jpg"
    shutil.copy(DEGRADED, good)
    result = ented(
        "restore",
        corrupt,
        text,
        good,
        tmp_path / "missing.jpg",
        "-o",
        tmp_path / "out",
        "--json",
        "--no-guard",
    )
    assert result.exit_code == 3
    errors = [line for line in result.stderr.splitlines() if line.startswith("ented: error:")]
    assert len(errors) == 3
    assert any("corrupt.jpg" in e for e in errors) and any("notes.png" in e for e in errors)
    assert any("missing.jpg" in e for e in errors)
    statuses = {r["input"]: r["status"] for r in json_lines(result.stdout)}
    assert statuses[str(good)] == "restored" and statuses[str(corrupt)] == "error"
    assert (tmp_path / "out" / "good.jpg").is_file()


def test_missing_or_unreadable_reference_is_a_usage_error_before_any_work(tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    result = ented(
        "restore",
        DEGRADED,
        "--ref",
        tmp_path / "nope.jpg",
        "--ref",
        notes,
        "-o",
        tmp_path / "o.jpg",
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr  # both problems, no summary: nothing was done
    assert "nope.jpg: reference not found; check the --ref path" in lines[0]
    assert "notes.jpg" in lines[1] and "a --ref must be a photo" in lines[1]
    assert not (tmp_path / "o.jpg").exists()  # a typo never becomes a blind result


def test_reference_without_a_face_stops_the_run_before_any_input(tmp_path):
    no_face = tmp_path / "wall.png"
    cv2.imwrite(str(no_face), np.full((120, 160, 3), 90, np.uint8))
    result = ented("restore", DEGRADED, "--ref", no_face, "-o", tmp_path / "o.jpg")
    assert result.exit_code == 2
    assert "wall.png: no face found in this reference" in result.stderr
    assert not (tmp_path / "o.jpg").exists()


def test_unusable_references_say_what_is_wrong_with_them(tmp_path):
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    (tmp_path / "gone.jpg").symlink_to("deleted.jpg")
    (tmp_path / "album").mkdir()
    refs = [tmp_path / "loop.jpg", tmp_path / "gone.jpg", tmp_path / "album"]
    args = [a for ref in refs for a in ("--ref", ref)]
    result = ented("restore", DEGRADED, *args, "-o", tmp_path / "o.jpg")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, result.stderr
    assert "loop.jpg: reference is a symbolic link loop; fix or remove the link" in lines[0]
    assert "gone.jpg: reference is a broken symbolic link" in lines[1]
    assert "album: reference is a folder; pass it with --ref-dir" in lines[2]
    assert not (tmp_path / "o.jpg").exists()


def test_unwritable_output_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = ented("restore", DEGRADED, "-o", blocker / "sub" / "out.jpg")
    assert result.exit_code == 1
    line, summary = result.stderr.strip().splitlines()
    assert line.startswith("ented: error:") and "file" in line
    assert summary.startswith("ented: 0 image(s) restored") and summary.endswith("1 failed")


def test_usage_errors_exit_with_2(tmp_path):
    assert ented("restore", DEGRADED, "-o", "-", "--json").exit_code == 2
    assert ented("restore", DEGRADED, "--faces", "match").exit_code == 2
    assert ented("restore", DEGRADED, "--fidelity", "1.5").exit_code == 2
    assert ented("restore", DEGRADED, HOPPER, "-o", tmp_path / "one.jpg").exit_code == 2
    assert ented("restore").exit_code == 2


def test_gray_stays_gray_alpha_survives_and_upscale_scales(tmp_path):
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), cv2.cvtColor(cv2.imread(str(DEGRADED)), cv2.COLOR_BGR2GRAY))
    rgba = tmp_path / "rgba.png"
    image = cv2.imread(str(ASTRONAUT))
    alpha = np.full(image.shape[:2], 255, np.uint8)
    alpha[:, :40] = 0
    cv2.imwrite(str(rgba), np.dstack([image, alpha]))
    out = tmp_path / "out"
    result = ented("restore", gray, rgba, "-o", out, "-s", "2", "--json")
    assert result.exit_code == 0, result.stderr
    g = cv2.imread(str(out / "gray.png"), cv2.IMREAD_UNCHANGED)
    assert g.ndim == 2 and g.shape == (2 * image.shape[0], 2 * image.shape[1])
    a = cv2.imread(str(out / "rgba.png"), cv2.IMREAD_UNCHANGED)
    assert a.shape[2] == 4 and a[:, :70, 3].max() == 0 and a[:, 90:, 3].min() == 255


def test_pairs_csv_drives_a_scripted_batch(tmp_path):
    rows = tmp_path / "jobs.csv"
    shutil.copy(DEGRADED, tmp_path / "old.jpg")
    shutil.copy(ASTRONAUT, tmp_path / "good.png")
    with open(rows, "w", newline="") as f:
        csv.writer(f).writerows([["input", "ref"], ["old.jpg", "good.png"]])
    result = ented("restore", "--pairs", rows, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    (face,) = json_lines(result.stdout)[0]["faces"]
    assert face["mode"] == "reference"


def test_fidelity_changes_the_result(tmp_path):
    for w in ("0", "1"):
        # --no-guard: at -w 1 the face stays as blurry as its input, which the guard would keep.
        args = ("restore", DEGRADED, "-w", w, "--no-guard", "-o", tmp_path / f"w{w}.png")
        assert ented(*args).exit_code == 0
    a, b = (cv2.imread(str(tmp_path / f"w{w}.png")).astype(float) for w in ("0", "1"))
    assert np.abs(a - b).mean() > 0.1  # over the whole photo; the face is a small part of it


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys; from ented_cli.cli.main import main; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    proc = subprocess.run(
        [sys.executable, "-m", "ented_cli", "--help"], capture_output=True, text=True, check=False
    )
    assert "Exit codes" in proc.stdout and proc.returncode == 0


def test_weights_commands_list_verify_and_path():
    listed = ented("weights", "list")
    assert listed.exit_code == 0 and "ented-256-preview" in listed.stdout
    assert listed.stdout.splitlines()[0].split("\t")[:3] == ["name", "architecture", "size"]
    assert ented("weights", "verify").exit_code == 0
    assert ented("weights", "path").stdout.strip().endswith("ented-256-preview.json")


def test_corrupt_weights_are_a_clear_error(tmp_path):
    from ented_cli.model.weight_lookup import resolve_weights

    ws = resolve_weights(None)
    copy = tmp_path / "w"
    shutil.copytree(ws.manifest.parent, copy)
    shard = copy / ws.shards[0].name
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = ented(
        "restore", DEGRADED, "--weights", copy / ws.manifest.name, "-o", tmp_path / "o.jpg"
    )
    assert result.exit_code == 1
    assert "sha256" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "o.jpg")


@pytest.mark.slow
@needs_shared
def test_group_photo_restores_every_face_or_only_the_largest(shared_data, tmp_path):
    group = shared_data / "real-lq" / "whole" / "01.jpg"
    every = json_lines(ented("restore", group, "-o", tmp_path / "all.png", "--json").stdout)[0]
    largest = json_lines(
        ented("restore", group, "--faces", "largest", "-o", tmp_path / "one.png", "--json").stdout
    )[0]
    assert len(every["faces"]) >= 3 and all(f["restored"] for f in every["faces"])
    assert len(largest["faces"]) == len(every["faces"])  # the others are listed, not restored
    assert sum(f["restored"] for f in largest["faces"]) == 1
    assert {f["mode"] for f in largest["faces"] if not f["restored"]} == {"skipped"}


def test_skip_existing_resumes_a_batch_without_redoing_it(tmp_path):
    out = tmp_path / "out"
    assert ented("restore", DEGRADED, "-o", out / "").exit_code == 0
    resumed = ented(
        "restore", DEGRADED, HOPPER, "-o", out, "--skip-existing", "--json", "--no-guard"
    )
    assert resumed.exit_code == 0, resumed.stderr
    skipped, restored = json_lines(resumed.stdout)
    assert skipped["status"] == "skipped" and skipped["input"] == str(DEGRADED)
    assert skipped["output"] == str(out / DEGRADED.name) and restored["status"] == "restored"
    assert resumed.stderr.splitlines()[-1].endswith(f"0 failed, 1 skipped; results in {out}/")
    again = ented("restore", DEGRADED, HOPPER, "-o", out, "--skip-existing", "--json")
    assert again.exit_code == 0
    assert [r["status"] for r in json_lines(again.stdout)] == ["skipped", "skipped"]
    assert "nothing to do" in again.stderr


def test_faces_largest_lists_the_other_faces_as_skipped(tmp_path):
    left = cv2.imread(str(DEGRADED))
    right = cv2.resize(cv2.imread(str(HOPPER)), (200, 234), interpolation=cv2.INTER_AREA)
    pair = np.zeros((left.shape[0], left.shape[1] + 220, 3), np.uint8)
    pair[:, : left.shape[1]] = left
    pair[60:294, left.shape[1] + 10 : left.shape[1] + 210] = right
    src = tmp_path / "two.png"
    cv2.imwrite(str(src), pair)
    args = ("--faces", "largest", "-o", tmp_path / "o.png", "--json", "--no-guard")
    result = ented("restore", src, *args)
    assert result.exit_code == 0, result.stderr
    (report,) = json_lines(result.stdout)
    largest, other = sorted(report["faces"], key=lambda f: f["box"][0] - f["box"][2])
    assert largest["restored"] and largest["mode"] == "blind"
    assert not other["restored"] and other["mode"] == "skipped" and other["person"] is None


def test_error_lines_keep_what_was_known_when_it_failed(tmp_path, monkeypatch):
    from ented_cli.errors import InputError
    from ented_cli.model.restorer import EntedRestorer

    too_big = ented("restore", DEGRADED, "-s", "8", "--max-pixels", "1M", "-o", tmp_path, "--json")
    (report,) = json_lines(too_big.stdout)
    assert report["status"] == "error" and "--upscale" in report["error"]
    assert (report["width"], report["height"]) == (512, 352)  # it was read before it failed

    def broken(self, faces, references, fidelity):
        raise InputError("the network gave up")

    monkeypatch.setattr(EntedRestorer, "restore", broken)
    failed = ented("restore", DEGRADED, "-o", tmp_path, "--json")
    (report,) = json_lines(failed.stdout)
    assert report["status"] == "error" and report["width"] == 512
    (face,) = report["faces"]  # found before the network failed
    assert face["restored"] is False and face["score"] > 0.5


def test_exif_orientation_is_applied_and_icc_profile_kept(tmp_path):
    from PIL import Image, ImageCms

    src = tmp_path / "rotated.jpg"
    image = Image.open(DEGRADED)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; viewers rotate it 90° clockwise
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image.rotate(90, expand=True).save(src, exif=exif.tobytes(), icc_profile=icc, quality=95)
    out = tmp_path / "out.jpg"
    result = ented("restore", src, "-o", out, "--json", "--no-guard")
    assert result.exit_code == 0, result.stderr
    assert json_lines(result.stdout)[0]["status"] == "restored"  # the face was found upright
    restored = Image.open(out)
    assert restored.size == image.size  # upright, as the viewer showed it
    assert restored.getexif().get(0x0112) in (None, 1)
    assert restored.info.get("icc_profile") == icc


def test_gpu_out_of_memory_retries_with_smaller_batches():
    """No GPU here: a restorer whose device 'runs out of memory' above two faces stands in for one."""
    import torch

    from ented_cli.model.restorer import EntedRestorer
    from ented_cli.model.weight_lookup import resolve_weights

    class SmallDevice(EntedRestorer):
        def _restore_batch(self, faces, references, fidelity):
            if len(faces) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory")
            return super()._restore_batch(faces, references, fidelity)

    restorer = SmallDevice(resolve_weights(None), "cpu", batch_size=8)
    faces = np.random.default_rng(0).random((5, 256, 256, 3), dtype=np.float32)
    out = restorer.restore(faces, [[]] * 5, 0.5)
    assert out.shape == (5, 256, 256, 3) and restorer.batch_size == 2


def test_pairs_row_whose_reference_has_no_face_is_reported(tmp_path):
    cv2.imwrite(str(tmp_path / "wall.png"), np.full((120, 160, 3), 90, np.uint8))
    shutil.copy(DEGRADED, tmp_path / "old.jpg")
    (tmp_path / "jobs.csv").write_text("input,ref\nold.jpg,wall.png\n")
    result = ented("restore", "--pairs", tmp_path / "jobs.csv", "-o", tmp_path / "out")
    assert result.exit_code == 3
    assert "wall.png: no face found in this reference" in result.stderr
    assert (tmp_path / "out" / "old.jpg").is_file()


def test_pairs_row_naming_a_missing_input_fails_alone(tmp_path):
    cv2.imwrite(str(tmp_path / "wall.png"), np.full((120, 160, 3), 90, np.uint8))
    (tmp_path / "jobs.csv").write_text("input,ref\nwall.png,wall.png\nmissing.jpg,wall.png\n")
    result = ented("restore", "--pairs", tmp_path / "jobs.csv", "-o", tmp_path / "out")
    assert result.exit_code == 3, result.stderr
    (line,) = [e for e in result.stderr.splitlines() if "missing.jpg" in e]
    assert line.startswith("ented: error: ") and "jobs.csv line 3: input " in line
    assert "fix the path" in line
    assert (tmp_path / "out" / "wall.png").is_file()  # the other row was done


def test_scripts_get_a_summary_and_a_note_on_skipped_sub_folders(tmp_path):
    src = tmp_path / "in"
    (src / "later").mkdir(parents=True)
    cv2.imwrite(str(src / "wall.png"), np.full((120, 160, 3), 90, np.uint8))
    result = ented("restore", src, "-o", tmp_path / "out")  # stderr is not a terminal here
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert (
        f"ented: warning: {src}: skipped 1 sub-folder(s); add -R (--recursive) to include them"
        in lines
    )
    assert lines[-1] == (
        "ented: 0 image(s) restored (0 face(s), 0 with a reference), 1 without a face, 0 failed; "
        f"results in {tmp_path / 'out'}/"
    )


def test_summary_line_tells_people_what_happened():
    from ented_cli.cli.restore import summary_line

    reports = [
        {
            "status": "restored",
            "output": "out/a.jpg",
            "faces": [{"restored": True, "mode": "reference"}, {"restored": True, "mode": "blind"}],
        },
        {"status": "no_face", "output": "out/b.jpg", "faces": []},
        {"status": "error", "output": None},
    ]
    line = summary_line(reports, failures=1)
    assert line == (
        "1 image(s) restored (2 face(s), 1 with a reference), 1 without a face, 1 failed; "
        "results in out/"
    )
    skipped = {"status": "skipped", "output": "out/c.jpg"}
    assert summary_line([*reports, skipped, skipped], failures=1) == (
        "1 image(s) restored (2 face(s), 1 with a reference), 1 without a face, 1 failed, "
        "2 skipped; results in out/"
    )
    # Outputs in the current folder: not "results in /" (the root).
    here = {"status": "restored", "output": "a_restored.jpg", "faces": []}
    assert summary_line([here], failures=0).endswith("; results in ./")
    face = {"restored": False, "mode": "blind", "guard_reason": "already_sharp"}
    kept = {"status": "unchanged", "output": "b.jpg", "faces": [face]}
    assert "1 left unchanged (1 face(s) already sharp; --no-guard restores them)" in (
        summary_line([kept], failures=0)
    )


def test_aligned_crops_are_restored_whole_without_detection(tmp_path):
    from ented_cli.faces.align import estimate_alignment, warp_face
    from ented_cli.faces.detect import FaceDetector

    image = cv2.imread(str(DEGRADED))
    face = FaceDetector().detect(image)[0]
    crop = warp_face(image, estimate_alignment(face.landmarks, 384), 384)  # an aligned 384 crop
    src = tmp_path / "crop.png"
    cv2.imwrite(str(src), crop)
    args = ("--aligned", "-o", tmp_path / "out.png", "--json", "--save-cmp", "--no-guard")
    result = ented("restore", src, *args)
    assert result.exit_code == 0, result.stderr
    (face_report,) = json_lines(result.stdout)[0]["faces"]
    assert face_report["restored"] and face_report["box"] == [0.0, 0.0, 384.0, 384.0]
    out = cv2.imread(str(tmp_path / "out.png"))
    assert out.shape == crop.shape
    assert np.abs(out.astype(float) - crop).mean() > 1.0  # the whole crop is the restoration
    cmp = cv2.imread(str(tmp_path / "out_cmp.png")).astype(float)  # lossless out: PNG
    assert np.abs(cmp[:, :384] - cmp[:, -384:]).mean() > 1.0  # before | after differ
