"""Image reading/writing: orientation, ICC/EXIF, alpha, 16-bit, gray, errors, atomic writes."""

import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from ented_cli.errors import EntedError, InputError
from ented_cli.imaging import write as imageio_write
from ented_cli.imaging.atomic import write_atomic
from ented_cli.imaging.pixels import (
    LoadedImage,
    from_float_bgr,
    looks_gray,
    resize_like_upscale,
    to_float_bgr,
)
from ented_cli.imaging.read import read_image
from ented_cli.imaging.write import encode_image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ORIENTATION = 0x0112
MAKE = 0x010F


@pytest.fixture(scope="module")
def hopper_rgb() -> Image.Image:
    return Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB")  # 512 wide, 600 high


@pytest.fixture(scope="module")
def astronaut_rgb() -> Image.Image:
    return Image.open(EXAMPLES / "astronaut.png").convert("RGB")


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _save(im: Image.Image, path: Path, fmt: str, **kwargs) -> Path:
    im.save(path, fmt, **kwargs)
    return path


def _exif(orientation: int, make: str = "ented-test") -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[MAKE] = make
    return exif.tobytes()


# --- orientation --------------------------------------------------------------------------------


def test_jpeg_with_orientation_6_is_read_upright(tmp_path, hopper_rgb):
    path = _save(hopper_rgb, tmp_path / "phone.jpg", "JPEG", exif=_exif(6), quality=92)
    img = read_image(path)
    assert img.size == (600, 512)  # stored 512x600, displayed rotated a quarter turn
    stored = np.asarray(Image.open(path).convert("RGB"))[..., ::-1]
    np.testing.assert_array_equal(img.pixels, np.rot90(stored, k=-1))  # clockwise


def test_orientation_tag_is_gone_from_every_written_format(tmp_path, hopper_rgb):
    path = _save(hopper_rgb, tmp_path / "phone.jpg", "JPEG", exif=_exif(6), quality=92)
    img = read_image(path)
    for ext in (".jpg", ".png", ".webp"):
        written = Image.open(io.BytesIO(encode_image(img, ext)))
        exif = written.getexif()
        assert written.size == (600, 512), ext
        assert ORIENTATION not in exif, ext
        assert exif.get(MAKE) == "ented-test", ext  # the rest of the EXIF is kept


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_exif_transpose(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    rgb = Image.fromarray(rng.integers(0, 256, (5, 8, 3), dtype=np.uint8))
    path = _save(rgb, tmp_path / "o.png", "PNG", exif=_exif(orientation))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))[..., ::-1]
    np.testing.assert_array_equal(read_image(path).pixels, expected)


# --- ICC and EXIF ------------------------------------------------------------------------------


def test_icc_profile_of_the_bundled_astronaut_is_read():
    img = read_image(EXAMPLES / "astronaut.png")
    assert img.icc_profile is not None and img.icc_profile[16:20] == b"RGB "


