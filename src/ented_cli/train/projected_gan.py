"""A projected discriminator (Sauer et al., "Projected GANs Converge Faster", 2021) for CPU
training: small trainable heads on the frozen AlexNet-LPIPS features that the `lpips_alex` loss
computes anyway.

Why: a pixel discriminator trained from scratch needs days of GPU to say anything useful; heads
on pretrained features tell real skin, hair and eye texture from a smooth guess within a few
hundred steps. And the features are free: the generator's adversarial term reuses the output's
features from the LPIPS loss (one AlexNet pass for both), and the discriminator step sees only
those features, detached, against the ground truth's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ented_cli.train.lpips_alex import ALEX_LAYOUT

# AlexNet layers the heads look at: conv2 (31 px, fine texture) to conv5 (15 px, parts).
HEAD_LAYERS = (1, 2, 3, 4)


class ProjectedDiscriminator(nn.Module):
    """One patch head per feature layer; the logit is the mean over heads and positions."""

    def __init__(self, width: int = 64, layers: tuple[int, ...] = HEAD_LAYERS):
        super().__init__()
        self.layers = layers
        self.heads = nn.ModuleList()
        for i in layers:
            channels = ALEX_LAYOUT[i][1]
            self.heads.append(
                nn.Sequential(
                    spectral_norm(nn.Conv2d(channels, width, 3, padding=1)),
                    nn.LeakyReLU(0.2),
                    spectral_norm(nn.Conv2d(width, 1, 1)),
                )
            )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """B logits from the unit-normalised LPIPS features of a batch."""
        logits = []
        for head, i in zip(self.heads, self.layers):
            x = features[i]
            # LPIPS features have unit norm per position; × sqrt(C) gives unit-scale channels.
            logits.append(head(x * x.shape[1] ** 0.5).mean(dim=(1, 2, 3)))
        return torch.stack(logits).mean(dim=0)


def generator_loss(disc: ProjectedDiscriminator, fake: list[torch.Tensor]) -> torch.Tensor:
    """Non-saturating loss for the generator; `disc` gets no gradient from it."""
    disc.requires_grad_(False)
    loss = F.softplus(-disc(fake)).mean()
    disc.requires_grad_(True)
    return loss


def discriminator_loss(
    disc: ProjectedDiscriminator, fake: list[torch.Tensor], real: list[torch.Tensor]
) -> torch.Tensor:
    fake = [f.detach() for f in fake]
    real = [r.detach() for r in real]
    return F.softplus(disc(fake)).mean() + F.softplus(-disc(real)).mean()
