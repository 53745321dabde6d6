"""Read and write images the way photographers expect.

Reading (`read_image`):
- EXIF orientation is applied to the pixels, and the Orientation tag is removed from the EXIF kept
  for writing, so a phone photo comes out upright and is not rotated a second time by viewers.
- Colour stays colour, grayscale stays grayscale (HxW), alpha is kept apart (`LoadedImage.alpha`).
- 16-bit PNG/TIFF stay 16-bit (uint16). Pillow truncates 16-bit colour to 8 bits, so those pixels
  are decoded with OpenCV instead; Pillow still provides the metadata.
- Palette images become BGR (or gray when the palette is gray), 1-bit becomes 8-bit gray, CMYK is
  converted to RGB through its ICC profile when it has one (the CMYK profile is then dropped).
- Animated or multi-page files: the first frame is used (`LoadedImage.frames` says how many there
  were, so callers can warn). XMP and TIFF tags are not carried over.
- Pictures above `max_pixels` (default 100 MP) are refused from the header, before decoding; the
  file itself is read only when it is a regular file (no FIFOs, devices or folders) of a size an
  image within the limit can have.

Writing (`encode_image` + `write_atomic`):
- The ICC profile is written wherever the format can hold it (JPEG, PNG, WebP, TIFF), and only when
  its colour space matches the pixels (an RGB profile is never attached to a gray image).
- EXIF (minus orientation) is written to JPEG, PNG and WebP; TIFF and BMP get none.
- 16-bit is kept for PNG and TIFF; JPEG, WebP and BMP are 8-bit formats, so 16-bit is rounded down.
  (16-bit gray with alpha is written to TIFF as RGBA: few readers handle 2-sample 16-bit TIFF.)
  Pillow cannot write 16-bit colour, so 16-bit PNG is written by OpenCV (pypng for gray+alpha,
  which OpenCV lacks) and TIFF by tifffile, as BigTIFF when the pixels pass 4 GiB.
- JPEG has no alpha (and most readers ignore it in BMP): transparent images are composited onto
  white for both, as most viewers show them.
- WebP has no gray mode: gray is written as RGB. Quality 100 means lossless WebP.
- Writes go to a temporary file in the same folder, are fsynced, then renamed over the target, so
  an interrupted run never leaves a half-written image behind.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import png
import tifffile
from PIL import Image, UnidentifiedImageError

from ented_cli.errors import InputError
from ented_cli.imaging.atomic import write_atomic  # noqa: F401  (part of this module's API)
from ented_cli.paths import DEFAULT_MAX_PIXELS, normalise_ext

ORIENTATION_TAG = 0x0112

# What a malformed EXIF block or ICC profile can raise inside Pillow.
_METADATA_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, SyntaxError, struct.error)

# Pillow format names that are the same thing for a user (MPO = a phone JPEG with a preview frame).
_FORMAT_ALIASES = {"mpo": "jpeg"}

# Classic TIFF has 32-bit offsets: more pixel bytes than this are written as BigTIFF. The margin
# (tifffile's own) leaves room for the tags and for deflate's slight growth on noise.
BIGTIFF_ABOVE_BYTES = 2**32 - 2**25

# Pillow's own bomb check (warn at 89 MP, fail at 179 MP, one process-wide setting) is replaced
# by `max_pixels` (default paths.DEFAULT_MAX_PIXELS), checked at the same point: after the header,
# before decoding, but per call, so --max-pixels can raise or lower it.
Image.MAX_IMAGE_PIXELS = None


@dataclass
class LoadedImage:
    pixels: np.ndarray  # HxWx3 BGR or HxW gray; uint8 or uint16; EXIF orientation applied
    alpha: np.ndarray | None  # HxW, same dtype as pixels
    icc_profile: bytes | None
    exif: bytes | None  # "Exif\0\0"-prefixed block with Orientation removed
    format: str  # lower-case format of the source: "jpeg", "png", "webp", "tiff", "bmp", ...
    source: str  # path as given, or "-" for stdin
    frames: int = (
        1  # frames in the file (animated GIF/WebP, multi-page TIFF); only the first is used
    )

    @property
    def is_gray(self) -> bool:
        return self.pixels.ndim == 2

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow and most CLIs report it."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


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
    )


def _split_orientation(im: Image.Image) -> tuple[int, bytes | None]:
    """Orientation (1..8) and the EXIF block without it (None when nothing else is left)."""
    try:
        orientation = int(im.getexif().get(ORIENTATION_TAG, 1))
    except _METADATA_ERRORS:  # a broken EXIF block must not make the photo unreadable
        orientation = 1
    raw = im.info.get("exif")
    if not raw:  # TIFF keeps its tags in the file structure, not in an EXIF block: not carried
        return orientation, None
    exif = Image.Exif()
    try:
        exif.load(raw)
        exif.pop(ORIENTATION_TAG, None)
        return orientation, exif.tobytes() if len(exif) else None
    except _METADATA_ERRORS:  # unparseable EXIF: drop it rather than copy garbage into outputs
        return orientation, None


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
    except (ImageCms.PyCMSError, *_METADATA_ERRORS):  # a broken or non-CMYK profile
        return im.convert("RGB")  # the naive conversion is close enough


# ---------------------------------------------------------------------------------------------
# Float conversion and resizing
# ---------------------------------------------------------------------------------------------


def looks_gray(img: LoadedImage, tolerance: int = 2) -> bool:
    """True for gray images and for colour files whose channels never differ by more than
    `tolerance` (8-bit units): scanned black-and-white photos are often saved as RGB. The
    pipeline can then write such results back as gray, as GFPGAN and CodeFormer do."""
    if img.is_gray:
        return True
    limit = tolerance * (257 if img.pixels.dtype == np.uint16 else 1)
    # A band of rows at a time: a colour photo stops at its first band, and a 100 MP scan
    # never needs a full-size temporary.
    for top in range(0, img.pixels.shape[0], 256):
        band = img.pixels[top : top + 256].astype(np.int32)
        b, g, r = band[..., 0], band[..., 1], band[..., 2]
        if np.abs(b - g).max() > limit or np.abs(g - r).max() > limit:
            return False
    return True


def _max_value(dtype: np.dtype) -> float:
    return 65535.0 if dtype == np.uint16 else 255.0


def to_float_bgr(img: LoadedImage) -> np.ndarray:
    """float32 HxWx3 BGR in [0, 1]; gray is replicated to three channels; alpha is ignored."""
    arr = img.pixels.astype(np.float32)
    arr /= np.float32(_max_value(img.pixels.dtype))  # in place: 1.2 GB less on a 100 MP frame
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return arr


def _quantise(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    # In place on one float copy: on a 100 MP frame each temporary is 1.2 GB.
    out = np.clip(arr, 0.0, 1.0)
    out *= np.float32(_max_value(dtype))
    np.rint(out, out=out)
    return out.astype(dtype)


def from_float_bgr(arr: np.ndarray, like: LoadedImage) -> LoadedImage:
    """Float BGR in [0, 1] back to `like`'s layout: its bit depth, gray (BT.601 luma) when `like`
    is gray, and its alpha/ICC/EXIF/format. Values are clipped and rounded.

    When `arr` has another size than `like` (the caller resized the float image), like's alpha
    is resized to match.
    """
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR float array, got shape {arr.shape}")
    dtype = like.pixels.dtype
    if like.is_gray:
        b, g, r = arr[..., 0], arr[..., 1], arr[..., 2]
        pixels = _quantise(0.114 * b + 0.587 * g + 0.299 * r, dtype)
    else:
        pixels = _quantise(arr, dtype)

    alpha = like.alpha
    h, w = pixels.shape[:2]
    if alpha is not None and alpha.shape != (h, w):
        alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_CUBIC)
    return replace(like, pixels=pixels, alpha=alpha)


def resize_like_upscale(img: LoadedImage, scale: float) -> LoadedImage:
    """Resize pixels and alpha by `scale` (the --upscale factor) before faces are pasted back.

    Lanczos for enlarging (sharpest of OpenCV's), area averaging for shrinking (no aliasing),
    cubic for alpha (Lanczos rings around hard mask edges). The output size is rounded.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    w, h = img.size
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) == (w, h):
        alpha = None if img.alpha is None else img.alpha.copy()
        return replace(img, pixels=img.pixels.copy(), alpha=alpha)
    enlarge = new_w > w or new_h > h
    interp = cv2.INTER_LANCZOS4 if enlarge else cv2.INTER_AREA
    pixels = cv2.resize(img.pixels, (new_w, new_h), interpolation=interp)
    alpha = None
    if img.alpha is not None:
        alpha_interp = cv2.INTER_CUBIC if enlarge else cv2.INTER_AREA
        alpha = cv2.resize(img.alpha, (new_w, new_h), interpolation=alpha_interp)
    return replace(img, pixels=pixels, alpha=alpha)


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def _icc_for(icc: bytes | None, gray: bool) -> bytes | None:
    """The profile only when its header's colour space (bytes 16-20) fits the pixels."""
    return icc if icc and icc[16:20] == (b"GRAY" if gray else b"RGB ") else None


