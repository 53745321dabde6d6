"""Training configuration: a TOML file whose keys mirror `TrainConfig` (see configs/ for examples)."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ented_cli.errors import UsageError


@dataclass
class LossWeights:
    l1: float = 1.0
    perceptual: float = 1.0
    gan: float = 0.1
    vq: float = 1.0  # codebook + commitment (stage 1)
    code_ce: float = 0.5  # LQ features pick the clean face's code (stage 2)
    code_feat: float = 1.0  # LQ features close to the clean code words (stage 2)
    # Cheap terms (no loss network but AlexNet-LPIPS) and the reference-path losses (losses.py).
    lpips_alex: float = 0.0
    ms_l1: float = 0.0
    fft: float = 0.0
    attn_recon: float = 0.0  # NTED attention reconstruction, split over scales as ATTN_SCALES
    trust: float = 0.0  # guide trust map vs where the warped reference agrees with the GT
    degrade_consistency: float = 0.0
    # Heads on the frozen AlexNet-LPIPS features (projected_gan.py); needs lpips_alex > 0.
    gan_proj: float = 0.0


@dataclass
class TrainConfig:
    model: str = "ented-256"  # preset name from ented_cli.model.config.PRESETS
    data_root: str = "../shared/data"
    out_dir: str = "runs/ented-256"
    stage1_steps: int = 20000  # codebook autoencoder on clean faces
    stage2_steps: int = 80000  # full model on degraded inputs, codebook frozen
    batch_size: int = 16
    lr: float = 2e-4
    lr_d: float = 2e-4
    disc_width: float = 1.0
    r1_gamma: float = 10.0
    r1_every: int = 16  # lazy R1 regularisation
    gan_start: int = 2000  # stage-2 steps before the adversarial loss switches on
    gan_proj_start: int = 100  # steps of this run the projected heads train before G hears them
    ema_decay: float = 0.999
    blind_prob: float = 0.1  # reference replaced by the degraded input itself
    self_ref_prob: float = 0.2
    min_id_consistency: float = 0.2
    min_native_px: float = 0.0
    perceptual_size: int = 256  # VGG runs on images resized to this (smaller = cheaper on CPU)
    num_workers: int = 4
    log_every: int = 50
    eval_every: int = 2000
    eval_images: int = 64
    eval_level: str = "medium"  # degradation level of the in-training evaluation
    checkpoint_minutes: float = 4.0
    max_minutes: float = 0.0  # 0 = no wall-clock limit; else stop (and checkpoint) after this long
    stage1_fraction_of_time: float = 0.25  # with max_minutes: share of the time for stage 1
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    losses: LossWeights = field(default_factory=LossWeights)
    # Reference-first schedule (TRAINING.md): severe-only inputs and a weak input residual for
    # the first `warmup_minutes`, then the broad mix up to ×`max_downscale`.
    # Module-name prefixes of the generator kept fixed (e.g. encoders already trained): the
    # backward pass stops before them, a cheaper step on CPU.
    freeze: tuple[str, ...] = ()
    guide_lr_mult: float = 1.0  # learning-rate factor for the guide route's parameters
    guide: bool = True  # the model's aligned-reference route (off = ablation / the old model)
    resume_from: str = (
        ""  # a weight set (e.g. weights/ented-256-preview.json): start stage 2 from it
    )
    warmup_minutes: float = 0.0
    warmup_downscale: tuple[float, float] = (8.0, 16.0)
    warmup_fidelity_max: float = 0.3
    max_downscale: float = 8.0
    ref_augment_prob: float = 0.0  # other-photo references get flip/affine/colour jitter
    channels_last: bool = False  # ≈30 % faster on CPU too
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    stage1_steps_done: int = 0  # bookkeeping: the step at which stage 2 began (set by the trainer)

    def to_dict(self) -> dict:
        return asdict(self)

    def export_name(self) -> str:
        """The name of the weight set a run exports: the model and the run's folder, and never
        the name of a bundled set, which a user's own run must not shadow (`ented weights list`,
        `--weights NAME`)."""
        from ented_cli.model.weight_lookup import bundled_weights_dir

        run = Path(self.out_dir).name
        name = run if run.startswith(self.model) else f"{self.model}-{run}"
        bundled = {p.stem for p in bundled_weights_dir().glob("*.json")}
        return f"{name}-trained" if name in bundled else name

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"unknown training config keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "losses" in d:
            lw_known = {f.name for f in fields(LossWeights)}
            bad = set(d["losses"]) - lw_known
            if bad:
                raise UsageError(f"unknown loss weights: {', '.join(sorted(bad))}")
            d["losses"] = LossWeights(**d["losses"])
        if "freeze" in d:
            d["freeze"] = tuple(d["freeze"])
        if "warmup_downscale" in d:
            d["warmup_downscale"] = tuple(d["warmup_downscale"])
        return cls(**d)

    @classmethod
    def load(cls, path: Path, overrides: dict | None = None) -> TrainConfig:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UsageError(
                f"{path}: training config not found; see configs/ for examples"
            ) from None
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"{path}: not valid TOML ({e})") from None
        data.update(overrides or {})
        return cls.from_dict(data)
