"""Hyper-parameters of the ENTED generator, stored next to the weights as plain JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

# Feature-map resolutions of the 256 model, from the input down to the VQ grid.
RESOLUTIONS = (256, 128, 64, 32, 16)


@dataclass
class EntedConfig:
    size: int = 256
    # Channels per resolution (256, 128, 64, 32, 16) for the LQ encoder, reference encoder, decoder.
    enc_channels: tuple[int, ...] = (32, 64, 128, 256, 256)
    ref_channels: tuple[int, ...] = (32, 64, 128, 256, 256)
    dec_channels: tuple[int, ...] = (32, 64, 128, 256, 256)
    codebook_size: int = 1024
    code_dim: int = 256
    style_dim: int = 256
    attn_heads: int = 4
    # Texture count K of the NTED operators per resolution; resolutions not listed get no NTED op.
    nted_textures: dict[int, int] = field(default_factory=lambda: {16: 16, 32: 32, 64: 64, 128: 64})
    # Reference resolutions whose tokens feed the style cross-attention.
    style_token_res: tuple[int, ...] = (16, 32)
    # Ablation switches: each of the four ENTED ideas can be turned off.
    use_vq: bool = True
    use_nted: bool = True
    use_ref_style: bool = True
    use_residual: bool = True
    # The aligned-reference route (model/guide.py). Off by default so weight files written
    # before it existed keep loading as they were; the presets switch it on.
    use_guide: bool = False
    guide_channels: tuple[int, ...] = (16, 32, 64, 64)  # at 256, 128, 64, 32
    guide_band_sigma: float = (
        5.0  # detail above this Gaussian σ (pixels at 256) can come from the reference
    )
    # Calibration of the trust map that gates the reference's detail band, fitted after training
    # on held-out faces (scripts/calibrate_trust.py); 1 = the trust as trained.
    guide_trust_gain: float = 1.0
    # A face whose warped reference agrees with it at least this well (mean of the agreement map
    # inside the warp's mask, -1..1) takes the reference's whole detail band (full trust);
    # 0 = off. Fitted on held-out faces (scripts/calibrate_agreement.py).
    guide_full_trust_agreement: float = 0.0

    def channels(self, which: str, res: int) -> int:
        table = {"enc": self.enc_channels, "ref": self.ref_channels, "dec": self.dec_channels}[
            which
        ]
        return table[RESOLUTIONS.index(res)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["nted_textures"] = {str(k): v for k, v in self.nted_textures.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EntedConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ENTED config keys: {sorted(unknown)}")
        d = dict(d)
        for key in (
            "enc_channels",
            "ref_channels",
            "dec_channels",
            "style_token_res",
            "guide_channels",
        ):
            if key in d:
                d[key] = tuple(d[key])
        if "nted_textures" in d:
            d["nted_textures"] = {int(k): int(v) for k, v in d["nted_textures"].items()}
        return cls(**d)


PRESETS: dict[str, EntedConfig] = {
    # The release configuration (GPU training).
    "ented-256": EntedConfig(use_guide=True, guide_channels=(16, 32, 64, 128)),
    # Small enough to train on 2 CPU cores in an hour; same architecture, fewer channels.
    "ented-256-preview": EntedConfig(
        enc_channels=(16, 32, 64, 128, 128),
        ref_channels=(16, 32, 64, 128, 128),
        dec_channels=(16, 32, 64, 128, 128),
        codebook_size=512,
        code_dim=128,
        style_dim=128,
        nted_textures={16: 16, 32: 16, 64: 32, 128: 32},
        use_guide=True,
    ),
    # For unit tests: runs in milliseconds.
    "tiny": EntedConfig(
        enc_channels=(8, 8, 16, 16, 16),
        ref_channels=(8, 8, 16, 16, 16),
        dec_channels=(8, 8, 16, 16, 16),
        codebook_size=32,
        code_dim=16,
        style_dim=16,
        attn_heads=2,
        nted_textures={16: 4, 32: 4, 64: 8, 128: 8},
        use_guide=True,
        guide_channels=(4, 8, 8, 8),
    ),
}


def preset(name: str) -> EntedConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return EntedConfig.from_dict(PRESETS[name].to_dict())