@pytest.mark.parametrize("src_fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("out_ext", [".jpg", ".png", ".webp", ".tif"])
def test_icc_profile_round_trips(tmp_path, astronaut_rgb, srgb_icc, src_fmt, out_ext):
    path = _save(astronaut_rgb, tmp_path / f"in.{src_fmt.lower()}", src_fmt, icc_profile=srgb_icc)
    img = read_image(path)
    assert img.icc_profile == srgb_icc
    written = Image.open(io.BytesIO(encode_image(img, out_ext)))
    assert written.info.get("icc_profile") == srgb_icc


def test_rgb_icc_profile_is_not_attached_to_gray_output(tmp_path, astronaut_rgb, srgb_icc):
    img = read_image(_save(astronaut_rgb, tmp_path / "c.png", "PNG", icc_profile=srgb_icc))
    gray = from_float_bgr(
        to_float_bgr(img),
        like=LoadedImage(img.pixels[..., 1], None, img.icc_profile, None, "png", "g"),
    )
    written = Image.open(io.BytesIO(encode_image(gray, ".png")))
    assert written.mode == "L" and "icc_profile" not in written.info


# --- alpha -------------------------------------------------------------------------------------


def _rgba(rgb: Image.Image) -> Image.Image:
    w, h = rgb.size
    alpha = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
    return Image.fromarray(np.dstack([np.asarray(rgb), alpha]), "RGBA")


def test_rgba_png_keeps_its_alpha(tmp_path, astronaut_rgb):
    rgba = _rgba(astronaut_rgb)
    img = read_image(_save(rgba, tmp_path / "cut.png", "PNG"))
    assert img.alpha is not None and img.pixels.shape[2] == 3
    for ext in (".png", ".tif"):
        back = np.asarray(Image.open(io.BytesIO(encode_image(img, ext))))
        np.testing.assert_array_equal(back, np.asarray(rgba), err_msg=ext)


def test_lossless_webp_keeps_alpha_and_pixels_exactly(tmp_path, astronaut_rgb):
    rgba = _rgba(astronaut_rgb)
    img = read_image(_save(rgba, tmp_path / "cut.png", "PNG"))
    back = read_image("x.webp", encode_image(img, ".webp", quality=100))
    np.testing.assert_array_equal(back.alpha, img.alpha)
    np.testing.assert_array_equal(back.pixels, img.pixels)


def test_jpeg_output_composites_transparency_onto_white(tmp_path, astronaut_rgb):
    img = read_image(_save(_rgba(astronaut_rgb), tmp_path / "cut.png", "PNG"))
    back = np.asarray(Image.open(io.BytesIO(encode_image(img, ".jpg"))).convert("RGB"))
    assert back[:, 0].mean() > 250  # alpha 0 column -> white
    opaque = np.abs(back[:, -1].astype(int) - np.asarray(astronaut_rgb)[:, -1]).mean()
    assert opaque < 4  # alpha 255 column -> the photo (JPEG error only)


# --- 16-bit ------------------------------------------------------------------------------------


def _sixteen_bit_bgr(rgb: Image.Image) -> np.ndarray:
    # Real 16-bit content: the photo in the high byte, a ramp in the low byte.
    bgr = np.asarray(rgb)[..., ::-1].astype(np.uint16) * 257
    low = (np.arange(bgr.shape[1], dtype=np.uint16) % 251)[None, :, None]
    return bgr - np.minimum(bgr, low)


def test_16bit_colour_png_round_trips_as_16bit(tmp_path, astronaut_rgb):
    bgr16 = _sixteen_bit_bgr(astronaut_rgb)
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), bgr16)  # an independent 16-bit writer
    img = read_image(path)
    assert img.bit_depth == 16 and img.pixels.dtype == np.uint16
    np.testing.assert_array_equal(img.pixels, bgr16)
    for ext in (".png", ".tif"):
        out = tmp_path / f"out{ext}"
        out.write_bytes(encode_image(img, ext))
        back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
        assert back.dtype == np.uint16, ext
        np.testing.assert_array_equal(back, bgr16, err_msg=ext)


def test_16bit_png_with_alpha_and_icc_round_trips(tmp_path, astronaut_rgb, srgb_icc):
    bgr16 = _sixteen_bit_bgr(astronaut_rgb)
    alpha16 = np.full(bgr16.shape[:2], 40000, np.uint16)
    img = LoadedImage(bgr16, alpha16, srgb_icc, None, "png", "deep.png")
    back = read_image("deep.png", encode_image(img, ".png"))
    np.testing.assert_array_equal(back.pixels, bgr16)
    np.testing.assert_array_equal(back.alpha, alpha16)
    assert back.icc_profile == srgb_icc