def _metadata(icc: bytes | None, exif: bytes | None) -> dict:
    """Pillow save() keywords for the metadata that is there."""
    return {k: v for k, v in (("icc_profile", icc), ("exif", exif)) if v}


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    return np.rint(arr.astype(np.float32) / 257.0).astype(np.uint8)


def _composite_on_white(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    top = _max_value(pixels.dtype)
    a = alpha.astype(np.float32) / np.float32(top)
    if pixels.ndim == 3:
        a = a[..., None]
    out = pixels.astype(np.float32) * a + np.float32(top) * (1.0 - a)
    return np.rint(out).astype(pixels.dtype)


def _with_alpha(pixels: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    return pixels if alpha is None else np.dstack([pixels, alpha])


def encode_image(img: LoadedImage, ext: str, quality: int = 95) -> bytes:
    """Encode `img` in the format named by `ext` (one of paths.IMAGE_EXTENSIONS, any case).

    quality applies to JPEG (1-95 useful; 4:4:4 chroma at >= 90 so skin detail survives) and WebP
    (100 = lossless). See the module docstring for what each format keeps.
    """
    ext = normalise_ext(ext)
    pixels, alpha, gray = img.pixels, img.alpha, img.is_gray
    icc = _icc_for(img.icc_profile, gray)
    if ext == ".png" and pixels.dtype == np.uint16:
        return _encode_png16(pixels, alpha, icc, img.exif)
    too_big = pixels.nbytes + (0 if alpha is None else alpha.nbytes) > BIGTIFF_ABOVE_BYTES
    if ext in (".tif", ".tiff") and (pixels.dtype == np.uint16 or too_big):
        return _encode_tiff_with_tifffile(pixels, alpha, icc)

    if ext in (".jpg", ".jpeg", ".bmp") and alpha is not None:
        pixels, alpha = _composite_on_white(pixels, alpha), None
    rgb = _to_8bit(pixels) if gray else _to_8bit(pixels)[..., ::-1]
    alpha = None if alpha is None else _to_8bit(alpha)
    pil = Image.fromarray(np.ascontiguousarray(_with_alpha(rgb, alpha)))  # L, LA, RGB or RGBA
    out = io.BytesIO()
    if ext in (".jpg", ".jpeg"):
        # EXIF must fit one JPEG segment (64 KiB); Pillow raises otherwise: drop it instead.
        exif = img.exif if img.exif and len(img.exif) <= 65533 else None
        subsampling = 0 if quality >= 90 else 2
        kwargs = {"quality": int(quality), "optimize": True, "subsampling": subsampling}
        pil.save(out, "JPEG", **kwargs, **_metadata(icc, exif))
    elif ext == ".png":
        pil.save(out, "PNG", compress_level=6, **_metadata(icc, img.exif))
    elif ext == ".webp":
        if pil.mode in ("L", "LA"):  # WebP stores RGB(A) only
            pil = pil.convert("RGBA" if pil.mode == "LA" else "RGB")
        lossless = quality >= 100
        kwargs = {"quality": min(int(quality), 100), "lossless": lossless, "exact": lossless}
        pil.save(out, "WEBP", **kwargs, **_metadata(_icc_for(img.icc_profile, False), img.exif))
    elif ext in (".tif", ".tiff"):
        pil.save(out, "TIFF", compression="tiff_lzw", **_metadata(icc, None))
    else:  # .bmp: no metadata
        pil.save(out, "BMP")
    return out.getvalue()


def _encode_png16(
    pixels: np.ndarray, alpha: np.ndarray | None, icc: bytes | None, exif: bytes | None
) -> bytes:
    """OpenCV encodes the pixels (pypng gray+alpha, which OpenCV cannot); pypng's chunk API adds
    the metadata. Not OpenCV's metadata API: its libpng refuses odd ICC profiles, which Pillow
    (8 bits) and tifffile keep, and prints the refusal to stderr."""
    if pixels.ndim == 2 and alpha is not None:
        h, w = pixels.shape
        samples = np.dstack([pixels, alpha]).astype(">u2")  # PNG stores samples big-endian
        rows = samples.view(np.uint8).reshape(h, -1)
        plain = io.BytesIO()
        png.Writer(w, h, greyscale=True, alpha=True, bitdepth=16, compression=6).write_packed(
            plain, rows
        )
        encoded = plain.getvalue()
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 6]
        ok, buf = cv2.imencode(".png", _with_alpha(pixels, alpha), params)
        if not ok:
            raise ValueError(f"OpenCV could not encode a {pixels.shape} 16-bit PNG")
        encoded = buf.tobytes()
    if not icc and not exif:
        return encoded
    chunks = list(png.Reader(bytes=encoded).chunks())
    metadata = [(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc))] if icc else []
    if exif:  # PNG's eXIf chunk holds the bare TIFF-style block
        metadata.append((b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    out = io.BytesIO()
    png.write_chunks(out, chunks[:1] + metadata + chunks[1:])  # after IHDR, before IDAT
    return out.getvalue()


def _encode_tiff_with_tifffile(
    pixels: np.ndarray, alpha: np.ndarray | None, icc: bytes | None
) -> bytes:
    """16-bit TIFF (Pillow cannot write 16-bit colour), and TIFF too big for 32-bit offsets."""
    if pixels.ndim == 2 and alpha is not None:
        # Neither Pillow nor OpenCV reads 16-bit gray+alpha TIFF back: store it as RGBA.
        pixels, icc = np.repeat(pixels[..., None], 3, axis=2), None
    colour = pixels.ndim == 3
    arr = _with_alpha(pixels[..., ::-1] if colour else pixels, alpha)  # RGB order in the file
    out = io.BytesIO()
    tifffile.imwrite(
        out,
        arr,
        bigtiff=arr.nbytes > BIGTIFF_ABOVE_BYTES,  # tifffile only decides this when uncompressed
        photometric="rgb" if colour else "minisblack",
        extrasamples=None if alpha is None else ["unassalpha"],
        compression="zlib",
        predictor=True,  # horizontal differencing: smaller files for photos
        iccprofile=icc,
        resolution=(72, 72),
        resolutionunit="inch",
        metadata=None,  # no tifffile JSON description
        software=False,
    )
    return out.getvalue()
