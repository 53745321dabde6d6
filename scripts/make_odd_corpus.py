#!/usr/bin/env python3
"""Build the odd-input corpus: everything a photo archive throws at a restoration tool.

    python scripts/make_odd_corpus.py --out /tmp/odd-corpus           # full: > 1,000 inputs
    python scripts/make_odd_corpus.py --out /tmp/odd-quick --quick    # every kind, ~60 inputs (CI)

Everything is generated (nothing downloaded) from the photos in `examples/`, and, when the
project's data folder is present, from one London Set photo for the 12000x9000 "real photo".
The same seed gives the same files.

Layout of --out:
    inputs/<kind>/...   the inputs, one folder per kind of oddity (issue 6, part 1)
    outputs/            the output folder to restore into; pre-seeded with the obstacles of the
                        "unwritable output" kind (a file where a folder must go, a read-only folder)
    manifest.json       one record per input: path (relative to inputs/), kind, what ented should
                        do ("output", "error" or "any") and what the output must keep (alpha, ICC,
                        EXIF, bit depth, upright size)

Root can read a chmod-000 file and write into a chmod-555 folder, so both of those only fail for
other users. Failures that hold for root too: a symlink to /proc/self/mem (reading it fails with
EIO, as a bad disk sector does), a FIFO named .jpg (never a regular file), and a regular file
standing where an output folder has to be created.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import stat
import struct
import sys
import unicodedata
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
LONDON_RAW = ROOT.parent / "shared" / "data" / "london" / "raw"
BIG_SIZE = (12000, 9000)  # 108 MP: above ented's default --max-pixels (100 MP)
ORIENTATION, MAKE, MODEL = 0x0112, 0x010F, 0x0110

# Stored pixels for EXIF orientation n are the upright picture turned by the inverse of n.
_TO_STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


class Corpus:
    """Writes inputs and remembers what ented should do with each."""

    def __init__(self, out: Path, seed: int, quick: bool):
        self.out, self.quick = out, quick
        self.inputs = out / "inputs"
        self.rng = np.random.default_rng(seed)
        self.records: list[dict] = []
        self.bases = [
            Image.open(EXAMPLES / name).convert("RGB")
            for name in ("astronaut.png", "grace_hopper.jpg", "astronaut_degraded.jpg")
        ]
        self.srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

    def n(self, full: int, quick: int = 1) -> int:
        return quick if self.quick else full

    # -- pictures ------------------------------------------------------------------------------
    def photo(self, width: int | None = None, face: bool = True) -> Image.Image:
        """A face photo: one of the examples, randomly cropped a little, `width` px wide.

        face=False: the face does not matter for this kind; the picture is then made too small
        for a face to be found (always in the quick corpus, 3 times in 4 in the full one), which
        keeps the runs short on a CPU without losing the kind.
        """
        if not face and (self.quick or self.rng.random() < 0.75):
            width = 40
        base = self.bases[int(self.rng.integers(len(self.bases)))]
        w, h = base.size
        left, top = (int(v) for v in self.rng.integers(0, [w // 10, h // 10]))
        right, bottom = (int(v) for v in self.rng.integers([w - w // 10, h - h // 10], [w, h]))
        im = base.crop((left, top, right, bottom))
        width = width or int(self.rng.integers(160, 320))
        return im.resize((width, max(1, round(im.height * width / im.width))), Image.LANCZOS)

    def alpha_for(self, im: Image.Image) -> Image.Image:
        """A soft vignette: opaque face, transparent corners (every alpha value occurs)."""
        w, h = im.size
        y, x = np.mgrid[0:h, 0:w]
        r = np.hypot((x - w / 2) / (w / 2), (y - h / 2) / (h / 2))
        return Image.fromarray(np.clip(255 * (1.4 - r) / 0.6, 0, 255).astype(np.uint8), "L")

    def exif(self, orientation: int | None = None) -> Image.Exif:
        exif = Image.Exif()
        exif[MAKE] = "ented-corpus"
        exif[MODEL] = f"seed-{int(self.rng.integers(1 << 30))}"
        if orientation:
            exif[ORIENTATION] = orientation
        return exif

    # -- files -----------------------------------------------------------------------------------
    def path(self, kind: str, name: str) -> Path:
        path = self.inputs / kind / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, kind: str, name: str, data: bytes | None, expect: str, **keeps) -> Path:
        """Write `data` as inputs/kind/name (None: the caller creates the file) and record it."""
        path = self.path(kind, name)
        if data is not None:
            path.write_bytes(data)
        rel = path.relative_to(self.inputs)
        self.records.append({"path": os.fsdecode(rel), "kind": kind, "expect": expect, **keeps})
        return path

    def save(
        self, kind: str, name: str, im: Image.Image, fmt: str, expect="output", keeps=None, **kwargs
    ) -> Path:
        return self.add(kind, name, encode(im, fmt, **kwargs), expect, **(keeps or {}))


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA; HxWxC uint16 in file order)."""
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, c = arr.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = arr.astype(">u2").reshape(h, w * c).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def to16(im: Image.Image) -> np.ndarray:
    """8-bit pixels spread over 16 bits, with low-byte noise so they are truly 16-bit."""
    arr = np.asarray(im).astype(np.uint16) * 257
    return arr ^ (np.arange(arr.size, dtype=np.uint16).reshape(arr.shape) % 7)


