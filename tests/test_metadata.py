"""What archivists keep: resolution, EXIF, text, the "written by ented" mark, and the word about
CMYK. End to end through `ented restore` (real detector and weights) on inputs made from the
photos in examples/, plus the reading and writing details that need no network."""

import io
import json

import numpy as np
import png
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from ented_cli import __version__
from ented_cli.cli.main import main
from ented_cli.imaging.pixels import resize_like_upscale
from ented_cli.imaging.read import read_image
from ented_cli.imaging.write import encode_image
from tests.conftest import EXAMPLES

HOPPER = EXAMPLES / "grace_hopper.jpg"  # 512 x 600, one face
MARK = f"ented {__version__}"
SOFTWARE, ARTIST, MAKE, COPYRIGHT, ORIENTATION = 0x0131, 0x013B, 0x010F, 0x8298, 0x0112
X_RESOLUTION, EXIF_IFD, DATE_TAKEN, PIXEL_X = 0x011A, 0x8769, 0x9003, 0xA002


def ented(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def reports(result) -> dict[str, dict]:
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {r["input"].rsplit("/", 1)[-1]: r for r in lines}


def camera_exif(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[MAKE], exif[ARTIST] = "Epson", "Family archive"
    exif[COPYRIGHT], exif[ORIENTATION] = "CC BY 4.0", orientation
    exif.get_ifd(EXIF_IFD)[DATE_TAKEN] = "1952:06:01 10:00:00"
    return exif


def dpi_of(path) -> tuple[float, float] | None:
    with Image.open(path) as im:
        dpi = im.info.get("dpi")
    return None if dpi is None else tuple(round(float(v), 1) for v in dpi)


@pytest.fixture(scope="module")
def hopper() -> Image.Image:
    return Image.open(HOPPER).convert("RGB")


@pytest.fixture(scope="module")
def archive(tmp_path_factory, hopper) -> dict:
    """One `ented restore` run over a folder of scans, each in another format with a stated
    resolution, two of them CMYK prints, one without a face; then a JPEG → PNG run with
    --no-mark."""
    src = tmp_path_factory.mktemp("scans")
    # The JPEG is stored lying on its side, as a phone or scanner may, with the EXIF to turn it.
    hopper.transpose(Image.Transpose.ROTATE_90).save(
        src / "scan.jpg", dpi=(300, 300), exif=camera_exif(6), comment="Box 12, print 3"
    )
    hopper.save(src / "scan.png", dpi=(150, 150))
    hopper.save(src / "scan.tif", dpi=(400, 400), compression="tiff_lzw")
    deep = np.asarray(hopper, np.uint16) * 257
    with open(src / "scan16.png", "wb") as fh:  # pypng: Pillow cannot write 16-bit colour
        png.Writer(
            512,
            600,
            greyscale=False,
            bitdepth=16,
            x_pixels_per_unit=23622,
            y_pixels_per_unit=23622,
            unit_is_meter=True,
        ).write(fh, deep.reshape(600, -1))  # 23622 px/m = 600 dpi
    tifffile.imwrite(src / "scan16.tif", deep, photometric="rgb", resolution=(1200, 1200))
    for name in ("print_a.jpg", "print_b.jpg"):
        hopper.convert("CMYK").save(src / name, dpi=(200, 200), quality=95)
    hopper.crop((0, 520, 240, 600)).save(src / "edge.jpg", dpi=(300, 300))  # no face in it
    out = tmp_path_factory.mktemp("restored")
    # --no-guard: these scans are sharp, so the guard would leave them as they were; what is
    # tested here is what a restored file keeps.
    run = ented("restore", src, "-o", out, "--json", "--no-guard")
    assert run.exit_code == 0, run.stderr
    converted = tmp_path_factory.mktemp("converted")
    plain = ented(
        "restore", src / "scan.jpg", "--ext", "png", "--no-mark", "--no-guard", "-o", converted
    )
    assert plain.exit_code == 0, plain.stderr
    return {"src": src, "out": out, "run": run, "converted": converted / "scan.png"}


@pytest.mark.slow
def test_every_format_keeps_the_input_resolution(archive):
    out = archive["out"]
    assert dpi_of(out / "scan.jpg") == (300, 300)
    assert dpi_of(out / "scan.png") == (150, 150)
    assert dpi_of(out / "scan.tif") == (400, 400)
    assert dpi_of(out / "scan16.png") == (600, 600)
    assert dpi_of(out / "scan16.tif") == (1200, 1200)
    assert dpi_of(out / "print_a.jpg") == (200, 200)
    assert (
        read_image(out / "scan16.png").bit_depth == read_image(out / "scan16.tif").bit_depth == 16
    )
    statuses = {name: r["status"] for name, r in reports(archive["run"]).items()}
    assert statuses.pop("edge.jpg") == "no_face" and set(statuses.values()) == {"restored"}


@pytest.mark.slow
def test_jpeg_written_as_png_keeps_its_resolution(archive):
    assert dpi_of(archive["converted"]) == (300, 300)


@pytest.mark.slow
def test_outputs_say_ented_wrote_them_unless_no_mark(archive):
    out = archive["out"]
    for name in ("scan.jpg", "scan.tif", "scan16.tif", "print_a.jpg"):
        with Image.open(out / name) as im:
            assert im.getexif().get(SOFTWARE) == MARK, name
    for name in ("scan.png", "scan16.png"):
        with Image.open(out / name) as im:
            assert im.text.get("Software") == MARK, name
    with Image.open(archive["converted"]) as im:  # --no-mark
        assert "Software" not in im.text and SOFTWARE not in im.getexif()
        assert im.getexif().get(ARTIST) == "Family archive"  # the rest of the EXIF is there


@pytest.mark.slow
def test_other_exif_tags_and_the_comment_are_kept_and_the_photo_stays_upright(archive):
    with Image.open(archive["out"] / "scan.jpg") as im:
        exif = im.getexif()
        assert im.size == (512, 600)  # stored on its side, written upright
        assert ORIENTATION not in exif  # so no viewer turns it a second time
        assert (exif[MAKE], exif[ARTIST], exif[COPYRIGHT]) == (
            "Epson",
            "Family archive",
            "CC BY 4.0",
        )
        assert exif.get_ifd(EXIF_IFD)[DATE_TAKEN] == "1952:06:01 10:00:00"
        assert im.info["comment"] == b"Box 12, print 3"
    with Image.open(archive["converted"]) as im:
        assert im.text["Comment"] == "Box 12, print 3" and ORIENTATION not in im.getexif()


@pytest.mark.slow
def test_cmyk_prints_are_said_once_per_run_and_named_in_each_json_line(archive):
    run = archive["run"]
    said = [line for line in run.stderr.splitlines() if "CMYK" in line]
    assert len(said) == 1 and "print_a.jpg" in said[0], run.stderr
    lines = reports(run)
    for name in ("print_a.jpg", "print_b.jpg"):
        assert any("CMYK colours converted to RGB" in w for w in lines[name]["warnings"])
        with Image.open(archive["out"] / name) as im:
            assert im.mode == "RGB"
    assert "warnings" not in lines["scan.jpg"]


@pytest.mark.slow
def test_an_unchanged_copy_stays_byte_identical_and_unmarked(archive):
    copy = (archive["out"] / "edge.jpg").read_bytes()
    assert copy == (archive["src"] / "edge.jpg").read_bytes()


# --- reading and writing, without the network ---------------------------------------------------


def test_a_quarter_turn_swaps_the_resolution_with_the_axes(tmp_path, hopper):
    hopper.save(tmp_path / "side.jpg", dpi=(300, 200), exif=camera_exif(6))
    img = read_image(tmp_path / "side.jpg")
    assert img.size == (600, 512) and img.dpi == (200, 300)


def test_unstated_resolution_stays_unstated(tmp_path, hopper):
    # Pillow itself reports 72 dpi for a JPEG whose EXIF has no resolution, 1 for a bare TIFF.
    hopper.save(tmp_path / "a.jpg", exif=camera_exif())
    hopper.save(tmp_path / "b.tif")
    hopper.save(tmp_path / "c.png")
    for name in ("a.jpg", "b.tif", "c.png"):
        img = read_image(tmp_path / name)
        assert img.dpi is None, name
        with Image.open(io.BytesIO(encode_image(img, ".jpg"))) as out:
            assert "dpi" not in out.info or out.info["dpi"] == (72, 72)  # Pillow's own default
            assert out.info.get("jfif_unit") == 0, name  # no unit written: no size claimed


def test_upscale_keeps_the_print_size_in_the_header_and_the_exif(tmp_path, hopper):
    exif = camera_exif()
    exif[X_RESOLUTION] = exif[0x011B] = 300
    exif.get_ifd(EXIF_IFD)[PIXEL_X] = 512
    hopper.save(tmp_path / "scan.jpg", dpi=(300, 300), exif=exif)
    twice = resize_like_upscale(read_image(tmp_path / "scan.jpg"), 2.0)
    with Image.open(io.BytesIO(encode_image(twice, ".jpg", software=MARK))) as im:
        assert im.info["dpi"] == (600, 600) and im.size == (1024, 1200)
        assert float(im.getexif()[X_RESOLUTION]) == 600
        assert im.getexif().get_ifd(EXIF_IFD)[PIXEL_X] == 1024


def test_tiff_tags_travel_to_other_formats_and_back(tmp_path, hopper):
    tags = {ARTIST: "Family archive", COPYRIGHT: "CC BY 4.0", 0x010E: "Grace, 1952"}
    hopper.save(tmp_path / "scan.tif", tiffinfo=tags, dpi=(600, 600))
    img = read_image(tmp_path / "scan.tif")
    for ext in (".jpg", ".png", ".tif"):
        with Image.open(io.BytesIO(encode_image(img, ext, software=MARK))) as im:
            exif = im.getexif()
            assert {t: exif.get(t) for t in tags} == tags, ext
            assert exif.get(SOFTWARE) == MARK
            assert ext == ".tif" or 0x0111 not in exif  # the TIFF's strip offsets stay behind
