"""ENTED idea 3: style codes refined on the reference's high-quality manifold.

A degraded input's own latent is corrupted, so the style vector of every decoder layer starts from
the LQ tokens (w_lq) and is refined by cross-attention over the reference's tokens:
w = w_lq + Attn(w_lq, ref_tokens).
"""

from __future__ import annotations

import torch
from torch import nn


class LQStyleCodes(nn.Module):
    """One style vector per decoder layer from the LQ encoder's 16x16 features."""

    def __init__(self, in_ch: int, style_dim: int, num_layers: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_ch, style_dim), nn.LeakyReLU(0.2), nn.Linear(style_dim, style_dim)
        )
        self.layer_embed = nn.Parameter(torch.zeros(num_layers, style_dim))

    def forward(self, feat16: torch.Tensor) -> torch.Tensor:
        pooled = feat16.mean(dim=(2, 3))
        return self.mlp(pooled)[:, None, :] + self.layer_embed[None]  # B x L x D


class ReferenceStyleRefiner(nn.Module):
    """Cross-attention from the per-layer style vectors to reference tokens."""

    def __init__(self, style_dim: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(style_dim)
        self.attn = nn.MultiheadAttention(style_dim, heads, batch_first=True)
        self.out = nn.Linear(style_dim, style_dim)
        nn.init.zeros_(self.out.weight)  # starts as the identity: w = w_lq
        nn.init.zeros_(self.out.bias)

    def forward(
        self, w_lq: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        attended, _ = self.attn(
            self.norm(w_lq), tokens, tokens, key_padding_mask=mask, need_weights=False
        )
        return w_lq + self.out(attended)


class ReferenceTokens(nn.Module):
    """Projects reference feature maps of some resolutions into style-space tokens."""

    def __init__(self, channels: dict[int, int], style_dim: int):
        super().__init__()
        self.proj = nn.ModuleDict({str(r): nn.Linear(c, style_dim) for r, c in channels.items()})
        self.norm = nn.LayerNorm(style_dim)

    def forward(self, feats: dict[int, torch.Tensor]) -> torch.Tensor:
        tokens = [self.proj[r](feats[int(r)].flatten(2).transpose(1, 2)) for r in self.proj]
        return self.norm(torch.cat(tokens, dim=1))  # B x N x D
