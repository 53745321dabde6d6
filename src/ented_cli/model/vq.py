"""ENTED idea 1: vector-quantised semantics.

The LQ encoder's 16x16 features are replaced by the nearest code words of a codebook learned on
clean faces, so corrupted semantics become clean ones before the decoder sees them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SemanticCodebook(nn.Module):
    """Cosine-distance codebook with a straight-through lookup.

    Both features and code words are L2-normalised: the nearest code is then the one with the
    highest cosine, which keeps codebook usage high without EMA tricks.
    """

    def __init__(self, num_codes: int, dim: int):
        super().__init__()
        self.codes = nn.Parameter(torch.randn(num_codes, dim))

    def normalised_codes(self) -> torch.Tensor:
        return F.normalize(self.codes, dim=1)

    def logits(self, z: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
        """Per-position scores over the codebook (B x N x HW); cross-entropy on them teaches the
        LQ encoder to pick the clean face's code."""
        z = F.normalize(z.flatten(2), dim=1)  # B x D x HW
        return torch.einsum("nd,bdp->bnp", self.normalised_codes(), z) / temperature

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code words for a B x H x W index grid, as B x D x H x W."""
        return self.normalised_codes()[indices].permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (quantised features with straight-through gradient, indices, VQ loss)."""
        b, _, h, w = z.shape
        indices = self.logits(z).argmax(dim=1).view(b, h, w)
        zq = self.lookup(indices)
        zn = F.normalize(z, dim=1)
        # Codebook loss pulls codes to features, commitment loss pulls features to codes.
        loss = F.mse_loss(zq, zn.detach()) + 0.25 * F.mse_loss(zn, zq.detach())
        zq = zn + (zq - zn).detach()
        return zq, indices, loss
