"""StyleGAN2-style residual discriminator at 256 (training only)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ented_cli.model.layers import leaky

D_CHANNELS = {256: 32, 128: 64, 64: 128, 32: 256, 16: 256, 8: 256, 4: 256}


class DownResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(leaky(self.conv2(leaky(self.conv1(x)))))
        return (self.skip(self.pool(x)) + h) / math.sqrt(2.0)


class Discriminator(nn.Module):
    def __init__(self, size: int = 256, width: float = 1.0):
        super().__init__()
        ch = {r: max(8, int(c * width)) for r, c in D_CHANNELS.items()}
        self.from_rgb = nn.Conv2d(3, ch[size], 1)
        blocks, r = [], size
        while r > 4:
            blocks.append(DownResBlock(ch[r], ch[r // 2]))
            r //= 2
        self.blocks = nn.Sequential(*blocks)
        self.final_conv = nn.Conv2d(ch[4] + 1, ch[4], 3, padding=1)
        self.fc = nn.Linear(ch[4] * 16, ch[4])
        self.out = nn.Linear(ch[4], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(leaky(self.from_rgb(x)))
        # Minibatch standard deviation: lets D see a lack of variety across samples.
        std = h.std(dim=0, unbiased=False).mean().expand(h.shape[0], 1, 4, 4)
        h = leaky(self.final_conv(torch.cat([h, std], dim=1)))
        return self.out(leaky(self.fc(h.flatten(1))))
