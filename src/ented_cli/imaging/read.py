"""Read images the way photographers expect.

Reading (`read_image`):
- EXIF orientation is applied to the pixels, and the Orientation tag is removed from the EXIF kept
  for writing, so a phone photo comes out upright and is not rotated a second time by viewers.
- Colour stays colour, grayscale stays grayscale (HxW), alpha is kept apart (`LoadedImage.alpha`).
- 16-bit PNG/TIFF stay 16-bit (uint16). Pillow truncates 16-bit colour to 8 bits, so those pixels
  are decoded with OpenCV instead; Pillow still provides the metadata.
- Palette images become BGR (or gray when the palette is gray), 1-bit becomes 8-bit gray, CMYK is
  converted to RGB through its ICC profile when it has one (the CMYK profile is then dropped, and
  `LoadedImage.from_cmyk` says so, so callers can tell the user).
- Resolution (dpi) comes from JPEG's JFIF header (else its EXIF), PNG's pHYs chunk or the TIFF
  tags; it is turned with the pixels. PNG text chunks and the JPEG comment are kept as text.
- TIFF keeps no EXIF block: its descriptive tags (description, make, model, date, artist,
  copyright, ...) and its EXIF/GPS sub-directories become one, so they travel like a JPEG's.
- Animated or multi-page files: the first frame is used (`LoadedImage.frames` says how many there
  were, so callers can warn). XMP and IPTC are not carried over.
- Pictures above `max_pixels` (default 100 MP) are refused from the header, before decoding; the
  file itself is read only when it is a regular file (no FIFOs, devices or folders) of a size an
  image within the limit can have.
"""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import struct
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ented_cli.errors import InputError
from ented_cli.imaging.pixels import LoadedImage
from ented_cli.paths import DEFAULT_MAX_PIXELS

ORIENTATION_TAG = 0x0112
X_RESOLUTION, Y_RESOLUTION, RESOLUTION_UNIT = 0x011A, 0x011B, 0x0128
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
# TIFF tags that say who made the picture, what and when (not how it is stored): kept as EXIF.
# ImageDescription, Make, Model, Software, DateTime, Artist, HostComputer, Copyright.
DESCRIPTIVE_TIFF_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x013C, 0x8298)

# The --json warning for a CMYK input written as RGB (the CLI prints it once per run).
CMYK_NOTE = "CMYK colours converted to RGB; the output is an RGB image"

# What a malformed EXIF block or ICC profile can raise inside Pillow.
METADATA_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, SyntaxError, struct.error)

# Pillow format names that are the same thing for a user (MPO = a phone JPEG with a preview frame).
_FORMAT_ALIASES = {"mpo": "jpeg"}

# Pillow's own bomb check (warn at 89 MP, fail at 179 MP, one process-wide setting) is replaced
# by `max_pixels` (default paths.DEFAULT_MAX_PIXELS), checked at the same point: after the header,
# before decoding, but per call, so --max-pixels can raise or lower it.
Image.MAX_IMAGE_PIXELS = None


def _display(source: str | Path) -> str:
    return "stdin" if str(source) == "-" else str(source)


def _read_error(source: str | Path, reason: str, fix: str) -> InputError:
    return InputError(f"{_display(source)}: cannot read image ({reason}); {fix}")


def _corrupt(source: str | Path, exc: BaseException) -> InputError:
    reason = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever Pillow says
    return _read_error(
        source, f"file is truncated or corrupt: {reason}", "re-export or re-download it"
    )


def _open_error(source: str | Path, exc: OSError) -> InputError:
    if isinstance(exc, FileNotFoundError):
        if os.path.islink(source):
            return _read_error(source, "broken symbolic link", "point the link at an existing file")
        return _read_error(source, "no such file", "check the path")
    if isinstance(exc, PermissionError):
        return _read_error(source, "permission denied", "check the file's permissions")
    if exc.errno == errno.ELOOP:
        return _read_error(source, "symbolic link loop", "fix or remove the link")
    return _read_error(source, exc.strerror or str(exc), "check the file")