# ---------------------------------------------------------------------------------------------
# The kinds (issue 6, part 1), each a folder under inputs/
# ---------------------------------------------------------------------------------------------


def truncated(c: Corpus) -> None:
    for i in range(c.n(120, 2)):
        for fmt, ext in (("JPEG", "jpg"), ("PNG", "png")):
            data = encode(c.photo(face=False), fmt)
            cut = int(len(data) * float(c.rng.uniform(0.02, 0.97)))
            c.add("truncated", f"half_downloaded_{i:03d}.{ext}", data[:cut], "error")
    c.add("truncated", "jpeg_signature_only.jpg", b"\xff\xd8\xff", "error")
    c.add("truncated", "png_signature_only.png", b"\x89PNG\r\n\x1a\n", "error")


def zero_byte(c: Corpus) -> None:
    for ext in ("jpg", "jpeg", "png", "webp", "tif", "bmp", "gif", "avif")[: c.n(8, 3)]:
        c.add("zero_byte", f"empty.{ext}", b"", "error")


def wrong_extension(c: Corpus) -> None:
    formats = [
        ("PNG", "jpg"),
        ("JPEG", "png"),
        ("WEBP", "jpg"),
        ("TIFF", "png"),
        ("BMP", "jpg"),
        ("GIF", "png"),
        ("PNG", "webp"),
        ("JPEG", "tif"),
    ]
    for i in range(c.n(10, 1)):
        for fmt, ext in formats:
            c.save(
                "wrong_extension",
                f"{fmt.lower()}_named_{ext}_{i:02d}.{ext}",
                c.photo(face=False),
                fmt,
            )


def not_images(c: Corpus) -> None:
    texts = {
        "text": b"This is not a photo.\n",
        "html": b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>\n",
        "json": b'{"error": "rate limited"}',
        "pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
        "zip": b"PK\x03\x04" + bytes(60),
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
    }
    for i in range(c.n(16, 1)):
        for what, body in texts.items():
            ext = ("jpg", "png", "jpeg", "webp")[i % 4]
            c.add("not_images", f"{what}_{i:02d}.{ext}", body, "error")
        noise = c.rng.integers(0, 256, int(c.rng.integers(1, 5000)), dtype=np.uint8).tobytes()
        c.add("not_images", f"random_bytes_{i:02d}.jpg", noise, "error")


def cmyk_jpeg(c: Corpus) -> None:
    for i in range(c.n(40, 2)):
        im = c.photo(face=False).convert("CMYK")
        c.save("cmyk_jpeg", f"cmyk_{i:03d}.jpg", im, "JPEG", quality=int(c.rng.integers(60, 96)))


