"""What the page may send: images by content (never by name or type the browser claims), within
the size and pixel limits, and the names they are shown and downloaded under.

A client's file name is only ever text on the page and in a download's name: it is cut to its
last component and to a few safe characters here, and no path is ever built from it.
"""

from __future__ import annotations

import io
import re
import unicodedata

from PIL import Image

from ented_cli.paths import sniff_ext

# Per request: several photos of an album and a few references, not a whole archive.
MAX_PHOTOS = 20
MAX_REFS = 10
FORMATS = "JPEG, PNG, WebP, TIFF or BMP"  # what sniff_ext knows, and so what ented writes back

_UNSAFE = re.compile(r"[^\w .()+-]+")
_MAX_NAME = 80


class UploadError(ValueError):
    """One file the page cannot take; the message names it and says what to do."""


def display_name(client_name: str | None, fallback: str) -> str:
    """A client's file name made harmless: the last component of any path (either slash), no
    control or unusual characters, no leading dots, at most 80 characters."""
    name = unicodedata.normalize("NFC", client_name or "")
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name).strip(" ._")
    if len(name) > _MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:10] if dot else ""
        name = (stem if dot else name)[: _MAX_NAME - len(ext) - 1].rstrip(" ._") + dot + ext
    return name or fallback


def stem_of(name: str) -> str:
    stem, dot, _ = name.rpartition(".")
    return (stem if dot else name) or name


def check_image(name: str, data: bytes, max_pixels: int | None) -> str:
    """The extension of `data` (".jpg", ".png", ...) when it is an image the page takes;
    UploadError otherwise. Only the header is read: decoding is the worker's job."""
    if not data:
        raise UploadError(f"{name}: the file is empty; choose the photo again")
    ext = sniff_ext(data)
    if ext is None:
        raise UploadError(f"{name}: not a photo ented can read; use a {FORMATS} image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Exception:
        raise UploadError(
            f"{name}: the file looks like an image but cannot be read (damaged or cut off); "
            "export or download it again"
        ) from None
    if max_pixels and w * h > max_pixels:
        raise UploadError(
            f"{name}: {w}×{h} pixels ({w * h / 1e6:.0f} MP) is more than the limit of "
            f"{max_pixels / 1e6:g} MP; use a smaller copy, or start ented serve with a higher "
            "--max-pixels"
        )
    return ext


def unique_names(names: list[str]) -> list[str]:
    """The same names with " (2)", " (3)" added to repeats, so none hides another."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        candidate, n = name, 1
        while candidate.lower() in seen:
            n += 1
            candidate = f"{stem} ({n}){dot}{ext}"
        seen[candidate.lower()] = 1
        out.append(candidate)
    return out
