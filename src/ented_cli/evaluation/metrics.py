"""Full-reference image metrics for evaluation: PSNR, SSIM, and the Fréchet distance of FID.

Inputs are float N×C×H×W tensors in [-1, 1] (the model's range); both metrics map them to [0, 1]
and use a data range of 1, with no quantisation to 8 bits. They return one value per image.

`on="rgb"` (default) averages over the colour channels; `on="y"` uses the BT.601 luma of
MATLAB's `rgb2ycbcr` (Y = 16/255 + (65.481 R + 128.553 G + 24.966 B)/255), as super-resolution
papers do. SSIM is Wang et al. 2004: 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03,
computed over the valid region (no padding), biased (window-weighted) statistics.
PSNR runs in float64 so that nearly identical images do not lose precision.

`frechet_distance` compares two Gaussians (mean, covariance) of network features, as FID does
(Heusel et al. 2017); `gaussian_stats` gives them for a feature matrix.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Channels = Literal["rgb", "y"]


def _prepare(a: torch.Tensor, b: torch.Tensor, on: Channels) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(
            f"expected two N×C×H×W tensors of the same shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    a = (a.to(torch.float64) + 1) / 2
    b = (b.to(torch.float64) + 1) / 2
    if on == "y":
        if a.shape[1] != 3:
            raise ValueError("on='y' needs RGB images (3 channels)")
        return _luma(a), _luma(b)
    if on != "rgb":
        raise ValueError(f"on must be 'rgb' or 'y', not {on!r}")
    return a, b


def _luma(x: torch.Tensor) -> torch.Tensor:
    w = x.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1) / 255
    return (x * w).sum(dim=1, keepdim=True) + 16 / 255


def psnr(a: torch.Tensor, b: torch.Tensor, on: Channels = "rgb") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (identical images → inf)."""
    x, y = _prepare(a, b, on)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return (10 * torch.log10(1.0 / mse)).float()


def _gaussian_1d(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return (g / g.sum()).to(like.device, like.dtype)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    on: Channels = "rgb",
    window: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity per image, mean over the valid region and channels (identical → 1)."""
    x, y = _prepare(a, b, on)
    _, c, h, w = x.shape
    if h < window or w < window:
        raise ValueError(f"SSIM needs images of at least {window}×{window} pixels, got {h}×{w}")
    # Work in float32 (float64 depthwise convolutions are several times slower on CPU), but
    # centre both images on their joint mean first, so that E[x²] - μ² keeps its precision
    # (error < 1e-6 against float64 on real faces; 1e-4 without centring on flat areas).
    offset = ((x + y) / 2).mean(dim=(2, 3), keepdim=True)
    x, y = (x - offset).float(), (y - offset).float()
    g = _gaussian_1d(window, sigma, x)
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    # The Gaussian window is separable: a column pass then a row pass, both 'valid'.
    stack = F.conv2d(stack, g.view(1, 1, window, 1).expand(5 * c, 1, window, 1), groups=5 * c)
    stack = F.conv2d(stack, g.view(1, 1, 1, window).expand(5 * c, 1, 1, window), groups=5 * c)
    mu_x, mu_y, xx, yy, xy = stack.split(c, dim=1)

    c1, c2 = 0.01**2, 0.03**2
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov = xy - mu_x * mu_y
    mu_x, mu_y = mu_x + offset.float(), mu_y + offset.float()  # back to absolute luminance
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).flatten(1).mean(dim=1)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N - 1) covariance of an N×D feature matrix, in float64."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need an N×D feature matrix with N ≥ 2, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    # Covariances are symmetric positive semi-definite; rounding can make tiny eigenvalues negative.
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½), the Fréchet distance of two Gaussians.

    tr((Σ1 Σ2)^½) is computed as the sum of the square roots of the eigenvalues of the symmetric
    matrix Σ1^½ Σ2 Σ1^½ (same eigenvalues as Σ1 Σ2), which stays real and stable even when the
    covariances are singular (fewer images than feature dimensions), with no scipy needed.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
        raise ValueError(
            f"mismatched statistics: means {mu1.shape} and {mu2.shape}, covariances "
            f"{cov1.shape} and {cov2.shape}"
        )
    root1 = _psd_sqrt(cov1)
    middle = root1 @ cov2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    # ≥ 0 in exact arithmetic; rounding leaves about 1e-7 of the traces for equal inputs.
    return max(0.0, float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt))
