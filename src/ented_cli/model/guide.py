"""The aligned-reference route: a landmark-warped reference the decoder can take detail from.

NTED's attention must discover where the reference's eyes and mouth are; on a CPU budget it
never does, and a network trained only against the ground truth learns to ignore the reference
(TRAINING.md). This module gives the decoder a reference already moved onto the input's face
geometry (`ented_cli.faces.refwarp`), with:

- a validity mask (where the warp is meaningful),
- an agreement map: local correlation of the input and the warped reference in a coarse band
  both still carry, so the network can see at inference where the reference fits the input,
- a trust map per decoder scale, supervised at training time (`trust_target`) to be high where
  the warped reference's detail matches the ground truth,
- trust-gated feature injection at every decoder scale and, at 256, the output's detail band
  replaced by the warped reference's under the trust map (a direct path the loss cannot route
  around).

Pure nn.Module, no I/O. `EntedConfig.use_guide` switches it off for ablations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GUIDE_RES = (256, 128, 64, 32)
AGREE_RES = 64  # the band the agreement map is measured in (survives ×8 down-sampling)


def stack_guides(guides: list, size: int) -> torch.Tensor:
    """B×4×size×size generator input from per-face H×W×4 arrays (RGB in [0, 1], mask) or None
    (no reference: all zeros, as in training)."""
    out = torch.zeros(len(guides), 4, size, size)
    for i, g in enumerate(guides):
        if g is not None:
            t = torch.from_numpy(g).permute(2, 0, 1)
            out[i, :3] = t[:3] * 2 - 1
            out[i, 3] = t[3]
    return out


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, reflect-padded, per channel."""
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def high_pass(x: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    return x - gaussian_blur(x, sigma)


def luminance(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def agreement(lq: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Local normalised correlation (-1..1) of input and warped reference, B×1×64×64."""
    a = gaussian_blur(F.interpolate(luminance(lq), size=AGREE_RES, mode="area"), 1.0)
    b = gaussian_blur(F.interpolate(luminance(warped), size=AGREE_RES, mode="area"), 1.0)
    box = lambda t: F.avg_pool2d(t, 7, stride=1, padding=3, count_include_pad=False)  # noqa: E731
    ma, mb = box(a), box(b)
    cov = box(a * b) - ma * mb
    var_a = (box(a * a) - ma * ma).clamp_min(0)
    var_b = (box(b * b) - mb * mb).clamp_min(0)
    corr = cov / torch.sqrt(var_a * var_b + 1e-4)
    return corr * F.interpolate(mask, size=AGREE_RES, mode="area")


def mean_agreement(agree: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One number per face (B): the agreement map's mean inside the warp's validity mask; 0 for
    a face with no aligned reference."""
    valid = F.interpolate(mask, size=agree.shape[-1], mode="area")
    return agree.sum(dim=(1, 2, 3)) / valid.sum(dim=(1, 2, 3)).clamp_min(1e-6)


def trust_target(
    warped: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor,
    sigma: float = 5.0,
    threshold: float = 0.3,
) -> torch.Tensor:
    """Where the warped reference's detail has the ground truth's structure: B×1×64×64 in [0, 1].

    Local normalised correlation (Gaussian window) of the two images' bands above `sigma`,
    mapped through a soft step at `threshold`; zero outside the warp's validity mask. A
    correlation, not a pixel distance: a pixel loss always prefers no detail to slightly shifted
    detail (why restorers learn to ignore references), while identity and perceptual quality
    come from exactly that detail. A reference smile over a closed mouth correlates badly and is
    refused.
    """
    a, b = high_pass(luminance(warped), sigma), high_pass(luminance(gt), sigma)
    window = lambda t: gaussian_blur(t, 8.0)  # noqa: E731
    corr = window(a * b) / torch.sqrt(window(a * a) * window(b * b) + 1e-5)
    trust = torch.sigmoid((corr - threshold) / 0.1)
    valid = F.interpolate(mask, size=AGREE_RES, mode="area")
    return F.avg_pool2d(trust, warped.shape[-1] // AGREE_RES) * valid


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.LeakyReLU(0.2),
    )


class ReferenceGuide(nn.Module):
    """Encodes [warped reference, mask, agreement, input] and gates it into the decoder."""

    def __init__(self, guide_channels: tuple[int, ...], dec_channels: dict[int, int]):
        super().__init__()
        self.stages = nn.ModuleList()
        cin = 3 + 1 + 1 + 3
        for i, ch in enumerate(guide_channels):
            self.stages.append(_block(cin, ch, stride=1 if i == 0 else 2))
            cin = ch
        self.trust = nn.ModuleDict()
        self.inject = nn.ModuleDict()
        for r, ch in zip(GUIDE_RES, guide_channels):
            dec = dec_channels[r]
            self.trust[str(r)] = nn.Sequential(
                nn.Conv2d(ch + dec, 32, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(32, 1, 1)
            )
            inject = nn.Conv2d(ch, dec, 1)
            nn.init.zeros_(inject.weight)  # starts as the model without the route
            nn.init.zeros_(inject.bias)
            self.inject[str(r)] = inject
        # How much of the reference's own high frequencies the output takes where trusted.
        self.detail_gain = nn.Parameter(torch.zeros(()))

    def encode(
        self, lq: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor
    ) -> tuple[dict, torch.Tensor]:
        """Guide features per decoder scale, and the agreement map (B×1×64×64)."""
        agree64 = agreement(lq, warped, mask)
        agree = F.interpolate(agree64, size=lq.shape[-1], mode="bilinear")
        x = torch.cat([warped * mask, mask, agree, lq], dim=1)
        feats = {}
        for r, stage in zip(GUIDE_RES, self.stages):
            x = stage(x)
            feats[r] = x
        return feats, agree64

    def fuse(
        self, r: int, x: torch.Tensor, feat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder features at resolution r plus the trusted reference features; and the trust."""
        trust = torch.sigmoid(self.trust[str(r)](torch.cat([feat, x], dim=1)))
        return x + trust * self.inject[str(r)](feat), trust

    def add_detail(
        self,
        rgb: torch.Tensor,
        warped: torch.Tensor,
        mask: torch.Tensor,
        trust: torch.Tensor,
        sigma: float,
    ) -> torch.Tensor:
        """Where trusted, the output's band above `sigma` becomes the warped reference's:
        out = rgb + a·(HP(warped) − HP(rgb)), a = gain·trust·mask in [0, 1]. Detail comes from
        the real photo instead of being invented, and never doubles the decoder's own."""
        a = self.detail_gain.clamp(0, 1) * trust * mask
        return rgb + a * (high_pass(warped, sigma) - high_pass(rgb, sigma))
