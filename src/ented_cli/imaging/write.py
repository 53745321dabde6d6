"""Write images the way photographers expect.

Writing (`encode_image` + `write_atomic`):
- The ICC profile is written wherever the format can hold it (JPEG, PNG, WebP, TIFF), and only when
  its colour space matches the pixels (an RGB profile is never attached to a gray image).
- EXIF (minus orientation) is written to JPEG, PNG and WebP, with its resolution and pixel-size
  tags (where it has them) set to the output's. TIFF gets the descriptive tags of the EXIF (see
  read.DESCRIPTIVE_TIFF_TAGS) as its own tags, not its EXIF directory. BMP gets none.
- Resolution (dpi) is written to JPEG (JFIF), PNG (pHYs), TIFF and BMP when the input stated one.
- Text: PNG text chunks are written to PNG; the comment (JPEG's, or a PNG "Comment") to JPEG.
- `software` (e.g. "ented 0.1.0") marks the file as written by that program: the EXIF Software
  tag in JPEG and WebP (an EXIF block is made for it if there is none), the Software tag in TIFF,
  a "Software" text chunk in PNG (and the EXIF tag when the PNG has EXIF).
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
import struct
import zlib

import cv2
import numpy as np
import png
import tifffile
from PIL import Image, PngImagePlugin

from ented_cli import __version__
from ented_cli.imaging.pixels import LoadedImage, max_value
from ented_cli.imaging.read import (
    DESCRIPTIVE_TIFF_TAGS,
    EXIF_IFD,
    METADATA_ERRORS,
    RESOLUTION_UNIT,
    X_RESOLUTION,
    Y_RESOLUTION,
)
from ented_cli.paths import normalise_ext

# What `ented restore` writes in the Software tag of the files it encodes (unless --no-mark).
ENTED_SOFTWARE = f"ented {__version__}"
SOFTWARE_TAG = 0x0131
PIXEL_X_DIMENSION, PIXEL_Y_DIMENSION = 0xA002, 0xA003  # in the EXIF directory

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


def encode_image(
    img: LoadedImage, ext: str, quality: int = 95, software: str | None = None
) -> bytes:
    """Encode `img` in the format named by `ext` (one of paths.IMAGE_EXTENSIONS, any case).

    quality applies to JPEG (1-95 useful; 4:4:4 chroma at >= 90 so skin detail survives) and WebP
    (100 = lossless). `software` (e.g. ENTED_SOFTWARE) marks the file as written by it; None
    leaves the Software tags as the input had them. See the module docstring for what each
    format keeps.
    """
    ext = normalise_ext(ext)
    pixels, alpha, gray = img.pixels, img.alpha, img.is_gray
    icc = _icc_for(img.icc_profile, gray)
    text = {**img.text, "Software": software} if software else img.text
    if ext == ".png" and pixels.dtype == np.uint16:
        exif = _output_exif(img, software, create=False)
        return _encode_png16(pixels, alpha, icc, exif, img.dpi, _png_text_chunks(text))
    too_big = pixels.nbytes + (0 if alpha is None else alpha.nbytes) > BIGTIFF_ABOVE_BYTES
    if ext in (".tif", ".tiff") and (pixels.dtype == np.uint16 or too_big):
        return _encode_tiff_with_tifffile(pixels, alpha, icc, img.dpi, _tiff_tags(img, software))

    if ext in (".jpg", ".jpeg", ".bmp") and alpha is not None:
        pixels, alpha = _composite_on_white(pixels, alpha), None
    rgb = _to_8bit(pixels) if gray else _to_8bit(pixels)[..., ::-1]
    alpha = None if alpha is None else _to_8bit(alpha)
    pil = Image.fromarray(np.ascontiguousarray(_with_alpha(rgb, alpha)))  # L, LA, RGB or RGBA
    out = io.BytesIO()
    dpi = {"dpi": img.dpi} if img.dpi else {}
    if ext in (".jpg", ".jpeg"):
        exif = _output_exif(img, software, create=True)
        # EXIF and the comment must each fit one JPEG segment (64 KiB): dropped otherwise.
        exif = exif if exif and len(exif) <= 65533 else None
        comment = text.get("Comment", "").encode()
        subsampling = 0 if quality >= 90 else 2
        kwargs = {"quality": int(quality), "optimize": True, "subsampling": subsampling}
        if 0 < len(comment) <= 65533:
            kwargs["comment"] = comment
        if img.dpi and all(0.5 <= v < 65535.5 for v in img.dpi):  # JFIF holds whole numbers
            kwargs["dpi"] = img.dpi
        pil.save(out, "JPEG", **kwargs, **_metadata(icc, exif))
    elif ext == ".png":
        exif = _output_exif(img, software, create=False)
        info = PngImagePlugin.PngInfo()
        for kind, data in _png_text_chunks(text):
            info.add(kind, data)
        pil.save(out, "PNG", compress_level=6, pnginfo=info, **dpi, **_metadata(icc, exif))
    elif ext == ".webp":
        if pil.mode in ("L", "LA"):  # WebP stores RGB(A) only
            pil = pil.convert("RGBA" if pil.mode == "LA" else "RGB")
        lossless = quality >= 100
        kwargs = {"quality": min(int(quality), 100), "lossless": lossless, "exact": lossless}
        exif = _output_exif(img, software, create=True)
        pil.save(out, "WEBP", **kwargs, **_metadata(_icc_for(img.icc_profile, False), exif))
    elif ext in (".tif", ".tiff"):
        tags = _tiff_tags(img, software)
        pil.save(out, "TIFF", compression="tiff_lzw", tiffinfo=tags, **dpi, **_metadata(icc, None))
    else:  # .bmp: its header holds the resolution, nothing else
        pil.save(out, "BMP", **dpi)
    return out.getvalue()


def _output_exif(img: LoadedImage, software: str | None, create: bool) -> bytes | None:
    """img's EXIF made true of the output: Software set to `software` (when given), and the
    resolution and pixel-size tags it has set to the output's (--upscale and orientation change
    them). `create`: make a block for the mark alone when the input had no EXIF."""
    if not img.exif and not (create and software):
        return None
    exif = Image.Exif()
    try:
        if img.exif:
            exif.load(img.exif)
        if software:
            exif[SOFTWARE_TAG] = software
        if img.dpi and X_RESOLUTION in exif:
            exif[X_RESOLUTION], exif[Y_RESOLUTION] = img.dpi
            exif[RESOLUTION_UNIT] = 2  # inches
        if EXIF_IFD in exif:  # get_ifd would add an empty directory otherwise
            sizes = exif.get_ifd(EXIF_IFD)
            if PIXEL_X_DIMENSION in sizes or PIXEL_Y_DIMENSION in sizes:
                sizes[PIXEL_X_DIMENSION], sizes[PIXEL_Y_DIMENSION] = img.size
        return exif.tobytes()
    except METADATA_ERRORS:  # a block Pillow cannot rewrite is carried as it came
        return img.exif


def _tiff_tags(img: LoadedImage, software: str | None) -> dict[int, str]:
    """The descriptive tags of img's EXIF (who, what, when), for TIFF's own tag directory."""
    tags = {}
    if img.exif:
        exif = Image.Exif()
        try:
            exif.load(img.exif)
        except METADATA_ERRORS:
            pass
        tags = {t: exif[t] for t in DESCRIPTIVE_TIFF_TAGS if isinstance(exif.get(t), str)}
    if software:
        tags[SOFTWARE_TAG] = software
    return tags


def _png_text_chunks(text: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """PNG text chunks: tEXt where Latin-1 can hold the text, else iTXt (UTF-8), as PNG asks.
    Keywords PNG does not allow (empty, longer than 79, not Latin-1) are left out."""
    chunks = []
    for key, value in text.items():
        try:
            keyword = key.encode("latin-1")
        except UnicodeEncodeError:
            continue
        if not 0 < len(keyword) < 80 or b"\0" in keyword:
            continue
        try:
            chunks.append((b"tEXt", keyword + b"\0" + value.encode("latin-1")))
        except UnicodeEncodeError:
            # keyword, then: no compression, method 0, no language tag, no translated keyword
            chunks.append((b"iTXt", keyword + b"\0\0\0\0\0" + value.encode("utf-8")))
    return chunks


def _encode_png16(
    pixels: np.ndarray,
    alpha: np.ndarray | None,
    icc: bytes | None,
    exif: bytes | None,
    dpi: tuple[float, float] | None,
    text: list[tuple[bytes, bytes]],
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
    if not icc and not exif and not dpi and not text:
        return encoded
    chunks = list(png.Reader(bytes=encoded).chunks())
    metadata = [(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc))] if icc else []
    if exif:  # PNG's eXIf chunk holds the bare TIFF-style block
        metadata.append((b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    if dpi:  # pixels per metre, unit 1 (the metre)
        per_metre = (round(v / 0.0254) for v in dpi)
        metadata.append((b"pHYs", struct.pack(">IIB", *per_metre, 1)))
    metadata += text
    out = io.BytesIO()
    png.write_chunks(out, chunks[:1] + metadata + chunks[1:])  # after IHDR, before IDAT
    return out.getvalue()


def _encode_tiff_with_tifffile(
    pixels: np.ndarray,
    alpha: np.ndarray | None,
    icc: bytes | None,
    dpi: tuple[float, float] | None,
    tags: dict[int, str],
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
        resolution=dpi or (72, 72),  # TIFF readers expect one; 72 is the customary "unknown"
        resolutionunit="inch",
        metadata=None,  # no tifffile JSON description
        software=False,  # nor its own name: the Software tag is in `tags` when marked
        extratags=[
            (tag, "s", 0, value.encode("utf-8", "replace"), True) for tag, value in tags.items()
        ],
    )
    return out.getvalue()
