"""Synthetic degradation of clean faces (GFPGAN / Real-ESRGAN style), DESIGN.md §4.

Blur (isotropic or anisotropic Gaussian) → downsample → Gaussian noise → JPEG → resize back,
sometimes grayscale. Two entry points share one implementation:

- `degrade(images, seed)` draws fresh parameters per sample (training);
- `degrade_level(images, "medium")` uses fixed, named parameters (validation, benchmarks).

Everything except JPEG runs on the images' device. All random numbers come from a CPU
`torch.Generator`, so a seed gives the same parameters and noise on any device, and bit-identical
output on the same device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ented_cli.errors import InputError

DOWN_MODES = ("area", "bilinear", "bicubic")
UP_MODES = ("bilinear", "bicubic")


@dataclass(frozen=True)
class DegradationConfig:
    """Ranges for `degrade`; each value is drawn uniformly per sample."""

    blur_sigma: tuple[float, float] = (0.1, 10.0)  # pixels at the input resolution
    aniso_prob: float = 0.5  # else isotropic
    blur_radius: int = 20  # 41×41 kernel like GFPGAN: σ=10 is cut at 2σ
    downscale: tuple[float, float] = (1.0, 8.0)
    noise: tuple[float, float] = (0.0, 15.0)  # σ in 0..255 units
    gray_noise_prob: float = 0.4  # luminance-only noise, as Real-ESRGAN
    jpeg: tuple[int, int] = (50, 100)  # quality, both ends included
    gray_prob: float = 0.1


@dataclass(frozen=True)
class DegradationParams:
    """Concrete parameters for one image."""

    sigma_x: float
    sigma_y: float
    theta: float  # rotation of the blur ellipse, radians
    scale: float  # downsampling factor (≥ 1)
    noise: float  # σ in 0..255 units
    gray_noise: bool
    jpeg: int
    gray: bool
    down_mode: str = "bilinear"
    up_mode: str = "bilinear"


# Fixed levels for reproducible validation; σ and scale are relative to a 256 face. Their noise
# field is drawn from a fixed seed, so a level maps each image to one output. `severe` is the
# reference-route warm-up's regime (issue 11: down-sampling ×8–×16): ×12, a 256 face kept at
# about 21 px, where the input alone cannot tell who it is.
LEVELS: dict[str, DegradationParams] = {
    "mild": DegradationParams(1.0, 1.0, 0.0, 2.0, 3.0, False, 90, False),
    "medium": DegradationParams(2.5, 2.5, 0.0, 4.0, 8.0, False, 70, False),
    "severe": DegradationParams(6.0, 6.0, 0.0, 12.0, 15.0, False, 50, False),
}
_LEVEL_NOISE_SEED = 20240106  # every image of a level gets the same noise field


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def sample_params(
    n: int, gen: torch.Generator, config: DegradationConfig
) -> list[DegradationParams]:
    """Draw `n` parameter sets; the order of draws is fixed so a seed reproduces them."""
    params = []
    for _ in range(n):
        sx = _uniform(gen, *config.blur_sigma)
        if _uniform(gen, 0, 1) < config.aniso_prob:
            sy = _uniform(gen, *config.blur_sigma)
            theta = _uniform(gen, 0, math.pi)
        else:
            sy, theta = sx, 0.0
        scale = _uniform(gen, *config.downscale)
        noise = _uniform(gen, *config.noise)
        gray_noise = _uniform(gen, 0, 1) < config.gray_noise_prob
        q_lo, q_hi = config.jpeg
        jpeg = int(torch.randint(q_lo, q_hi + 1, (), generator=gen))
        gray = _uniform(gen, 0, 1) < config.gray_prob
        down = DOWN_MODES[int(torch.randint(len(DOWN_MODES), (), generator=gen))]
        up = UP_MODES[int(torch.randint(len(UP_MODES), (), generator=gen))]
        params.append(
            DegradationParams(sx, sy, theta, scale, noise, gray_noise, jpeg, gray, down, up)
        )
    return params


def gaussian_kernels(params: list[DegradationParams], radius: int) -> torch.Tensor:
    """N×k×k normalised (an)isotropic Gaussian kernels, k = 2·radius+1, float32 on CPU."""
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    kernels = []
    for p in params:
        c, s = math.cos(p.theta), math.sin(p.theta)
        # Inverse covariance of the rotated ellipse: R diag(1/σx², 1/σy²) Rᵀ.
        ix, iy = 1.0 / p.sigma_x**2, 1.0 / p.sigma_y**2
        a = c * c * ix + s * s * iy
        b = c * s * (ix - iy)
        d = s * s * ix + c * c * iy
        k = torch.exp(-0.5 * (a * xx * xx + 2 * b * xx * yy + d * yy * yy))
        kernels.append(k / k.sum())
    return torch.stack(kernels).float()


def blur(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-sample convolution (reflect-padded) through the FFT: cost does not grow with σ."""
    n, _, h, w = images.shape
    radius = kernels.shape[-1] // 2
    pad = min(radius, h - 1, w - 1)
    if pad < radius:  # tiny images: crop the kernel to what reflect padding can support
        kernels = kernels[:, radius - pad : radius + pad + 1, radius - pad : radius + pad + 1]
        kernels = kernels / kernels.sum(dim=(1, 2), keepdim=True)
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    hp, wp = padded.shape[-2:]
    # Kernel centre at (0, 0) of a zero canvas, so the circular product is a plain convolution;
    # the wrap-around only touches the padding, which is cropped away.
    canvas = images.new_zeros(n, hp, wp)
    k = 2 * pad + 1
    canvas[:, :k, :k] = kernels.to(images.device, images.dtype)
    canvas = torch.roll(canvas, shifts=(-pad, -pad), dims=(1, 2))
    spectrum = torch.fft.rfft2(padded) * torch.fft.rfft2(canvas)[:, None]
    out = torch.fft.irfft2(spectrum, s=(hp, wp))
    return out[..., pad : pad + h, pad : pad + w]


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of one 1×3×H×W [-1,1] image through cv2 (CPU)."""
    rgb = ((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to("cpu", torch.uint8)
    bgr = np.ascontiguousarray(rgb.numpy()[:, :, ::-1])  # cv2 converts to YCbCr from BGR
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2 could not encode a JPEG")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    out = torch.from_numpy(dec).permute(2, 0, 1)[None].to(x.device, x.dtype)
    return out / 127.5 - 1


def _to_gray(x: torch.Tensor) -> torch.Tensor:
    y = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return y.expand_as(x).contiguous()


def apply_params(
    images: torch.Tensor,
    params: list[DegradationParams],
    noise_gen: torch.Generator | None,
    blur_radius: int = 20,
    noise_seed: int | None = None,
) -> torch.Tensor:
    """Degrade each image with its own parameters.

    Noise comes from `noise_gen` (one stream for the batch) or, when `noise_seed` is given, from a
    fresh generator per image with that seed (so an image's output does not depend on the batch).
    """
    _check_images(images)
    if len(params) != images.shape[0]:
        raise ValueError(f"{len(params)} parameter sets for a batch of {images.shape[0]}")
    h, w = images.shape[-2:]
    x = blur(images.float(), gaussian_kernels(params, blur_radius))
    out = []
    for i, p in enumerate(params):
        xi = x[i : i + 1]
        small = (max(1, round(h / p.scale)), max(1, round(w / p.scale)))
        xi = _resize(xi, small, p.down_mode)
        if p.noise > 0:
            gen = torch.Generator().manual_seed(noise_seed) if noise_seed is not None else noise_gen
            shape = (1, 1 if p.gray_noise else 3, *small)
            noise = torch.randn(shape, generator=gen) * (2 * p.noise / 255)  # [-1,1] units
            xi = xi + noise.to(xi.device)
        xi = _jpeg(xi.clamp(-1, 1), p.jpeg)
        xi = _resize(xi, (h, w), p.up_mode)
        if p.gray:
            xi = _to_gray(xi)
        out.append(xi)
    return torch.cat(out).clamp(-1, 1).to(images.dtype)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected an N×3×H×W tensor in [-1, 1], got {shape}")


def degrade(
    images: torch.Tensor,
    seed: int | torch.Generator,
    config: DegradationConfig = DegradationConfig(),
) -> torch.Tensor:
    """Randomly degrade a batch (N×3×H×W, [-1, 1]); same seed → same output."""
    return degrade_with_params(images, seed, config)[0]


def degrade_with_params(
    images: torch.Tensor,
    seed: int | torch.Generator,
    config: DegradationConfig = DegradationConfig(),
) -> tuple[torch.Tensor, list[DegradationParams]]:
    """`degrade`, also returning each image's parameters (for the degradation-consistency loss)."""
    _check_images(images)
    if isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise ValueError("degrade needs a CPU torch.Generator (it is used for JPEG too)")
        gen = seed
    else:
        gen = torch.Generator().manual_seed(int(seed))
    params = sample_params(images.shape[0], gen, config)
    return apply_params(images, params, gen, config.blur_radius), params


def degrade_level(images: torch.Tensor, level: str) -> torch.Tensor:
    """Degrade with the fixed parameters of a named level (`LEVELS`); no randomness."""
    if level not in LEVELS:
        raise InputError(f"unknown degradation level {level!r}; use one of {', '.join(LEVELS)}")
    _check_images(images)
    # σ and scale are defined for 256 px faces; keep the look the same at other sizes.
    f = images.shape[-1] / 256
    p = LEVELS[level]
    p = replace(p, sigma_x=p.sigma_x * f, sigma_y=p.sigma_y * f, scale=max(1.0, p.scale * f))
    radius = max(20, math.ceil(3 * max(p.sigma_x, p.sigma_y)))
    return apply_params(images, [p] * images.shape[0], None, radius, noise_seed=_LEVEL_NOISE_SEED)


def degrade_image(
    bgr_uint8: np.ndarray,
    seed: int,
    config: DegradationConfig = DegradationConfig(),
    level: str | None = None,
) -> np.ndarray:
    """Degrade one H×W×3 BGR uint8 image (cv2 layout); `level` switches to `degrade_level`."""
    ok = isinstance(bgr_uint8, np.ndarray) and bgr_uint8.dtype == np.uint8
    if not ok or bgr_uint8.ndim != 3 or bgr_uint8.shape[2] != 3:
        raise InputError("degrade_image needs an H×W×3 uint8 BGR array (as cv2.imread returns)")
    rgb = torch.from_numpy(np.ascontiguousarray(bgr_uint8[:, :, ::-1])).permute(2, 0, 1)[None]
    x = rgb.float() / 127.5 - 1
    y = degrade_level(x, level) if level is not None else degrade(x, seed, config)
    out = ((y[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return np.ascontiguousarray(out[:, :, ::-1])
