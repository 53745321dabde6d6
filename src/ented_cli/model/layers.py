"""Building blocks shared by the ENTED networks: encoders and StyleGAN2-style modulated convs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ented_cli.model.config import RESOLUTIONS


def leaky(x: torch.Tensor) -> torch.Tensor:
    # StyleGAN's activation, scaled so activations keep roughly unit variance.
    return F.leaky_relu(x, 0.2) * math.sqrt(2.0)


class ResBlock(nn.Module):
    """Two 3x3 convs with a residual; optionally halves the resolution."""

    def __init__(self, in_ch: int, out_ch: int, down: bool = False):
        super().__init__()
        self.down = down
        self.norm = nn.GroupNorm(min(8, in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=False) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)
        h = self.conv2(leaky(self.conv1(leaky(self.norm(x)))))
        return (self.skip(x) + h) / math.sqrt(2.0)


class Encoder(nn.Module):
    """Convolutional encoder down to 16x16 that keeps the feature map of every resolution.

    The full-resolution level is a single conv (a ResBlock there would cost as much as the rest of
    the encoder). `skip_full_res` starts at 128 instead: the reference side needs nothing at 256.
    """

    def __init__(self, channels: tuple[int, ...], in_ch: int = 3, skip_full_res: bool = False):
        super().__init__()
        self.skip_full_res = skip_full_res
        first = 1 if skip_full_res else 0
        self.resolutions = RESOLUTIONS[first:]
        self.stem = nn.Conv2d(in_ch, channels[first], 3, padding=1)
        self.blocks = nn.ModuleList(
            [nn.Identity()]
            + [
                ResBlock(channels[i - 1], channels[i], down=i > first)
                for i in range(first + 1, len(channels))
            ]
        )

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        if self.skip_full_res:
            x = F.avg_pool2d(x, 2)
        h = leaky(self.stem(x))
        feats = {}
        for res, block in zip(self.resolutions, self.blocks):
            h = block(h)
            feats[res] = h
        return feats


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv: scale input channels by the style, conv, demodulate.

    Modulating the activations instead of the weights is mathematically the same as StyleGAN2's
    weight modulation and avoids grouped convolutions, which are slow on CPU.
    """

    def __init__(
        self, in_ch: int, out_ch: int, style_dim: int, kernel: int = 3, demodulate: bool = True
    ):
        super().__init__()
        self.weight = nn.Parameter(
            torch.randn(out_ch, in_ch, kernel, kernel) / math.sqrt(in_ch * kernel**2)
        )
        self.affine = nn.Linear(style_dim, in_ch)
        nn.init.zeros_(self.affine.weight)
        nn.init.ones_(self.affine.bias)  # start as an unmodulated conv
        self.demodulate = demodulate
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.affine(style)  # B x in
        out = F.conv2d(x * s[:, :, None, None], self.weight, padding=self.padding)
        if self.demodulate:
            w2 = self.weight.square().sum(dim=(2, 3))  # out x in
            demod = torch.rsqrt(s.square() @ w2.t() + 1e-8)  # B x out
            out = out * demod[:, :, None, None]
        return out


class StyledConv(nn.Module):
    """Modulated 3x3 conv + optional per-pixel noise + bias + activation."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, use_noise: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, style_dim)
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))
        self.noise_strength = nn.Parameter(torch.zeros(1)) if use_noise else None

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        out = self.conv(x, style)
        if self.noise_strength is not None and self.training:
            out = out + self.noise_strength * torch.randn_like(out[:, :1])
        return leaky(out + self.bias)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB without demodulation (StyleGAN2 skip architecture)."""

    def __init__(self, in_ch: int, style_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, 3, style_dim, kernel=1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None
    ) -> torch.Tensor:
        rgb = self.conv(x, style) + self.bias
        if skip is not None:
            rgb = rgb + F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
        return rgb
