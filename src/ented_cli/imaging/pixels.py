"""Images in memory: `LoadedImage` (pixels as read, with their metadata), conversions to and
from float32 BGR in [0, 1], resizing, and the 8-bit conversions of aligned face crops.

The whole restore path works in BGR, as OpenCV reads images; the one flip to the network's RGB
is inside the restorer (model/restorer.py::network_rgb), at the network boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

# ITU-R BT.601 luma weights, in BGR order.
_LUMA_BGR = np.array([0.114, 0.587, 0.299], np.float32)


def to_uint8(crop: np.ndarray) -> np.ndarray:
    """A float crop in [0, 1] as 8-bit pixels (rounded, clipped)."""
    return np.rint(np.clip(crop, 0, 1) * 255).astype(np.uint8)


def desaturate(crop: np.ndarray) -> np.ndarray:
    """A BGR crop as gray in three equal channels (restored faces of a gray photo)."""
    luma = crop @ _LUMA_BGR
    return np.repeat(luma[..., None], 3, axis=2)


@dataclass
class LoadedImage:
    pixels: np.ndarray  # HxWx3 BGR or HxW gray; uint8 or uint16; EXIF orientation applied
    alpha: np.ndarray | None  # HxW, same dtype as pixels
    icc_profile: bytes | None
    exif: bytes | None  # "Exif\0\0"-prefixed block with Orientation removed
    format: str  # lower-case format of the source: "jpeg", "png", "webp", "tiff", "bmp", ...
    source: str  # path as given, or "-" for stdin
    # Frames in the file (animated GIF/WebP, multi-page TIFF); only the first is used.
    frames: int = 1
    # Print resolution (dots per inch, x then y, as displayed) when the file states one; None
    # when it states none or only an aspect ratio. Scaled by --upscale: the print size stays.
    dpi: tuple[float, float] | None = None
    # Text the file carries: PNG text chunks by keyword, the JPEG comment as "Comment".
    text: dict[str, str] = field(default_factory=dict)
    # The file's pixels were CMYK: they were converted to RGB, so a re-encoded output is RGB.
    from_cmyk: bool = False

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


def max_value(dtype: np.dtype) -> float:
    return 65535.0 if dtype == np.uint16 else 255.0


def to_float_bgr(img: LoadedImage) -> np.ndarray:
    """float32 HxWx3 BGR in [0, 1]; gray is replicated to three channels; alpha is ignored."""
    arr = img.pixels.astype(np.float32)
    arr /= np.float32(max_value(img.pixels.dtype))  # in place: 1.2 GB less on a 100 MP frame
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return arr


def _quantise(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    # In place on one float copy: on a 100 MP frame each temporary is 1.2 GB.
    out = np.clip(arr, 0.0, 1.0)
    out *= np.float32(max_value(dtype))
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
    # More pixels over the same paper: a 300 dpi scan upscaled twice prints at 600 dpi.
    dpi = None if img.dpi is None else (img.dpi[0] * new_w / w, img.dpi[1] * new_h / h)
    return replace(img, pixels=pixels, alpha=alpha, dpi=dpi)