def _read_bytes(source: str | Path, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file. Pipes, devices and folders are refused without reading
    (a FIFO named photo.jpg would otherwise block the batch forever)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(os.fspath(source), flags)
    except OSError as exc:
        raise _open_error(source, exc) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _read_error(source, "it is a folder", "pass the image files inside it")
        if not stat.S_ISREG(st.st_mode):
            raise _read_error(
                source, "not a regular file (a pipe, device or socket)", "pass an image file"
            )
        if max_bytes is not None and st.st_size > max_bytes:
            raise _read_error(
                source,
                f"file is {st.st_size / 2**20:.0f} MiB, larger than any image within the pixel "
                "limit",
                "raise --max-pixels (or ENTED_MAX_PIXELS) or downscale it first",
            )
        with os.fdopen(fd, "rb") as fh:
            fd = -1  # closed by the file object from here on
            return fh.read()
    except OSError as exc:  # EIO from a failing disk, a file vanishing on a network share, ...
        raise _read_error(source, exc.strerror or str(exc), "check the file or the disk") from None
    finally:
        if fd >= 0:
            os.close(fd)


def read_image(
    source: str | Path, data: bytes | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """Decode an image file (or `data`, e.g. read from stdin; `source` is then only its name).

    Images above `max_pixels` (None or 0: no limit) are refused from their header, before a
    single pixel is decoded, so a small file that declares a huge picture costs nothing.
    Raises InputError naming the file for missing, empty, truncated, corrupt, non-image,
    too large or unsupported inputs.
    """
    if data is None:
        # Bytes per pixel of an uncompressed 16-bit RGBA file, plus room for metadata.
        max_bytes = max_pixels * 8 + 64 * 2**20 if max_pixels else None
        data = _read_bytes(source, max_bytes)
    if not data:
        raise _read_error(source, "file is empty", "re-export or re-download it")

    try:
        im = Image.open(io.BytesIO(data))  # reads the header only
        fmt = (im.format or "unknown").lower()
    except UnidentifiedImageError:
        raise _read_error(
            source, "not an image, or a format ented cannot read", "convert it to PNG or JPEG"
        ) from None
    except Exception as exc:
        raise _corrupt(source, exc) from None
    w, h = im.size
    if max_pixels and w * h > max_pixels:
        raise InputError(
            f"{_display(source)}: image is {w}x{h} ({w * h / 1e6:.0f} MP), above the limit of "
            f"{max_pixels / 1e6:g} MP; raise --max-pixels (or ENTED_MAX_PIXELS) if there is "
            "memory for it, or downscale it first"
        )
    frames = int(getattr(im, "n_frames", 1) or 1)
    try:
        deep_rawmode = _rawmode_if_16bit_colour(im)  # before load(), which drops the tile
        im.load()
    except MemoryError:
        raise _read_error(
            source,
            f"not enough memory to decode {w}x{h} pixels",
            "lower --max-pixels so such files are refused up front, or downscale it",
        ) from None
    except Exception as exc:
        raise _corrupt(source, exc) from None

    icc = im.info.get("icc_profile") or None
    orientation, exif = _split_orientation(im)
    dpi, text, from_cmyk = _resolution(im, orientation), _text(im), im.mode == "CMYK"
    if deep_rawmode:
        gray = deep_rawmode.startswith("LA")
        pixels, alpha = _decode_16bit_with_opencv(source, data, gray)
    else:
        pixels, alpha, icc = _pil_to_arrays(source, im, icc)

    turn = _ORIENTATIONS.get(orientation, lambda arr: arr)
    return LoadedImage(
        pixels=np.ascontiguousarray(turn(pixels)),
        alpha=None if alpha is None else np.ascontiguousarray(turn(alpha)),
        icc_profile=icc,
        exif=exif,
        format=_FORMAT_ALIASES.get(fmt, fmt),
        source=str(source),
        frames=frames,
        dpi=dpi,
        text=text,
        from_cmyk=from_cmyk,
    )


def _split_orientation(im: Image.Image) -> tuple[int, bytes | None]:
    """Orientation (1..8) and the EXIF block without it (None when nothing else is left)."""
    try:
        orientation = int(im.getexif().get(ORIENTATION_TAG, 1))
    except METADATA_ERRORS:  # a broken EXIF block must not make the photo unreadable
        orientation = 1
    try:
        exif = _exif_of(im)
        if exif is None:
            return orientation, None
        exif.pop(ORIENTATION_TAG, None)
        return orientation, exif.tobytes() if len(exif) else None
    except METADATA_ERRORS:  # unparseable EXIF: drop it rather than copy garbage into outputs
        return orientation, None


def _exif_of(im: Image.Image) -> Image.Exif | None:
    raw = im.info.get("exif")
    if raw:
        exif = Image.Exif()
        exif.load(raw)
        return exif
    if im.format != "TIFF":
        return None
    # TIFF keeps its tags in the file structure, next to the layout tags (strips, bit depth):
    # only the descriptive ones and the EXIF/GPS directories describe the picture.
    tags, exif = im.getexif(), Image.Exif()
    for tag in DESCRIPTIVE_TIFF_TAGS:
        if tag in tags:
            exif[tag] = tags[tag]
    for ifd in (EXIF_IFD, GPS_IFD):
        if tags.get_ifd(ifd):  # asked only when there: get_ifd adds an empty directory
            exif.get_ifd(ifd).update(tags.get_ifd(ifd))
    return exif


def _resolution(im: Image.Image, orientation: int) -> tuple[float, float] | None:
    """The dots per inch the file states (x, y of the upright picture), or None."""
    if im.format in ("JPEG", "MPO") and im.info.get("jfif_unit") in (1, 2):
        dpi = im.info.get("dpi")  # JFIF density, per inch or per centimetre
    elif im.format in ("JPEG", "MPO", "TIFF", "WEBP"):
        # Pillow says 72 for a JPEG whose EXIF states nothing, and 1 for a TIFF without
        # resolution tags: read the tags ourselves.
        dpi = _tag_resolution(im)
    else:
        dpi = im.info.get("dpi")  # PNG pHYs in metres (not the aspect-only kind), BMP
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not (math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0):
        return None
    return (y, x) if orientation in (5, 6, 7, 8) else (x, y)  # a quarter turn swaps the axes


def _tag_resolution(im: Image.Image) -> tuple[float, float] | None:
    """XResolution/YResolution of the EXIF (or TIFF) tags, in dots per inch."""
    try:
        tags = im.getexif()
        x, y = tags.get(X_RESOLUTION), tags.get(Y_RESOLUTION, tags.get(X_RESOLUTION))
        unit = tags.get(RESOLUTION_UNIT, 2)  # inches unless stated
    except METADATA_ERRORS:
        return None
    if x is None or unit not in (2, 3):  # 1: an aspect ratio, no size
        return None
    per_inch = 2.54 if unit == 3 else 1.0
    return float(x) * per_inch, float(y) * per_inch


# Text chunks that are metadata blocks in disguise (XMP; ImageMagick's hex copies of EXIF, IPTC,
# XMP): they repeat the orientation the pixels were turned by, so they are not carried.
_HIDDEN_METADATA = ("XML:com.adobe.xmp", "Raw profile type")


def _text(im: Image.Image) -> dict[str, str]:
    """PNG text chunks (tEXt, zTXt, iTXt) by keyword, and the JPEG comment as "Comment"."""
    try:
        chunks = getattr(im, "text", {}).items()
        text = {str(k): str(v) for k, v in chunks if not str(k).startswith(_HIDDEN_METADATA)}
    except METADATA_ERRORS:  # a corrupt text chunk must not make the photo unreadable
        text = {}
    comment = im.info.get("comment") if im.format in ("JPEG", "MPO") else None
    if comment:
        text["Comment"] = (
            comment.decode("utf-8", "replace") if isinstance(comment, bytes) else comment
        )
    return text


# Stored pixels -> displayed pixels for each EXIF orientation (1 and unknown values: as stored).
_ORIENTATIONS = {
    2: lambda arr: arr[:, ::-1],
    3: lambda arr: arr[::-1, ::-1],
    4: lambda arr: arr[::-1],
    5: lambda arr: np.swapaxes(arr, 0, 1),  # transpose
    6: lambda arr: np.rot90(arr, k=-1),  # a quarter turn clockwise
    7: lambda arr: np.rot90(np.swapaxes(arr, 0, 1), k=2),  # transverse
    8: lambda arr: np.rot90(arr, k=1),  # a quarter turn counter-clockwise
}


def _rawmode_if_16bit_colour(im: Image.Image) -> str | None:
    # Pillow has no 16-bit colour modes: it opens such files as 8-bit "RGB"/"RGBA" (16-bit
    # gray+alpha PNG too) and keeps the 16-bit layout only in the tile's raw mode ("LA;16B").
    if im.mode not in ("RGB", "RGBA", "LA") or not im.tile:
        return None
    args = im.tile[0][3]
    rawmode = args[0] if isinstance(args, tuple) and args else args
    return rawmode if isinstance(rawmode, str) and ";16" in rawmode else None


def _decode_16bit_with_opencv(
    source: str | Path, data: bytes, gray: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # ignores EXIF
    except cv2.error as exc:
        raise _corrupt(source, exc) from None
    if arr is None or arr.dtype != np.uint16:
        raise _read_error(source, "cannot decode this 16-bit image", "convert it to 8-bit PNG")
    if arr.ndim == 2:
        return arr, None
    alpha = arr[..., 3] if arr.shape[2] == 4 else None
    return (arr[..., 0] if gray else arr[..., :3]), alpha  # OpenCV expands gray+alpha to BGRA


# Pillow modes that only need Pillow's own conversion to become L, LA, RGB or RGBA.
_CONVERSIONS = {"1": "L", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "YCbCr": "RGB", "HSV": "RGB"}


def _pil_to_arrays(
    source: str | Path, im: Image.Image, icc: bytes | None
) -> tuple[np.ndarray, np.ndarray | None, bytes | None]:
    """(pixels BGR or gray, alpha, icc) from any Pillow mode we support."""
    if im.mode in ("P", "PA"):
        has_alpha = im.mode == "PA" or "transparency" in im.info
        palette = im.getpalette() or []
        if palette[0::3] == palette[1::3] == palette[2::3]:  # a gray palette stays gray
            im = im.convert("LA" if has_alpha else "L")
        else:
            im = im.convert("RGBA" if has_alpha else "RGB")
    elif im.mode == "CMYK":
        im, icc = _cmyk_to_rgb(im, icc), None  # the CMYK profile does not describe RGB pixels
    elif im.mode == "LAB":
        raise _read_error(source, "unsupported pixel format LAB", "convert it to RGB")
    elif im.mode in _CONVERSIONS:
        im = im.convert(_CONVERSIONS[im.mode])

    if im.mode.startswith("I"):  # 16-bit gray (I;16...), or 32-bit gray that must fit 16 bits
        arr = np.asarray(im)
        if im.mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            raise _read_error(
                source, "32-bit integer pixels out of the 16-bit range", "convert it to 16-bit"
            )
        return arr.astype(np.uint16), None, icc
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        raise _read_error(
            source, f"unsupported pixel format {im.mode}", "convert it to 8- or 16-bit RGB or gray"
        )
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        return arr, None, icc
    alpha = arr[..., -1] if im.mode.endswith("A") else None
    return (arr[..., 0] if im.mode == "LA" else arr[..., 2::-1]), alpha, icc


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    try:
        from PIL import ImageCms
    except ImportError:  # Pillow built without littlecms
        ImageCms = None
    if not icc or ImageCms is None:
        return im.convert("RGB")
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        return ImageCms.profileToProfile(im, src, srgb, outputMode="RGB")
    except (ImageCms.PyCMSError, *METADATA_ERRORS):  # a broken or non-CMYK profile
        return im.convert("RGB")  # the naive conversion is close enough
