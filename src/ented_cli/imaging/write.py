"""Write images the way photographers expect.

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

import io
import zlib

import cv2
import numpy as np
import png
import tifffile
from PIL import Image

from ented_cli.imaging.pixels import LoadedImage, max_value
from ented_cli.paths import normalise_ext

# Classic TIFF has 32-bit offsets: more pixel bytes than this are written as BigTIFF. The margin
# (tifffile's own) leaves room for the tags and for deflate's slight growth on noise.
BIGTIFF_ABOVE_BYTES = 2**32 - 2**25


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
    top = max_value(pixels.dtype)
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
