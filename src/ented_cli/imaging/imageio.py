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
from PIL import Image, UnidentifiedImageError

from ented_cli.errors import InputError
from ented_cli.imaging.atomic import write_atomic  # noqa: F401  (part of this module's API)
from ented_cli.paths import DEFAULT_MAX_PIXELS, normalise_ext

ORIENTATION_TAG = 0x0112

# What a malformed EXIF block or ICC profile can raise inside Pillow.
_METADATA_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, SyntaxError, struct.error)

# Pillow format names that are the same thing for a user (MPO = a phone JPEG with a preview frame).
_FORMAT_ALIASES = {"mpo": "jpeg"}

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


def _read_bytes(source: str | Path, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file. Pipes, devices and folders are refused without reading
    (a FIFO named photo.jpg would otherwise block the batch forever)."""
    path = os.fspath(source)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if os.path.islink(path):
            raise _read_error(
                source, "broken symbolic link", "point the link at an existing file"
            ) from None
        raise _read_error(source, "no such file", "check the path") from None
    except PermissionError:
        raise _read_error(source, "permission denied", "check the file's permissions") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _read_error(source, "symbolic link loop", "fix or remove the link") from None
        raise _read_error(source, exc.strerror or str(exc), "check the file") from None
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


def _check_pixel_limit(source: str | Path, size: tuple[int, int], max_pixels: int | None) -> None:
    w, h = size
    if max_pixels and w * h > max_pixels:
        raise InputError(
            f"{_display(source)}: image is {w}x{h} ({w * h / 1e6:.0f} MP), above the limit of "
            f"{max_pixels / 1e6:g} MP; raise --max-pixels (or ENTED_MAX_PIXELS) if there is "
            "memory for it, or downscale it first"
        )


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
    _check_pixel_limit(source, im.size, max_pixels)
    frames = int(getattr(im, "n_frames", 1) or 1)
    try:
        rawmode = _rawmode(im)  # the tile (and with it the stored bit depth) is gone after load
        im.load()
    except MemoryError:
        raise _read_error(
            source,
            f"not enough memory to decode {im.size[0]}x{im.size[1]} pixels",
            "lower --max-pixels so such files are refused up front, or downscale it",
        ) from None
    except Exception as exc:
        raise _corrupt(source, exc) from None

    fmt = _FORMAT_ALIASES.get(fmt, fmt)
    icc = im.info.get("icc_profile") or None
    orientation, exif = _split_orientation(im)

    if _is_16bit_colour(im.mode, rawmode):
        pixels, alpha = _decode_16bit_with_opencv(source, data, gray=rawmode.startswith("LA"))
    else:
        pixels, alpha, icc = _pil_to_arrays(source, im, icc)

    pixels = _apply_orientation(pixels, orientation)
    if alpha is not None:
        alpha = _apply_orientation(alpha, orientation)
    return LoadedImage(
        pixels=np.ascontiguousarray(pixels),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        icc_profile=icc,
        exif=exif,
        format=fmt,
        source=str(source),
        frames=frames,
    )


def _split_orientation(im: Image.Image) -> tuple[int, bytes | None]:
    """Orientation (1..8) and the EXIF block without it (None when nothing else is left)."""
    try:
        orientation = int(im.getexif().get(ORIENTATION_TAG, 1))
    except _METADATA_ERRORS:  # a broken EXIF block must not make the photo unreadable
        orientation = 1
    if orientation not in range(1, 9):
        orientation = 1

    raw = im.info.get("exif")
    if not raw:  # TIFF keeps its tags in the file structure, not in an EXIF block: not carried
        return orientation, None
    exif = Image.Exif()
    try:
        exif.load(raw)
        exif.pop(ORIENTATION_TAG, None)
        if not len(exif):
            return orientation, None
        return orientation, exif.tobytes()
    except _METADATA_ERRORS:  # unparseable EXIF: drop it rather than copy garbage into outputs
        return orientation, None


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels into displayed pixels for EXIF orientation 1..8."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:  # transpose
        return np.swapaxes(arr, 0, 1)
    if orientation == 6:  # rotate 90 degrees clockwise
        return np.rot90(arr, k=-1)
    if orientation == 7:  # transverse
        return np.rot90(np.swapaxes(arr, 0, 1), k=2)
    if orientation == 8:  # rotate 90 degrees counter-clockwise
        return np.rot90(arr, k=1)
    return arr


def _rawmode(im: Image.Image) -> str:
    if not im.tile:
        return ""
    args = im.tile[0].args if hasattr(im.tile[0], "args") else im.tile[0][3]
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def _is_16bit_colour(mode: str, rawmode: str) -> bool:
    # Pillow has no 16-bit colour modes: it opens such files as 8-bit "RGB"/"RGBA" (16-bit
    # gray+alpha PNG too) and keeps the 16-bit layout only in the tile's raw mode.
    return mode in ("RGB", "RGBA", "LA") and ";16" in rawmode


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
    if gray:  # OpenCV expands gray+alpha to BGRA; gray stays gray for us
        return arr[..., 0], alpha
    return arr[..., :3], alpha


def _palette_is_gray(im: Image.Image) -> bool:
    palette = im.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette), 3))


def _pil_to_arrays(
    source: str | Path, im: Image.Image, icc: bytes | None
) -> tuple[np.ndarray, np.ndarray | None, bytes | None]:
    """(pixels BGR or gray, alpha, icc) from any Pillow mode we support."""
    mode = im.mode
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        if _palette_is_gray(im):
            im = im.convert("LA" if has_alpha else "L")
        else:
            im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode in ("RGBX", "YCbCr", "HSV"):
        im = im.convert("RGB")
    elif mode == "CMYK":
        im = _cmyk_to_rgb(im, icc)
        icc = None  # the CMYK profile does not describe the RGB pixels
    elif mode == "LAB":
        raise _read_error(source, "unsupported pixel format LAB", "convert it to RGB")

    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im).astype(np.uint16), None, icc
    if mode == "I":  # 32-bit integer gray (some TIFFs, old Pillow 16-bit PNG): fits 16 bits
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise _read_error(
                source, "32-bit integer pixels out of the 16-bit range", "convert it to 16-bit"
            )
        return arr.astype(np.uint16), None, icc
    if mode == "L":
        return np.asarray(im, dtype=np.uint8), None, icc
    if mode == "LA":
        arr = np.asarray(im, dtype=np.uint8)
        return arr[..., 0], arr[..., 1], icc
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)[..., ::-1], None, icc
    if mode == "RGBA":
        arr = np.asarray(im, dtype=np.uint8)
        return arr[..., 2::-1], arr[..., 3], icc
    raise _read_error(
        source, f"unsupported pixel format {mode}", "convert it to 8- or 16-bit RGB or gray"
    )


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
        return replace(img, pixels=img.pixels.copy(), alpha=_copy(img.alpha))
    enlarge = new_w > w or new_h > h
    interp = cv2.INTER_LANCZOS4 if enlarge else cv2.INTER_AREA
    pixels = cv2.resize(img.pixels, (new_w, new_h), interpolation=interp)
    alpha = None
    if img.alpha is not None:
        alpha_interp = cv2.INTER_CUBIC if enlarge else cv2.INTER_AREA
        alpha = cv2.resize(img.alpha, (new_w, new_h), interpolation=alpha_interp)
    return replace(img, pixels=pixels, alpha=alpha)


def _copy(arr: np.ndarray | None) -> np.ndarray | None:
    return None if arr is None else arr.copy()


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def _icc_colour_space(icc: bytes) -> bytes:
    return icc[16:20] if len(icc) >= 20 else b""


def _icc_for(icc: bytes | None, gray: bool) -> bytes | None:
    """The profile only when it describes pixels of this kind (GRAY vs RGB)."""
    if not icc:
        return None
    space = _icc_colour_space(icc)
    if gray and space == b"GRAY":
        return icc
    if not gray and space == b"RGB ":
        return icc
    return None


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


def _to_pil_8bit(pixels: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    pixels = _to_8bit(pixels)
    if pixels.ndim == 2:
        if alpha is None:
            return Image.fromarray(pixels, "L")
        return Image.fromarray(np.dstack([pixels, _to_8bit(alpha)]), "LA")
    rgb = np.ascontiguousarray(pixels[..., ::-1])
    if alpha is None:
        return Image.fromarray(rgb, "RGB")
    return Image.fromarray(np.dstack([rgb, _to_8bit(alpha)]), "RGBA")


def encode_image(img: LoadedImage, ext: str, quality: int = 95) -> bytes:
    """Encode `img` in the format named by `ext` (one of paths.IMAGE_EXTENSIONS, any case).

    quality applies to JPEG (1-95 useful; 4:4:4 chroma at >= 90 so skin detail survives) and WebP
    (100 = lossless). See the module docstring for what each format keeps.
    """
    ext = normalise_ext(ext)
    pixels, alpha = img.pixels, img.alpha
    gray = img.is_gray
    out = io.BytesIO()

    if ext in (".png", ".tif", ".tiff") and pixels.dtype == np.uint16:
        alpha16 = None if alpha is None else alpha.astype(np.uint16)
        icc = _icc_for(img.icc_profile, gray)
        if ext == ".png":
            return _encode_png16(pixels, alpha16, icc, img.exif)
        if gray and alpha16 is not None:
            # Neither Pillow nor OpenCV reads 16-bit gray+alpha TIFF back: store it as RGBA.
            pixels, icc = np.repeat(pixels[..., None], 3, axis=2), None
        return _encode_tiff16(pixels, alpha16, icc)

    if ext in (".jpg", ".jpeg", ".bmp") and alpha is not None:
        pixels, alpha = _composite_on_white(pixels, alpha), None

    if ext in (".jpg", ".jpeg"):
        pil = _to_pil_8bit(pixels, None)
        kwargs: dict = {"quality": int(quality), "optimize": True}
        kwargs["subsampling"] = 0 if quality >= 90 else 2
        # EXIF must fit one JPEG segment (64 KiB); Pillow raises otherwise: drop it instead.
        exif = img.exif if img.exif and len(img.exif) <= 65533 else None
        _add_metadata(kwargs, _icc_for(img.icc_profile, gray), exif)
        pil.save(out, "JPEG", **kwargs)
    elif ext == ".png":
        pil = _to_pil_8bit(pixels, alpha)
        kwargs = {"compress_level": 6}
        _add_metadata(kwargs, _icc_for(img.icc_profile, gray), img.exif)
        pil.save(out, "PNG", **kwargs)
    elif ext == ".webp":
        pil = _to_pil_8bit(pixels, alpha)
        if pil.mode in ("L", "LA"):  # WebP stores RGB(A) only
            pil = pil.convert("RGBA" if pil.mode == "LA" else "RGB")
        lossless = quality >= 100
        kwargs = {"quality": min(int(quality), 100), "lossless": lossless, "exact": lossless}
        _add_metadata(kwargs, _icc_for(img.icc_profile, gray=False), img.exif)
        pil.save(out, "WEBP", **kwargs)
    elif ext in (".tif", ".tiff"):
        pil = _to_pil_8bit(pixels, alpha)
        kwargs = {"compression": "tiff_lzw"}
        _add_metadata(kwargs, _icc_for(img.icc_profile, gray), None)
        pil.save(out, "TIFF", **kwargs)
    else:  # .bmp: no metadata
        _to_pil_8bit(pixels, None).save(out, "BMP")
    return out.getvalue()


def _add_metadata(kwargs: dict, icc: bytes | None, exif: bytes | None) -> None:
    if icc:
        kwargs["icc_profile"] = icc
    if exif:
        kwargs["exif"] = exif


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _interleave(pixels: np.ndarray, alpha: np.ndarray | None, rgb: bool) -> np.ndarray:
    """HxWxC array in file order: gray(+alpha) or RGB(+alpha)."""
    planes = [pixels[..., None]] if pixels.ndim == 2 else [pixels[..., ::-1] if rgb else pixels]
    if alpha is not None:
        planes.append(alpha[..., None])
    return np.ascontiguousarray(np.concatenate(planes, axis=2))


def _encode_png16(
    pixels: np.ndarray, alpha: np.ndarray | None, icc: bytes | None, exif: bytes | None
) -> bytes:
    # Pillow cannot hold 16-bit colour and OpenCV drops metadata (and gray+alpha) on older
    # releases, so 16-bit PNGs are assembled here: it is a few chunks around one zlib stream.
    arr = _interleave(pixels, alpha, rgb=True)
    h, w, c = arr.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = arr.astype(">u2").view(np.uint8).reshape(h, w * c * 2)
    bpp = c * 2
    filtered = rows.copy()  # PNG "Sub" filter: each byte minus the same byte one pixel left
    filtered[:, bpp:] -= rows[:, :-bpp]
    raw = np.concatenate([np.ones((h, 1), np.uint8), filtered], axis=1).tobytes()

    parts = [
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)),
    ]
    if icc:
        parts.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if exif:
        parts.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    parts.append(_png_chunk(b"IDAT", zlib.compress(raw, 6)))
    parts.append(_png_chunk(b"IEND", b""))
    return b"".join(parts)


def _encode_tiff16(pixels: np.ndarray, alpha: np.ndarray | None, icc: bytes | None) -> bytes:
    """Baseline little-endian TIFF, one Deflate strip with horizontal predictor, ICC tag."""
    arr = _interleave(pixels, alpha, rgb=True)
    h, w, c = arr.shape
    diff = arr.copy()  # Predictor 2: each sample minus the same sample one pixel left (mod 2^16)
    diff[:, 1:] -= arr[:, :-1]
    strip = zlib.compress(diff.astype("<u2").tobytes(), 6)

    SHORT, LONG, RATIONAL, UNDEFINED = 3, 4, 5, 7
    entries: list[tuple[int, int, int, bytes]] = []  # tag, type, count, value bytes

    def add(tag: int, typ: int, values: list[int] | bytes) -> None:
        if typ == UNDEFINED:
            entries.append((tag, typ, len(values), bytes(values)))
        elif typ == RATIONAL:
            entries.append((tag, typ, len(values) // 2, struct.pack(f"<{len(values)}I", *values)))
        else:
            fmt = "H" if typ == SHORT else "I"
            entries.append((tag, typ, len(values), struct.pack(f"<{len(values)}{fmt}", *values)))

    add(256, LONG, [w])
    add(257, LONG, [h])
    add(258, SHORT, [16] * c)
    add(259, SHORT, [8])  # Adobe Deflate
    add(262, SHORT, [1 if c <= 2 else 2])  # BlackIsZero or RGB
    add(273, LONG, [0])  # strip offset, patched below
    add(277, SHORT, [c])
    add(278, LONG, [h])
    add(279, LONG, [len(strip)])
    add(282, RATIONAL, [72, 1])
    add(283, RATIONAL, [72, 1])
    add(284, SHORT, [1])
    add(296, SHORT, [2])
    add(317, SHORT, [2])  # horizontal differencing
    if c in (2, 4):
        add(338, SHORT, [2])  # unassociated alpha
    add(339, SHORT, [1] * c)  # unsigned integers
    if icc:
        add(34675, UNDEFINED, icc)

    ifd_size = 2 + 12 * len(entries) + 4
    extra_at = 8 + ifd_size
    extra = bytearray()
    # Layout: header, IFD, external tag values, strip; offsets are known once sizes are.
    external_size = sum(len(v) + (len(v) & 1) for _, _, _, v in entries if len(v) > 4)
    strip_at = extra_at + external_size
    ifd = bytearray(struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        if tag == 273:
            value = struct.pack("<I", strip_at)
        if len(value) <= 4:
            ifd += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\x00")
        else:
            ifd += struct.pack("<HHII", tag, typ, count, extra_at + len(extra))
            extra += value + (b"\x00" if len(value) & 1 else b"")
    ifd += struct.pack("<I", 0)  # no next IFD
    return b"II*\x00" + struct.pack("<I", 8) + bytes(ifd) + bytes(extra) + strip


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
