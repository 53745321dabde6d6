"""ENTED idea 2 (from NTED, Ren et al. CVPR 2022): neural texture extraction and distribution.

Extraction summarises reference features into K texture vectors with an attention that is a
softmax over reference *positions*; distribution paints them back onto decoder features with an
attention that is a softmax over the K *textures*. Cost is linear in K x C x pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TextureKeys:
    """Per-reference extraction inputs before the softmax, so several references can be joined.

    logits: B x K x N (N = reference positions), values: B x C x N, mask: B x N (True = padding).
    """

    logits: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor | None = None


class TextureExtraction(nn.Module):
    def __init__(self, ref_ch: int, out_ch: int, num_textures: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(8, ref_ch), ref_ch)
        self.attn = nn.Conv2d(ref_ch, num_textures, 1)
        self.value = nn.Conv2d(ref_ch, out_ch, 1)

    def keys(self, ref_feat: torch.Tensor) -> TextureKeys:
        logits = self.attn(self.norm(ref_feat)).flatten(2)
        values = self.value(ref_feat).flatten(2)
        return TextureKeys(logits, values)

    @staticmethod
    def attention(keys: TextureKeys) -> torch.Tensor:
        """A = softmax over all reference positions (the union of every reference given)."""
        logits = keys.logits
        if keys.mask is not None:
            logits = logits.masked_fill(keys.mask[:, None, :], float("-inf"))
        return logits.softmax(dim=2)

    @classmethod
    def textures(cls, keys: TextureKeys, attention: torch.Tensor | None = None) -> torch.Tensor:
        """T = A . V^T  ->  B x K x C (A from `attention(keys)` unless given)."""
        a = cls.attention(keys) if attention is None else attention
        return torch.bmm(a, keys.values.transpose(1, 2))

    def forward(self, ref_feat: torch.Tensor) -> torch.Tensor:
        return self.textures(self.keys(ref_feat))


class TextureDistribution(nn.Module):
    def __init__(self, ch: int, num_textures: int):
        super().__init__()
        self.attn = nn.Conv2d(ch, num_textures, 1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """D = softmax over the K textures, per decoder position -> B x K x H'W'."""
        return self.attn(x).flatten(2).softmax(dim=1)

    def paint(
        self, x: torch.Tensor, textures: torch.Tensor, attention: torch.Tensor
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        painted = torch.bmm(textures.transpose(1, 2), attention).view(b, c, h, w)
        return (x + painted) / math.sqrt(2.0)

    def forward(self, x: torch.Tensor, textures: torch.Tensor) -> torch.Tensor:
        return self.paint(x, textures, self.attention(x))


def join_keys(per_reference: list[TextureKeys]) -> TextureKeys:
    """Concatenate several references of one face along positions (extraction over the union)."""
    logits = torch.cat([k.logits for k in per_reference], dim=2)
    values = torch.cat([k.values for k in per_reference], dim=2)
    masks = [
        k.mask
        if k.mask is not None
        else torch.zeros(
            k.logits.shape[0], k.logits.shape[2], dtype=torch.bool, device=k.logits.device
        )
        for k in per_reference
    ]
    return TextureKeys(logits, values, torch.cat(masks, dim=1))


def stack_keys(per_face: list[TextureKeys]) -> TextureKeys:
    """Batch faces whose references have different position counts, padding with a mask."""
    n_max = max(k.logits.shape[2] for k in per_face)
    logits, values, masks = [], [], []
    for k in per_face:
        pad = n_max - k.logits.shape[2]
        mask = (
            k.mask
            if k.mask is not None
            else torch.zeros(
                k.logits.shape[0], k.logits.shape[2], dtype=torch.bool, device=k.logits.device
            )
        )
        logits.append(F.pad(k.logits, (0, pad)))
        values.append(F.pad(k.values, (0, pad)))
        masks.append(F.pad(mask, (0, pad), value=True))
    return TextureKeys(torch.cat(logits), torch.cat(values), torch.cat(masks))