def progressive_jpeg(c: Corpus) -> None:
    for i in range(c.n(60, 2)):
        c.save(
            "progressive_jpeg",
            f"progressive_{i:03d}.jpg",
            c.photo(face=False),
            "JPEG",
            progressive=True,
            optimize=bool(i % 2),
            quality=int(c.rng.integers(40, 96)),
            subsampling=i % 3,
        )


def bit16(c: Corpus) -> None:
    for i in range(c.n(10, 1)):
        im = c.photo()
        rgb16 = to16(im)
        alpha16 = to16(c.alpha_for(im))
        gray16 = to16(im.convert("L"))
        keeps = {"bits": 16}
        c.add("bit16", f"rgb16_{i:02d}.png", png16(rgb16), "output", **keeps)
        c.add(
            "bit16",
            f"rgba16_{i:02d}.png",
            png16(np.dstack([rgb16, alpha16])),
            "output",
            alpha=True,
            **keeps,
        )
        c.add("bit16", f"gray16_{i:02d}.png", png16(gray16), "output", **keeps)
        c.add(
            "bit16",
            f"grayalpha16_{i:02d}.png",
            png16(np.dstack([gray16, alpha16])),
            "output",
            alpha=True,
            **keeps,
        )
        # 16-bit TIFF written by OpenCV (Pillow cannot write 16-bit colour).
        import cv2

        ok, buf = cv2.imencode(".tif", np.ascontiguousarray(rgb16[..., ::-1]))
        assert ok
        c.add("bit16", f"rgb16_{i:02d}.tif", buf.tobytes(), "output", **keeps)
        ok, buf = cv2.imencode(".tif", gray16)
        assert ok
        c.add("bit16", f"gray16_{i:02d}.tif", buf.tobytes(), "output", **keeps)


def gray_alpha(c: Corpus) -> None:
    for i in range(c.n(10, 1)):
        im = c.photo().convert("L")
        la = im.copy()
        la.putalpha(c.alpha_for(im))
        c.save("gray_alpha", f"gray_alpha_{i:02d}.png", la, "PNG", keeps={"alpha": True})
        c.save("gray_alpha", f"gray_{i:02d}.jpg", im, "JPEG")
        c.save(
            "gray_alpha",
            f"gray_alpha_{i:02d}.webp",
            la.convert("RGBA"),
            "WEBP",
            keeps={"alpha": True},
            lossless=True,
        )


def palette_transparency(c: Corpus) -> None:
    for i in range(c.n(14, 1)):
        im = c.photo().convert(
            "P", palette=Image.Palette.ADAPTIVE, colors=int(c.rng.integers(8, 256))
        )
        c.save(
            "palette_transparency",
            f"palette_trns_{i:02d}.png",
            im,
            "PNG",
            transparency=0,
            keeps={"alpha": True},
        )
        c.save(
            "palette_transparency",
            f"palette_trns_{i:02d}.gif",
            im,
            "GIF",
            transparency=0,
            keeps={"alpha": True},
        )


def animated(c: Corpus) -> None:
    for i in range(c.n(12, 1)):
        frames = [c.photo(200) for _ in range(int(c.rng.integers(2, 6)))]
        size = frames[0].size
        frames = [f.resize(size) for f in frames]
        c.add(
            "animated",
            f"animated_{i:02d}.gif",
            encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
            "output",
        )
        c.add(
            "animated",
            f"animated_{i:02d}.webp",
            encode(
                frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0
            ),
            "output",
        )


def webp_avif(c: Corpus) -> None:
    for i in range(c.n(14, 1)):
        im = c.photo()
        rgba = im.copy()
        rgba.putalpha(c.alpha_for(im))
        c.save("webp_avif", f"lossy_{i:02d}.webp", im, "WEBP", quality=int(c.rng.integers(30, 95)))
        c.save(
            "webp_avif",
            f"lossless_alpha_{i:02d}.webp",
            rgba,
            "WEBP",
            lossless=True,
            keeps={"alpha": True},
        )
        c.save("webp_avif", f"photo_{i:02d}.avif", im, "AVIF", quality=int(c.rng.integers(30, 90)))


