"""The ENTED-256 generator: a pure nn.Module (no I/O, no device logic).

    LQ image ─► LQ encoder ─► 16x16 features ─► semantic VQ ─► decoder 16→256 ─► restored image
                   │  │                                         ▲  ▲   ▲
                   │  └─ tokens ─► style codes ─► ref cross-attn┘  │   │ (modulated convs)
                   └──── per-scale residuals × fidelity ───────────┘   │
    reference(s) ─► reference encoder ─► NTED texture extraction ──────┘ (distribution at 16..128)
    warped reference + mask ─► guide encoder ─► trust-gated injection at 32..256 + detail at 256

Reference features can be computed once (`encode_reference`) and reused for many faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ented_cli.model.config import RESOLUTIONS, EntedConfig
from ented_cli.model.guide import GUIDE_RES, ReferenceGuide, mean_agreement
from ented_cli.model.layers import Encoder, StyledConv, ToRGB
from ented_cli.model.nted import (
    TextureDistribution,
    TextureExtraction,
    TextureKeys,
    join_keys,
    stack_keys,
)
from ented_cli.model.style import LQStyleCodes, ReferenceStyleRefiner, ReferenceTokens
from ented_cli.model.vq import SemanticCodebook

CONVS_PER_RES = 2


@dataclass
class ReferenceFeatures:
    """Everything the generator needs from the reference photo(s) of a batch of faces."""

    keys: dict[int, TextureKeys]
    tokens: torch.Tensor  # B x N x D
    token_mask: torch.Tensor | None = None  # B x N, True = padding

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def select(self, index: int) -> ReferenceFeatures:
        """The features of one batch item (e.g. to cache per reference photo)."""
        sl = slice(index, index + 1)

        def pick(t):
            return None if t is None else t[sl]

        keys = {
            r: TextureKeys(k.logits[sl], k.values[sl], pick(k.mask)) for r, k in self.keys.items()
        }
        return ReferenceFeatures(keys, self.tokens[sl], pick(self.token_mask))

    @staticmethod
    def join(refs: list[ReferenceFeatures]) -> ReferenceFeatures:
        """Several references of the same faces -> one set (attention over their union)."""
        keys = {r: join_keys([f.keys[r] for f in refs]) for r in refs[0].keys}
        tokens = torch.cat([f.tokens for f in refs], dim=1)
        return ReferenceFeatures(keys, tokens, torch.cat([_mask_of(f) for f in refs], dim=1))

    @staticmethod
    def stack(per_face: list[ReferenceFeatures]) -> ReferenceFeatures:
        """Batch faces that have different references (padded and masked)."""
        keys = {r: stack_keys([f.keys[r] for f in per_face]) for r in per_face[0].keys}
        n_max = max(f.tokens.shape[1] for f in per_face)
        tokens = torch.cat(
            [F.pad(f.tokens, (0, 0, 0, n_max - f.tokens.shape[1])) for f in per_face]
        )
        masks = torch.cat(
            [F.pad(_mask_of(f), (0, n_max - f.tokens.shape[1]), value=True) for f in per_face]
        )
        return ReferenceFeatures(keys, tokens, masks)


def _mask_of(f: ReferenceFeatures) -> torch.Tensor:
    if f.token_mask is not None:
        return f.token_mask
    return torch.zeros(f.tokens.shape[:2], dtype=torch.bool, device=f.tokens.device)


class EntedGenerator(nn.Module):
    def __init__(self, config: EntedConfig):
        super().__init__()
        self.config = c = config
        self.lq_encoder = Encoder(c.enc_channels)
        self.pre_quant = nn.Conv2d(c.channels("enc", 16), c.code_dim, 1)
        self.codebook = SemanticCodebook(c.codebook_size, c.code_dim)
        self.post_quant = nn.Conv2d(c.code_dim, c.channels("dec", 16), 1)

        num_styles = len(RESOLUTIONS) * (CONVS_PER_RES + 1)
        self.lq_style = LQStyleCodes(c.channels("enc", 16), c.style_dim, num_styles)
        self.ref_encoder = Encoder(c.ref_channels, skip_full_res=True)
        self.ref_tokens = ReferenceTokens(
            {r: c.channels("ref", r) for r in c.style_token_res}, c.style_dim
        )
        self.style_refiner = ReferenceStyleRefiner(c.style_dim, c.attn_heads)

        self.extract = nn.ModuleDict()
        self.distribute = nn.ModuleDict()
        for r, k in c.nted_textures.items():
            self.extract[str(r)] = TextureExtraction(c.channels("ref", r), c.channels("dec", r), k)
            self.distribute[str(r)] = TextureDistribution(c.channels("dec", r), k)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.residuals = nn.ModuleDict()
        prev = c.channels("dec", 16)
        for r in reversed(RESOLUTIONS):
            ch = c.channels("dec", r)
            self.convs.append(StyledConv(prev, ch, c.style_dim))
            self.convs.append(StyledConv(ch, ch, c.style_dim))
            self.to_rgbs.append(ToRGB(ch, c.style_dim))
            res = nn.Conv2d(c.channels("enc", r), ch, 1)
            nn.init.zeros_(res.weight)  # the stage-1 decoder is unchanged when residuals switch on
            nn.init.zeros_(res.bias)
            self.residuals[str(r)] = res
            prev = ch
        if c.use_guide:
            self.guide = ReferenceGuide(
                c.guide_channels, {r: c.channels("dec", r) for r in GUIDE_RES}
            )

    # -- reference side -------------------------------------------------------------------------
    def encode_reference(self, ref: torch.Tensor) -> ReferenceFeatures:
        """Reference photos B x 3 x 256 x 256 (or B x R x 3 x 256 x 256 for R references per face)."""
        if ref.dim() == 5:
            b, n = ref.shape[:2]
            feats = self.encode_reference(ref.flatten(0, 1))
            return ReferenceFeatures.join(
                [_take(feats, torch.arange(i, b * n, n)) for i in range(n)]
            )
        feats = self.ref_encoder(ref)
        keys = {int(r): self.extract[r].keys(feats[int(r)]) for r in self.extract}
        return ReferenceFeatures(keys, self.ref_tokens(feats))

    # -- input side --------------------------------------------------------------------------
    def quantise(
        self, feat16: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (decoder input, pre-quant features, code indices, VQ loss)."""
        z = self.pre_quant(feat16)
        if self.config.use_vq:
            zq, indices, vq_loss = self.codebook(z)
        else:
            zq, indices, vq_loss = F.normalize(z, dim=1), None, z.new_zeros(())
        return self.post_quant(zq), z, indices, vq_loss

    def forward(
        self,
        lq: torch.Tensor,
        ref: torch.Tensor | ReferenceFeatures | None = None,
        fidelity: float | torch.Tensor = 0.5,
        *,
        guide: torch.Tensor | None = None,
        autoencode: bool = False,
        return_aux: bool = False,
    ):
        """Restore aligned faces `lq` (B x 3 x 256 x 256, [-1, 1]).

        ref: reference photos, precomputed ReferenceFeatures, or None for blind restoration (the
        input then serves as its own reference, as in training). guide: B x 4 x 256 x 256, the
        reference warped onto each input's landmarks (RGB, [-1, 1]) and its validity mask
        (`ented_cli.faces.refwarp`); None = no aligned reference (blind). autoencode: stage-1
        training — no reference, no residual paths, just encoder → codebook → decoder.
        """
        c = self.config
        feats = self.lq_encoder(lq)
        x, z, indices, vq_loss = self.quantise(feats[16])
        styles = self.lq_style(feats[16])

        refs = None
        if not autoencode and (c.use_nted or c.use_ref_style):
            refs = (
                ref
                if isinstance(ref, ReferenceFeatures)
                else self.encode_reference(lq if ref is None else ref)
            )
            if refs.batch_size != lq.shape[0]:
                raise ValueError(
                    f"{refs.batch_size} reference feature sets for {lq.shape[0]} faces"
                )
        if refs is not None and c.use_ref_style:
            styles = self.style_refiner(styles, refs.tokens, refs.token_mask)
        textures, extraction = {}, {}
        if refs is not None and c.use_nted:
            for r, k in refs.keys.items():
                extraction[r] = TextureExtraction.attention(k)
                textures[r] = TextureExtraction.textures(k, extraction[r])
        guide_feats, warped, mask, agree = {}, None, None, None
        if c.use_guide and not autoencode:
            if guide is None:  # blind: an empty guide, exactly as in training
                guide = lq.new_zeros(lq.shape[0], 4, *lq.shape[-2:])
            warped, mask = guide[:, :3], guide[:, 3:4]
            guide_feats, agree = self.guide.encode(lq, warped, mask)
        f = torch.as_tensor(fidelity, dtype=lq.dtype, device=lq.device).reshape(-1, 1, 1, 1)

        rgb, trust, attention = None, {}, {}
        for i, r in enumerate(reversed(RESOLUTIONS)):
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = self.convs[2 * i](x, styles[:, 3 * i])
            x = self.convs[2 * i + 1](x, styles[:, 3 * i + 1])
            if c.use_residual and not autoencode:
                x = x + f * self.residuals[str(r)](feats[r])
            if r in guide_feats:
                x, trust[r] = self.guide.fuse(r, x, guide_feats[r])
            if r in textures:
                dist = self.distribute[str(r)]
                attention[r] = (extraction[r], dist.attention(x))
                x = dist.paint(x, textures[r], attention[r][1])
            rgb = self.to_rgbs[i](x, styles[:, 3 * i + 2], rgb)
        if guide_feats:
            detail_trust = trust[max(trust)]
            if c.guide_trust_gain != 1.0:
                detail_trust = (detail_trust * c.guide_trust_gain).clamp(0, 1)
            if c.guide_full_trust_agreement > 0:
                # A reference that agrees with the input this well (same session, same light)
                # gives its whole detail band: the trained trust map is calibrated on
                # other-day references and leaves such a reference's detail unused.
                agrees = mean_agreement(agree, mask) >= c.guide_full_trust_agreement
                detail_trust = torch.where(
                    agrees.view(-1, 1, 1, 1), torch.ones_like(detail_trust), detail_trust
                )
            rgb = self.guide.add_detail(rgb, warped, mask, detail_trust, c.guide_band_sigma)

        if return_aux:
            return rgb, {
                "z": z,
                "indices": indices,
                "vq_loss": vq_loss,
                "trust": trust,
                "attention": attention,
            }
        return rgb


def _take(refs: ReferenceFeatures, index: torch.Tensor) -> ReferenceFeatures:
    keys = {r: TextureKeys(k.logits[index], k.values[index]) for r, k in refs.keys.items()}
    return ReferenceFeatures(keys, refs.tokens[index])


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