def test_16bit_gray_png_stays_16bit_gray(tmp_path, astronaut_rgb):
    gray16 = np.asarray(astronaut_rgb.convert("L")).astype(np.uint16) * 257 + 3
    path = _save(Image.fromarray(gray16), tmp_path / "g16.png", "PNG")
    img = read_image(path)
    assert img.is_gray and img.bit_depth == 16
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(img.pixels, back)
    written = cv2.imdecode(np.frombuffer(encode_image(img, ".png"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert written.ndim == 2 and written.dtype == np.uint16
    np.testing.assert_array_equal(written, gray16)


def _png_colour_type(data: bytes) -> int:
    assert data[12:16] == b"IHDR"
    return data[25]  # 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA


def test_16bit_gray_alpha_png_keeps_gray_alpha_icc_and_exif(astronaut_rgb, srgb_icc):
    gray16 = np.asarray(astronaut_rgb.convert("L")).astype(np.uint16) * 257 + 5
    alpha16 = np.tile(
        np.linspace(0, 65535, gray16.shape[1]).astype(np.uint16), (gray16.shape[0], 1)
    )
    gray_icc = srgb_icc[:16] + b"GRAY" + srgb_icc[20:]  # only the header's colour space matters
    exif = _exif(1, make="deep-gray")
    img = LoadedImage(gray16, alpha16, gray_icc, exif, "png", "ga16.png")
    data = encode_image(img, ".png")
    assert _png_colour_type(data) == 4 and data[24] == 16  # gray+alpha, 16 bits per sample
    back = read_image("ga16.png", data)
    assert back.is_gray and back.bit_depth == 16
    np.testing.assert_array_equal(back.pixels, gray16)
    np.testing.assert_array_equal(back.alpha, alpha16)
    assert back.icc_profile == gray_icc
    assert Image.open(io.BytesIO(data)).getexif()[MAKE] == "deep-gray"


def test_16bit_png_is_read_upright_and_written_with_exif_minus_orientation(astronaut_rgb):
    bgr16 = _sixteen_bit_bgr(astronaut_rgb)
    stored = np.ascontiguousarray(np.rot90(bgr16))  # as a camera held sideways stores it
    phone = encode_image(LoadedImage(stored, None, None, _exif(6), "png", "p.png"), ".png")
    upright = read_image("p.png", phone)
    assert upright.bit_depth == 16
    np.testing.assert_array_equal(upright.pixels, bgr16)
    written = Image.open(io.BytesIO(encode_image(upright, ".png"))).getexif()
    assert ORIENTATION not in written and written[MAKE] == "ented-test"


def test_16bit_tiff_round_trips_depth_alpha_and_icc(astronaut_rgb, srgb_icc):
    bgr16 = _sixteen_bit_bgr(astronaut_rgb)
    alpha16 = np.tile(np.linspace(0, 65535, bgr16.shape[1]).astype(np.uint16), (bgr16.shape[0], 1))
    for alpha in (None, alpha16):
        img = LoadedImage(bgr16, alpha, srgb_icc, None, "tiff", "deep.tif")
        data = encode_image(img, ".tif")
        assert data[:4] == b"II*\x00"  # classic TIFF at this size
        back = read_image("deep.tif", data)
        assert back.bit_depth == 16 and back.icc_profile == srgb_icc
        np.testing.assert_array_equal(back.pixels, bgr16)
        if alpha is None:
            assert back.alpha is None
        else:
            np.testing.assert_array_equal(back.alpha, alpha16)


def test_16bit_gray_tiff_stays_gray_and_gray_alpha_becomes_rgba(astronaut_rgb):
    gray16 = np.asarray(astronaut_rgb.convert("L")).astype(np.uint16) * 257 + 7
    back = read_image(
        "g.tif", encode_image(LoadedImage(gray16, None, None, None, "tiff", "g"), ".tif")
    )
    assert back.is_gray and back.bit_depth == 16
    np.testing.assert_array_equal(back.pixels, gray16)
    alpha16 = np.full(gray16.shape, 30000, np.uint16)
    img = LoadedImage(gray16, alpha16, None, None, "tiff", "ga")
    back = read_image("ga.tif", encode_image(img, ".tif"))
    assert back.pixels.shape == (*gray16.shape, 3) and back.bit_depth == 16  # stored as RGBA
    np.testing.assert_array_equal(back.pixels, np.repeat(gray16[..., None], 3, axis=2))
    np.testing.assert_array_equal(back.alpha, alpha16)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_above_the_classic_limit_is_written_as_bigtiff(
    monkeypatch, astronaut_rgb, dtype, srgb_icc
):
    # Lowering the threshold stands in for a > 4 GiB picture: the same code path, on a small photo.
    bgr16 = _sixteen_bit_bgr(astronaut_rgb)
    pixels = bgr16 if dtype == np.uint16 else (bgr16 >> 8).astype(np.uint8)
    alpha = np.full(pixels.shape[:2], 200, dtype)
    img = LoadedImage(pixels, alpha, srgb_icc, None, "tiff", "big.tif")
    assert encode_image(img, ".tif")[:4] == b"II*\x00"
    monkeypatch.setattr(imageio_write, "BIGTIFF_ABOVE_BYTES", pixels.nbytes)
    data = encode_image(img, ".tif")
    assert data[:4] == b"II+\x00"  # BigTIFF: 64-bit offsets
    back = read_image("big.tif", data)
    assert back.pixels.dtype == dtype and back.icc_profile == srgb_icc
    np.testing.assert_array_equal(back.pixels, pixels)
    np.testing.assert_array_equal(back.alpha, alpha)


def test_odd_icc_profile_in_16bit_png_is_kept_as_is_and_quietly(capfd):
    odd = bytes(16) + b"RGB " + b"not a real profile" * 3  # libpng itself would refuse this
    pixels = np.full((6, 9, 3), 40000, np.uint16)
    data = encode_image(LoadedImage(pixels, None, odd, None, "png", "odd.png"), ".png")
    assert Image.open(io.BytesIO(data)).info["icc_profile"] == odd
    assert capfd.readouterr().err == ""


def test_16bit_input_written_as_jpeg_becomes_8bit(astronaut_rgb):
    img = LoadedImage(_sixteen_bit_bgr(astronaut_rgb), None, None, None, "png", "deep.png")
    back = np.asarray(Image.open(io.BytesIO(encode_image(img, ".jpg", quality=95))))
    assert back.dtype == np.uint8
    assert np.abs(back.astype(int) - np.asarray(astronaut_rgb)).mean() < 3


# --- gray, palette, CMYK -----------------------------------------------------------------------


def test_gray_jpeg_stays_gray_in_every_format(tmp_path, hopper_rgb):
    img = read_image(_save(hopper_rgb.convert("L"), tmp_path / "bw.jpg", "JPEG"))
    assert img.is_gray and img.pixels.ndim == 2
    for ext in (".jpg", ".png", ".tif", ".bmp"):
        back = read_image(f"bw{ext}", encode_image(img, ext))
        assert back.is_gray, ext


def test_gray_float_result_is_written_back_as_gray(tmp_path, hopper_rgb):
    img = read_image(_save(hopper_rgb.convert("L"), tmp_path / "bw.png", "PNG"))
    restored = to_float_bgr(img)
    restored[..., 2] += 0.1  # a colour cast from the model must not turn gray into colour
    out = from_float_bgr(restored, like=img)
    assert out.is_gray and out.pixels.dtype == np.uint8


def test_cmyk_jpeg_is_read_as_bgr(tmp_path, hopper_rgb):
    img = read_image(_save(hopper_rgb.convert("CMYK"), tmp_path / "print.jpg", "JPEG", quality=95))
    assert img.pixels.shape == (600, 512, 3)
    assert np.abs(img.pixels[..., ::-1].astype(int) - np.asarray(hopper_rgb)).mean() < 4


def test_palette_png_with_transparency_gets_alpha(tmp_path, hopper_rgb):
    pal = hopper_rgb.convert("P")
    img = read_image(_save(pal, tmp_path / "pal.png", "PNG", transparency=0))
    assert img.pixels.shape == (600, 512, 3) and img.alpha is not None
    assert (img.alpha == 0).any() and (img.alpha == 255).any()


# --- errors ------------------------------------------------------------------------------------


def _broken_files(tmp_path: Path) -> dict[str, Path]:
    jpeg = (EXAMPLES / "grace_hopper.jpg").read_bytes()
    png = (EXAMPLES / "astronaut.png").read_bytes()
    files = {
        "empty.jpg": b"",
        "notes.jpg": b"these are not pixels\n" * 20,
        "half.jpg": jpeg[: len(jpeg) // 2],
        "half.png": png[: len(png) // 3],
        "header-only.png": png[:100],
        "garbled.jpg": jpeg[:2] + bytes(4000) + jpeg[4002:],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


@pytest.mark.parametrize(
    "name", ["empty.jpg", "notes.jpg", "half.jpg", "half.png", "header-only.png", "garbled.jpg"]
)
def test_broken_files_raise_input_error_naming_the_file(tmp_path, name):
    path = _broken_files(tmp_path)[name]
    with pytest.raises(InputError) as err:
        read_image(path)
    message = str(err.value)
    assert message.startswith(f"{path}: cannot read image (")
    assert "\n" not in message and ";" in message  # one line, with a fix


def test_missing_file_and_folder_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(InputError, match="it is a folder"):
        read_image(tmp_path)


# --- stdin bytes -------------------------------------------------------------------------------


def test_bytes_from_stdin_decode_like_the_file():
    path = EXAMPLES / "grace_hopper.jpg"
    from_file = read_image(path)
    from_stdin = read_image("-", path.read_bytes())
    assert from_stdin.source == "-" and from_stdin.format == "jpeg"
    np.testing.assert_array_equal(from_stdin.pixels, from_file.pixels)


def test_bad_stdin_bytes_are_reported_as_stdin():
    with pytest.raises(InputError, match=r"^stdin: cannot read image"):
        read_image("-", b"GIF89a? not really")


# --- float conversion and resizing -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_float_round_trip_is_exact_for_8bit(tmp_path, astronaut_rgb, mode):
    img = read_image(_save(astronaut_rgb.convert(mode), tmp_path / "a.png", "PNG"))
    arr = to_float_bgr(img)
    assert arr.dtype == np.float32 and arr.shape == (*img.pixels.shape[:2], 3)
    assert 0.0 <= arr.min() and arr.max() <= 1.0
    np.testing.assert_array_equal(from_float_bgr(arr, like=img).pixels, img.pixels)


def test_float_round_trip_is_exact_for_16bit(astronaut_rgb):
    img = LoadedImage(_sixteen_bit_bgr(astronaut_rgb), None, None, None, "png", "d.png")
    np.testing.assert_array_equal(from_float_bgr(to_float_bgr(img), like=img).pixels, img.pixels)


def test_float_values_out_of_range_are_clipped(astronaut_rgb):
    img = read_image("a.png", (EXAMPLES / "astronaut.png").read_bytes())
    arr = to_float_bgr(img)
    arr[:10] = 1.7
    arr[-10:] = -0.3
    out = from_float_bgr(arr, like=img).pixels
    assert (out[:10] == 255).all() and (out[-10:] == 0).all()


def test_upscale_resizes_pixels_and_alpha_and_keeps_bit_depth(astronaut_rgb):
    bgr16 = _sixteen_bit_bgr(astronaut_rgb)
    img = LoadedImage(bgr16, np.full(bgr16.shape[:2], 65535, np.uint16), None, None, "png", "d")
    up = resize_like_upscale(img, 2)
    assert up.size == (1024, 704)
    assert up.pixels.dtype == np.uint16 and up.alpha.shape == (704, 1024)
    assert (up.alpha == 65535).all()
    assert abs(float(up.pixels.mean()) - float(bgr16.mean())) < 100


# --- atomic writes -----------------------------------------------------------------------------


def test_write_atomic_writes_the_bytes_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    write_atomic(target, b"new image bytes")
    assert target.read_bytes() == b"new image bytes"
    assert os.listdir(tmp_path) == ["out.png"]


def test_write_atomic_creates_files_with_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "out.jpg", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.jpg").stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, None)  # fails half-way, after the temp file exists
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.png"]


def test_write_atomic_into_a_missing_folder_names_the_path(tmp_path):
    target = tmp_path / "missing" / "out.png"
    with pytest.raises(EntedError) as err:
        write_atomic(target, b"x")
    assert str(target) in str(err.value) and "does not exist" in str(err.value)
    assert not (tmp_path / "missing").exists()


def test_write_atomic_below_a_file_names_the_path(tmp_path):
    (tmp_path / "a_file").write_bytes(b"")
    with pytest.raises(EntedError, match="is not a folder"):
        write_atomic(tmp_path / "a_file" / "out.png", b"x")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_write_atomic_into_a_read_only_folder_names_the_path(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(EntedError, match="permission denied"):
            write_atomic(folder / "out.png", b"x")
    finally:
        folder.chmod(0o755)
    assert os.listdir(folder) == []


# --- bundled examples --------------------------------------------------------------------------


def test_bundled_examples_are_small_readable_photos():
    sizes = {}
    for name in ("astronaut.png", "astronaut_degraded.jpg", "grace_hopper.jpg"):
        path = EXAMPLES / name
        assert path.stat().st_size < 300_000, name
        img = read_image(path)
        assert not img.is_gray and img.bit_depth == 8, name
        sizes[name] = img.size
    # The demo restores the degraded copy with the clean one as reference: same framing.
    assert sizes["astronaut_degraded.jpg"] == sizes["astronaut.png"] == (512, 352)


def test_black_and_white_photo_saved_as_rgb_looks_gray(tmp_path, hopper_rgb):
    bw_as_rgb = hopper_rgb.convert("L").convert("RGB")
    img = read_image(_save(bw_as_rgb, tmp_path / "scan.jpg", "JPEG", quality=90))
    assert not img.is_gray and looks_gray(img)
    assert not looks_gray(read_image(EXAMPLES / "grace_hopper.jpg"))


def test_real_gray_faces_look_gray_and_colour_faces_do_not(shared_data):
    gray = shared_data / "real-lq" / "gray"
    for name in ("Einstein01.png", "Einstein02.png", "Hepburn01.png", "Hepburn02.png"):
        assert looks_gray(read_image(gray / name)), name
    colour = sorted((shared_data / "real-lq" / "cropped").glob("*.png"))
    assert colour and not any(looks_gray(read_image(p)) for p in colour)


# --- odd inputs: limits, special files, animations (issue 6) -----------------------------------


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG signature and header for a width x height picture, with almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_huge_declared_size_is_refused_from_the_header_naming_the_flag(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(100_000, 100_000))
    with pytest.raises(InputError) as err:
        read_image(bomb)
    message = str(err.value)
    assert message.startswith(f"{bomb}: image is 100000x100000 (10000 MP)")
    assert "--max-pixels" in message and "\n" not in message


def test_pixel_limit_is_per_call_and_none_lifts_it(tmp_path):
    path = EXAMPLES / "grace_hopper.jpg"  # 512 x 600 = 0.31 MP
    with pytest.raises(InputError, match=r"512x600 .*above the limit of 0\.3 MP"):
        read_image(path, max_pixels=300_000)
    assert read_image(path, max_pixels=307_200).size == (512, 600)
    # Pillow's own bomb limit (179 MP) is not in the way when ented's limit is lifted.
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_image("-", _png_declaring(20_000, 10_000), max_pixels=None)


def test_a_file_too_big_for_any_image_within_the_limit_is_not_read(tmp_path):
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as fh:
        fh.truncate(80 * 2**20)  # sparse: no disk used
    with pytest.raises(InputError, match=r"huge\.jpg: cannot read image \(file is 80 MiB"):
        read_image(big, max_pixels=1000)


def test_a_fifo_named_like_a_photo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_image(fifo)  # would block forever if opened for a plain read


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_read_error_from_the_disk_names_the_file(tmp_path):
    # /proc/self/mem fails to read at offset 0 with EIO, like a bad sector, even for root.
    link = tmp_path / "bad_sector.jpg"
    link.symlink_to("/proc/self/mem")
    with pytest.raises(InputError, match=r"bad_sector\.jpg: cannot read image \(Input/output"):
        read_image(link)


def test_broken_and_looping_symlinks_say_so(tmp_path):
    (tmp_path / "dangling.jpg").symlink_to("gone.jpg")
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    with pytest.raises(InputError, match="broken symbolic link"):
        read_image(tmp_path / "dangling.jpg")
    with pytest.raises(InputError, match="symbolic link loop"):
        read_image(tmp_path / "loop.jpg")


def test_animated_gif_gives_its_first_frame_and_the_frame_count(tmp_path, hopper_rgb):
    first = hopper_rgb.resize((64, 75))
    red, blue = Image.new("RGB", first.size, (255, 0, 0)), Image.new("RGB", first.size, (0, 0, 255))
    path = tmp_path / "anim.gif"
    first.save(path, "GIF", save_all=True, append_images=[red, blue], duration=50)
    img = read_image(path)
    assert img.frames == 3 and img.size == (64, 75)
    assert abs(int(img.pixels[..., 2].mean()) - int(np.asarray(first)[..., 0].mean())) < 30


def test_avif_is_read(tmp_path, hopper_rgb):
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    path = _save(hopper_rgb, tmp_path / "photo.avif", "AVIF", quality=80)
    img = read_image(path)
    assert img.format == "avif" and img.size == (512, 600) and img.frames == 1


def test_write_atomic_handles_a_name_at_the_file_system_limit(tmp_path):
    target = tmp_path / ("x" * 251 + ".jpg")  # 255 bytes: a temp name must be shortened
    write_atomic(target, b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