def exif_rotated(c: Corpus) -> None:
    for i in range(c.n(10, 1)):
        for orientation in range(1, 9):
            upright = c.photo()
            stored = upright.transpose(_TO_STORED[orientation]) if orientation > 1 else upright
            fmt, ext = (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"))[(i + orientation) % 3]
            exif = c.exif(orientation).tobytes()
            c.save(
                "exif_rotated",
                f"orientation{orientation}_{i:02d}.{ext}",
                stored,
                fmt,
                keeps={"exif": True, "upright_size": list(upright.size)},
                exif=exif,
            )


def icc_profiles(c: Corpus) -> None:
    for i in range(c.n(8, 1)):
        for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")):
            c.save(
                "icc_profiles",
                f"srgb_icc_{i:02d}.{ext}",
                c.photo(),
                fmt,
                keeps={"icc": True},
                icc_profile=c.srgb,
            )


def tiny(c: Corpus) -> None:
    sizes = [(1, 1), (2, 2), (8, 8), (1, 500), (500, 1), (16, 16), (3, 7)]
    modes = ["RGB", "L", "RGBA", "P", "1", "LA"]
    formats = [
        ("PNG", "png"),
        ("JPEG", "jpg"),
        ("WEBP", "webp"),
        ("TIFF", "tif"),
        ("BMP", "bmp"),
        ("GIF", "gif"),
    ]
    for _i, (w, h) in enumerate(sizes if not c.quick else sizes[:3]):
        for j, mode in enumerate(modes if not c.quick else modes[:2]):
            im = c.photo(64).resize((w, h)).convert("RGBA" if mode in ("RGBA", "LA") else "RGB")
            im = im.convert(mode)
            for fmt, ext in formats[: c.n(len(formats), 1)]:
                if fmt == "JPEG" and mode in ("RGBA", "P", "LA"):
                    continue
                if fmt in ("BMP", "GIF") and mode == "LA":
                    continue
                c.save("tiny", f"tiny_{w}x{h}_{mode}_{j}.{ext}", im, fmt)


def bombs(c: Corpus) -> None:
    """Small files declaring enormous pictures: ented must refuse them from the header."""
    sizes = [(100_000, 100_000), (65_000, 65_000), (20_000, 20_000), (1_000_000, 1)]
    for w, h in sizes:
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        sig = b"\x89PNG\r\n\x1a\n"
        body = zlib.compress(b"\x00" * 1024)

        def chunk(kind: bytes, data: bytes) -> bytes:
            return (
                struct.pack(">I", len(data))
                + kind
                + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
            )

        png = sig + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
        c.add("bombs", f"bomb_{w}x{h}.png", png, "error")
    # A real JPEG whose frame header is patched to 65500 x 65500.
    jpeg = bytearray(encode(c.photo(64), "JPEG"))
    sof = jpeg.find(b"\xff\xc0")
    struct.pack_into(">HH", jpeg, sof + 5, 65500, 65500)
    c.add("bombs", "bomb_65500x65500.jpg", bytes(jpeg), "error")
    gif = bytearray(encode(c.photo(64).convert("P"), "GIF"))
    struct.pack_into("<HH", gif, 6, 65535, 65535)  # logical screen
    c.add("bombs", "bomb_65535x65535.gif", bytes(gif), "error")
    tif = bytearray(encode(c.photo(64), "TIFF"))
    c.add("bombs", "bomb_tiff.tif", _patch_tiff_size(tif, 200_000, 200_000), "error")


def _patch_tiff_size(tif: bytearray, w: int, h: int) -> bytes:
    ifd = struct.unpack_from("<I", tif, 4)[0]
    for k in range(struct.unpack_from("<H", tif, ifd)[0]):
        at = ifd + 2 + 12 * k
        tag = struct.unpack_from("<H", tif, at)[0]
        if tag in (256, 257):
            value = w if tag == 256 else h
            struct.pack_into("<HHII", tif, at, tag, 4, 1, value)  # LONG
    return bytes(tif)


def big_photo(c: Corpus) -> None:
    import cv2

    london = sorted(LONDON_RAW.glob("*.jpg")) if LONDON_RAW.is_dir() else []
    if london:
        src = cv2.imread(str(london[0]), cv2.IMREAD_COLOR)
        origin = f"London Set {london[0].name} (CC BY 4.0), upscaled"
    else:
        src = cv2.imread(str(EXAMPLES / "grace_hopper.jpg"), cv2.IMREAD_COLOR)
        origin = "examples/grace_hopper.jpg, upscaled"
    w, h = BIG_SIZE
    scale = max(w / src.shape[1], h / src.shape[0])
    big = cv2.resize(src, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    top, left = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    big = np.ascontiguousarray(big[top : top + h, left : left + w])
    ok, buf = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    c.add(
        "big_photo",
        "real_photo_12000x9000.jpg",
        buf.tobytes(),
        "error",
        origin=origin,
        note="refused at the default --max-pixels; restored when the limit is raised",
    )


def names(c: Corpus) -> None:
    stems = [
        "café crème",
        "日本語 写真",
        "фото семьи",
        "emoji 😀 face",
        "with  two  spaces",
        " leading space",
        "trailing space ",
        'quote\'s "double"',
        "semi;colon & amp",
        "percent%20hash#",
        "-starts-with-dash",
        "back\\slash",
        "tab\there",
        "new\nline",
        unicodedata.normalize("NFD", "ÄÖÜ decomposed"),
        "x" * 245,
    ]
    stems = stems if not c.quick else stems[:4] + ["new\nline", "x" * 245]
    for _i, stem in enumerate(stems):
        c.save("names", f"{stem}.jpg", c.photo(face=False), "JPEG")
    # A name that is not valid UTF-8 (an old Latin-1 archive): os.fsdecode gives surrogates.
    latin1 = os.fsdecode(b"caf\xe9 latin1.jpg")
    c.save("names", latin1, c.photo(face=False), "JPEG")


def symlinks(c: Corpus) -> None:
    kind = "symlinks"
    target = c.save(kind, "real.jpg", c.photo(face=False), "JPEG")
    folder = c.path(kind, "album/inside.png").parent
    c.save(kind, "album/inside.png", c.photo(face=False), "PNG")
    links = {
        "link_to_real.jpg": "real.jpg",  # the same file twice: processed once
        "dangling.jpg": "missing.jpg",
        "self_loop.jpg": "self_loop.jpg",
        "loop_a.jpg": "loop_b.jpg",
        "loop_b.jpg": "loop_a.jpg",
        "album/up": "..",  # a folder loop: album/up/album/up/...
        "linked_album": "album",  # a folder reached twice
    }
    for name, points_to in links.items():
        link = c.path(kind, name)
        link.symlink_to(points_to)
        if name.endswith(".jpg"):
            expect = "output" if points_to == "real.jpg" else "error"
            c.add(kind, name, None, expect)
    assert target.exists() and folder.is_dir()


def unreadable(c: Corpus) -> None:
    kind = "unreadable"
    locked = c.save(
        kind,
        "chmod_000.jpg",
        c.photo(face=False),
        "JPEG",
        expect="any",
        note="unreadable for non-root users only",
    )
    locked.chmod(0)
    fifo = c.path(kind, "fifo.jpg")
    os.mkfifo(fifo)
    c.add(kind, "fifo.jpg", None, "error")
    if Path("/proc/self/mem").exists():
        c.path(kind, "disk_error.jpg").symlink_to("/proc/self/mem")
        c.add(kind, "disk_error.jpg", None, "error", note="read fails with EIO, even for root")
    c.path(kind, "folder_named.jpg").mkdir()  # a folder with an image name: its images count
    c.save(kind, "folder_named.jpg/inside.jpg", c.photo(face=False), "JPEG")


def unwritable_output(c: Corpus) -> None:
    outputs = c.out / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    for i in range(c.n(5, 1)):
        c.save(
            "unwritable_output",
            f"blocked_{i}.jpg",
            c.photo(face=False),
            "JPEG",
            expect="error",
            note="outputs/unwritable_output is a regular file",
        )
        c.save(
            "readonly_output",
            f"readonly_{i}.jpg",
            c.photo(face=False),
            "JPEG",
            expect="any",
            note="outputs/readonly_output is chmod 555: fails for non-root users only",
        )
    (outputs / "unwritable_output").write_bytes(b"a file standing where a folder must go\n")
    (outputs / "readonly_output").mkdir(exist_ok=True)
    (outputs / "readonly_output").chmod(0o555)


def corrupt(c: Corpus) -> None:
    for i in range(c.n(100, 2)):
        fmt, ext = (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("TIFF", "tif"))[i % 4]
        data = bytearray(encode(c.photo(face=False), fmt))
        start = min(len(data) - 1, 64)
        for at in c.rng.integers(start, len(data), int(c.rng.integers(1, 20))):
            data[at] ^= 1 << int(c.rng.integers(8))
        c.add("corrupt", f"bit_flips_{i:03d}.{ext}", bytes(data), "any")


def plain(c: Corpus) -> None:
    """Ordinary photos in every format ented writes: the baseline that must just work."""
    for i in range(c.n(10, 1)):
        im = c.photo()
        rgba = im.copy()
        rgba.putalpha(c.alpha_for(im))
        c.save("plain", f"photo_{i:02d}.jpg", im, "JPEG", quality=int(c.rng.integers(50, 96)))
        c.save("plain", f"photo_{i:02d}.png", rgba, "PNG", keeps={"alpha": True})
        c.save("plain", f"photo_{i:02d}.bmp", im, "BMP")
        c.save(
            "plain",
            f"photo_{i:02d}.tif",
            rgba,
            "TIFF",
            keeps={"alpha": True},
            compression="tiff_lzw",
        )
        c.save(
            "plain",
            f"photo_{i:02d}.jpeg",
            im,
            "JPEG",
            exif=c.exif().tobytes(),
            keeps={"exif": True},
        )


KINDS: dict[str, Callable[[Corpus], None]] = {
    "truncated": truncated,
    "zero_byte": zero_byte,
    "wrong_extension": wrong_extension,
    "not_images": not_images,
    "cmyk_jpeg": cmyk_jpeg,
    "progressive_jpeg": progressive_jpeg,
    "bit16": bit16,
    "gray_alpha": gray_alpha,
    "palette_transparency": palette_transparency,
    "animated": animated,
    "webp_avif": webp_avif,
    "exif_rotated": exif_rotated,
    "icc_profiles": icc_profiles,
    "tiny": tiny,
    "bombs": bombs,
    "big_photo": big_photo,
    "names": names,
    "symlinks": symlinks,
    "unreadable": unreadable,
    "unwritable_output": unwritable_output,
    "corrupt": corrupt,
    "plain": plain,
}


def build(out: Path, seed: int = 0, quick: bool = False, skip: tuple[str, ...] = ()) -> dict:
    if out.exists():
        _remove_tree(out)
    corpus = Corpus(out, seed, quick)
    for name, make in KINDS.items():
        if name not in skip:
            make(corpus)
    manifest = {"seed": seed, "quick": quick, "inputs": corpus.records}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=True))
    return manifest


def _remove_tree(path: Path) -> None:
    # The corpus holds a chmod-000 file and a chmod-555 folder: give write access back first.
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            p = Path(root) / d
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | stat.S_IRWXU)
    shutil.rmtree(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="corpus folder (replaced)")
    ap.add_argument("--quick", action="store_true", help="a small subset of every kind (CI)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=sorted(KINDS),
        help="leave out a kind (repeatable), e.g. big_photo",
    )
    args = ap.parse_args()
    manifest = build(args.out, args.seed, args.quick, tuple(args.skip))
    counts: dict[str, int] = {}
    for rec in manifest["inputs"]:
        counts[rec["kind"]] = counts.get(rec["kind"], 0) + 1
    for kind, n in counts.items():
        print(f"{kind:22s} {n:5d}", file=sys.stderr)
    print(f"{'total':22s} {len(manifest['inputs']):5d}  -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
