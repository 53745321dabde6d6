"""Two-stage ENTED trainer (`ented train --config ...`).

Stage 1 learns the semantic codebook as an autoencoder on clean faces. Stage 2 freezes the
codebook and trains the full model on synthetically degraded inputs with a same-identity reference.
The same code runs on CPU, one GPU, or several GPUs under `torchrun` (DistributedDataParallel).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ented_cli.errors import UsageError
from ented_cli.model.config import preset
from ented_cli.model.discriminator import Discriminator
from ented_cli.model.generator import EntedGenerator
from ented_cli.model.restorer import pick_device
from ented_cli.train import losses as L
from ented_cli.train.config import TrainConfig
from ented_cli.train.data import PairDataset, load_training_records
from ented_cli.train.degrade import DegradationConfig, degrade_level, degrade_with_params
from ented_cli.train.perceptual import LPIPS, PerceptualLoss, find_vgg_weights
from ented_cli.train.profile import StepTimer

# NTED's attention-reconstruction weights per scale (the total is losses.attn_recon).
ATTN_SCALES = {16: 1.0, 32: 0.5, 64: 0.25, 128: 0.125}

CHECKPOINT = "checkpoint.pt"


def training_device(name: str, local_rank: int) -> torch.device:
    """The restorer's device choice; under torchrun each process takes its own GPU."""
    device = pick_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


class CodeTeacher(nn.Module):
    """Frozen stage-1 encoder: tells stage 2 which code word the clean face uses at each position."""

    def __init__(self, generator: EntedGenerator):
        super().__init__()
        self.encoder = copy.deepcopy(generator.lq_encoder)
        self.pre_quant = copy.deepcopy(generator.pre_quant)
        self.requires_grad_(False).eval()

    @torch.no_grad()
    def forward(self, hq: torch.Tensor) -> torch.Tensor:
        return self.pre_quant(self.encoder(hq)[16])


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = training_device(cfg.device, local_rank)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + self.rank)
        self.out_dir = Path(cfg.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

        self.model_config = preset(cfg.model)
        self.model_config.use_guide = self.model_config.use_guide and cfg.guide
        self.timer = StepTimer()
        self.G = EntedGenerator(self.model_config).to(self.device)
        self.D = Discriminator(self.model_config.size, width=cfg.disc_width).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.teacher: CodeTeacher | None = None
        if cfg.freeze and cfg.channels_last and self.device.type == "cpu":
            # torch 2.13's CPU (oneDNN) convolution backward crashes on channels_last tensors
            # when the weights need no gradient; frozen modules make exactly that case.
            cfg.channels_last = False
        if self.device.type == "cuda" or cfg.channels_last:
            for m in (self.G, self.D, self.G_ema):
                m.to(memory_format=torch.channels_last)

        vgg = find_vgg_weights()
        self.perceptual = None
        if cfg.losses.perceptual > 0:
            self.perceptual = PerceptualLoss(weights_path=vgg, reduction="none").to(self.device)
        self.lpips_alex = None
        if cfg.losses.lpips_alex > 0:
            from ented_cli.train.lpips_alex import LPIPSAlex

            self.lpips_alex = LPIPSAlex().to(self.device)
        self.D_proj, self.proj_steps, self._alex_features = None, 0, None
        if cfg.losses.gan_proj > 0:
            if self.lpips_alex is None:
                raise UsageError(
                    "losses.gan_proj needs losses.lpips_alex > 0: its heads read those features"
                )
            from ented_cli.train.projected_gan import ProjectedDiscriminator

            self.D_proj = ProjectedDiscriminator().to(self.device)
        self.lpips = LPIPS(vgg).to(self.device)  # evaluation only
        self.landmarks = None
        if self.model_config.use_guide:
            from ented_cli.faces.refwarp import Landmarks68

            self.landmarks = Landmarks68()

        records = load_training_records(Path(cfg.data_root))
        common = {"min_id_consistency": cfg.min_id_consistency, "seed": cfg.seed}
        self.train_set = PairDataset(
            records,
            "train",
            min_native_px=cfg.min_native_px,
            self_ref_prob=cfg.self_ref_prob,
            ref_augment_prob=cfg.ref_augment_prob,
            **common,
        )
        self.val_set = PairDataset(records, "val", self_ref_prob=0.0, hflip=False, **common)

        self.stage, self.step, self.images_seen, self.elapsed = 1, 0, 0, 0.0
        self.history: list[dict] = []
        self.prior = {"minutes": 0.0, "images": 0}
        self._make_optimizers()
        if cfg.resume_from and not (self.out_dir / CHECKPOINT).exists():
            self.start_from_weights(cfg.resume_from)

    def start_from_weights(self, spec: str) -> None:
        """Stage 2 from a shipped weight set (fp16 EMA generator); modules it lacks (e.g. the
        guide route) start fresh, zero-initialised where that keeps the old model's output."""
        from ented_cli.model.weight_lookup import resolve_weights
        from ented_cli.model.weights import load_state_dict

        ws = resolve_weights(spec)
        state = {k: v.float() for k, v in load_state_dict(ws).items()}
        result = self.G.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ValueError(
                f"{spec}: {len(result.unexpected_keys)} tensors this model lacks, e.g. {result.unexpected_keys[0]}"
            )
        self.G_ema.load_state_dict(self.G.state_dict())
        extra = ws.info.get("extra") or {}
        # The campaign's running totals, carried from run to run through the weight files.
        self.prior = {
            "minutes": float(extra.get("cumulative_minutes", extra.get("train_minutes", 0.0))),
            "images": int(extra.get("cumulative_images", extra.get("images_seen", 0))),
        }
        self.stage = 2
        self.cfg.stage1_steps_done = self.step
        self.teacher = CodeTeacher(self.G).to(self.device)
        self._make_optimizers()
        self.log(
            {
                "event": "resume_from_weights",
                "weights": spec,
                "new_tensors": len(result.missing_keys),
                "prior_minutes": self.prior["minutes"],
                "prior_images": self.prior["images"],
            }
        )

    # -- setup --------------------------------------------------------------------------------
    def _make_optimizers(self) -> None:
        fused = self.device.type == "cuda"
        self.G.requires_grad_(True)
        self.G.codebook.requires_grad_(self.stage == 1)
        if self.stage == 2:
            for name, module in self.G.named_children():
                if name in self.cfg.freeze:
                    module.requires_grad_(False)
        named = [(n, p) for n, p in self.G.named_parameters() if p.requires_grad]
        # The guide route starts at zero on top of trained weights: a faster rate lets it catch
        # up in hundreds of steps instead of thousands.
        groups = [
            {"params": [p for n, p in named if not n.startswith("guide.")], "lr": self.cfg.lr},
            {
                "params": [p for n, p in named if n.startswith("guide.")],
                "lr": self.cfg.lr * self.cfg.guide_lr_mult,
            },
        ]
        self.opt_g = torch.optim.AdamW(
            [g for g in groups if g["params"]],
            lr=self.cfg.lr,
            betas=(0.5, 0.99),
            weight_decay=0.0,
            fused=fused,
        )
        self.opt_d = torch.optim.AdamW(
            self.D.parameters(), lr=self.cfg.lr_d, betas=(0.5, 0.99), weight_decay=0.0, fused=fused
        )
        self.opt_dp = None
        if self.D_proj is not None:
            self.opt_dp = torch.optim.AdamW(
                self.D_proj.parameters(), lr=self.cfg.lr_d, betas=(0.5, 0.99), weight_decay=0.0
            )
        self.G_train = self._wrap(self.G)
        self.D_train = self._wrap(self.D)

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.world > 1:
            model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        return torch.compile(model) if self.cfg.compile else model

    def _loader(self) -> DataLoader:
        sampler = DistributedSampler(self.train_set, seed=self.cfg.seed) if self.world > 1 else None
        return DataLoader(
            self.train_set,
            batch_size=self.cfg.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def _batches(self):
        loader, epoch = self._loader(), 0
        while True:
            self.train_set.set_epoch(epoch)
            if isinstance(loader.sampler, DistributedSampler):
                loader.sampler.set_epoch(epoch)
            for batch in loader:
                yield {
                    k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                    for k, v in batch.items()
                }
            epoch += 1

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    # -- losses -------------------------------------------------------------------------------
    def _reconstruction(self, out: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor) -> dict:
        l1 = ((out - gt).abs().mean(dim=(1, 2, 3)) * weight).mean()
        if self.perceptual is None:
            return {"l1": l1, "perceptual": l1.new_zeros(())}
        size = self.cfg.perceptual_size
        if size != out.shape[-1]:
            out = F.interpolate(
                out, size=size, mode="bilinear", antialias=True, align_corners=False
            )
            gt = F.interpolate(gt, size=size, mode="bilinear", antialias=True, align_corners=False)
        return {"l1": l1, "perceptual": (self.perceptual(out.float(), gt.float()) * weight).mean()}

    def _g_step(self, batch: dict) -> dict:
        cfg, w = self.cfg, self.cfg.losses
        gt, weight = batch["gt"], batch["weight"].float()
        if self.stage == 1:
            with self._autocast():
                out, aux = self.G_train(gt, autoencode=True, return_aux=True)
                losses = self._reconstruction(out, gt, weight)
                losses["vq"] = aux["vq_loss"]
            total = w.l1 * losses["l1"] + w.perceptual * losses["perceptual"] + w.vq * losses["vq"]
        else:
            part = self.timer.part
            with part("degrade"):
                lq, params, fidelity = self._degrade(gt)
            ref = batch["ref"].clone()
            blind = torch.rand(gt.shape[0], device=gt.device) < cfg.blind_prob
            ref[blind] = lq[blind]  # blind use stays in-distribution
            with part("reference warps"):
                guide = self.guides(lq, ref, blind)
            with self._autocast():
                with part("generator forward"):
                    out, aux = self.G_train(lq, ref, fidelity, guide=guide, return_aux=True)
                with part("loss l1 + perceptual"):
                    losses = self._reconstruction(out, gt, weight)
                total = w.l1 * losses["l1"] + w.perceptual * losses["perceptual"]
                total = total + self._reference_losses(
                    out, gt, ref, guide, params, aux, weight, losses
                )
                with part("loss code"):
                    total = total + self._code_losses(gt, aux, losses)
                if self._gan_on():
                    self.D.requires_grad_(False)  # the generator's loss must not train D
                    losses["gan"] = F.softplus(-self.D_train(out)).mean()
                    self.D.requires_grad_(True)
                    total = total + w.gan * losses["gan"]
            batch["fake"] = out.detach()
        with self.timer.part("backward"):
            self.opt_g.zero_grad(set_to_none=True)
            total.backward()
        with self.timer.part("optimizer + EMA"):
            self.opt_g.step()
            self._update_ema()
        return {k: float(v.detach()) for k, v in losses.items()}

    def _code_losses(self, gt: torch.Tensor, aux: dict, losses: dict) -> torch.Tensor:
        """The LQ encoder picks the clean face's code words (skipped when it is frozen)."""
        w = self.cfg.losses
        if w.code_ce == 0 and w.code_feat == 0:
            return gt.new_zeros(())
        codebook = self.G.codebook
        target = codebook.logits(self.teacher(gt)).argmax(dim=1)  # B x HW
        losses["code_ce"] = F.cross_entropy(codebook.logits(aux["z"]).float(), target)
        target_words = codebook.normalised_codes()[target].transpose(1, 2)
        losses["code_feat"] = F.mse_loss(
            F.normalize(aux["z"].flatten(2), dim=1).float(), target_words.detach()
        )
        return w.code_ce * losses["code_ce"] + w.code_feat * losses["code_feat"]

    def _degrade(self, gt: torch.Tensor):
        """Inputs, their degradation parameters and fidelity weights for one batch.
        During the warm-up: severe inputs and a weak input residual, so the reference route
        has to carry the detail."""
        cfg = self.cfg
        warm = self.elapsed / 60 < cfg.warmup_minutes
        if warm:
            deg = DegradationConfig(
                downscale=cfg.warmup_downscale, blur_sigma=(2.0, 10.0), jpeg=(30, 80)
            )
            f_max = cfg.warmup_fidelity_max
        else:
            deg = DegradationConfig(downscale=(1.0, cfg.max_downscale))
            f_max = 1.0
        lq, params = degrade_with_params(gt.cpu(), self._seed(), deg)
        fidelity = torch.rand(gt.shape[0], device=gt.device) * f_max
        return lq.to(gt.device), params, fidelity

    def guides(self, lq: torch.Tensor, ref: torch.Tensor, blind: torch.Tensor | None = None):
        """B×4×H×W: each reference warped onto its input's 68 landmarks, plus the validity
        mask; zeros for blind samples (what the generator sees with no reference)."""
        if self.landmarks is None:
            return None
        from ented_cli.faces.refwarp import guide_array, to_uint8
        from ented_cli.model.guide import stack_guides

        lq_np = ((lq.detach().float().cpu().permute(0, 2, 3, 1) + 1) / 2).clip(0, 1).numpy()
        ref_np = ((ref.detach().float().cpu().permute(0, 2, 3, 1) + 1) / 2).clip(0, 1).numpy()
        guides = [
            None
            if blind is not None and bool(blind[i])
            else guide_array(
                ref_np[i], self.landmarks(to_uint8(ref_np[i])), self.landmarks(to_uint8(lq_np[i]))
            )
            for i in range(lq.shape[0])
        ]
        return stack_guides(guides, lq.shape[-1]).to(lq.device)

    def _reference_losses(self, out, gt, ref, guide, params, aux, weight, losses) -> torch.Tensor:
        """The cheap image terms and the losses on the reference route (losses.py)."""
        from ented_cli.model.guide import trust_target

        w = self.cfg.losses

        def target():
            with torch.no_grad():
                return trust_target(
                    guide[:, :3], gt, guide[:, 3:4], self.model_config.guide_band_sigma
                )

        def lpips_alex():
            if self.D_proj is None:
                return self.lpips_alex(out.float(), gt.float())
            dist, fake, real = self.lpips_alex.with_features(out.float(), gt.float())
            self._alex_features = (fake, real)  # for the projected heads (projected_gan.py)
            return dist

        available = {
            "lpips_alex": lpips_alex,
            "ms_l1": lambda: L.multiscale_l1(out, gt),
            "fft": lambda: L.fft_l1(out, gt),
            "attn_recon": lambda: L.attention_reconstruction(
                aux["attention"], ref, gt, ATTN_SCALES
            ),
            "trust": lambda: L.trust_loss(aux["trust"], target(), guide[:, 3:4]),
            "degrade_consistency": lambda: L.degradation_consistency(out, gt, params),
        }
        needs = {"attn_recon": bool(aux["attention"]), "trust": bool(aux["trust"])}
        terms = {}
        for name, fn in available.items():
            if getattr(w, name) > 0 and needs.get(name, True):
                with self.timer.part(f"loss {name}"):
                    terms[name] = fn()
        total = out.new_zeros(())
        for name, per_image in terms.items():
            losses[name] = (per_image * weight).mean()
            total = total + getattr(w, name) * losses[name]
        if self._alex_features is not None and self.proj_steps >= self.cfg.gan_proj_start:
            from ented_cli.train.projected_gan import generator_loss

            with self.timer.part("loss gan_proj"):
                losses["gan_proj"] = generator_loss(self.D_proj, self._alex_features[0])
            total = total + w.gan_proj * losses["gan_proj"]
        return total

    def _d_proj_step(self) -> dict:
        """One step of the projected heads on this batch's LPIPS features (fake vs real)."""
        from ented_cli.train.projected_gan import discriminator_loss

        with self.timer.part("projected D step"):
            fake, real = self._alex_features
            self._alex_features = None
            loss = discriminator_loss(self.D_proj, fake, real)
            self.opt_dp.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_dp.step()
        self.proj_steps += 1
        return {"d_proj": float(loss.detach())}

    def _gan_on(self) -> bool:
        return (
            self.stage == 2
            and self.cfg.losses.gan > 0
            and self.step >= self.cfg.stage1_steps_done + self.cfg.gan_start
        )

    def _d_step(self, batch: dict) -> dict:
        real, fake = batch["gt"], batch["fake"]
        with self._autocast():
            loss = F.softplus(self.D_train(fake)).mean() + F.softplus(-self.D_train(real)).mean()
        out = {"d": float(loss.detach())}
        if self.step % self.cfg.r1_every == 0:
            real = real.detach().requires_grad_(True)
            score = self.D_train(real).float()
            (grad,) = torch.autograd.grad(score.sum(), real, create_graph=True)
            r1 = grad.square().sum(dim=(1, 2, 3)).mean()
            loss = loss + self.cfg.r1_gamma / 2 * r1 * self.cfg.r1_every
            out["r1"] = float(r1.detach())
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return out

    def _seed(self) -> int:
        return (self.cfg.seed * 1_000_003 + self.step) * self.world + self.rank

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p.detach(), 1 - decay)

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, level: str | None = None) -> dict:
        """Held-out identities: PSNR/SSIM/LPIPS of the restoration and of the input, and the
        reference-use probes — how much the output changes when the reference is dropped
        (`ref_effect`) or swapped for another person's (`swap_effect`), both in 1/255 units,
        and the gradient norm of the L1 loss with respect to the reference (`ref_grad`)."""
        from ented_cli.evaluation.metrics import psnr, ssim

        level = level or self.cfg.eval_level
        self.val_set.set_epoch(0)
        n = min(self.cfg.eval_images, len(self.val_set))
        loader = DataLoader(torch.utils.data.Subset(self.val_set, range(n)), batch_size=min(8, n))
        sums: dict[str, float] = {}

        def add(key: str, value: torch.Tensor) -> None:
            sums[key] = sums.get(key, 0.0) + float(value.sum())

        grad_done = False
        for batch in loader:
            gt, ref = batch["gt"].to(self.device), batch["ref"].to(self.device)
            lq = degrade_level(gt, level)
            if self.stage == 1:
                out = self.G_ema(gt, autoencode=True).float().clamp(-1, 1)
            else:
                out = self.G_ema(lq, ref, 0.5, guide=self.guides(lq, ref)).float().clamp(-1, 1)
                blind = self.G_ema(lq, None, 0.5).float().clamp(-1, 1)
                wrong = ref.roll(1, dims=0)  # the next face: another person in the val order
                swapped = (
                    self.G_ema(lq, wrong, 0.5, guide=self.guides(lq, wrong)).float().clamp(-1, 1)
                )
                add("ref_effect", (out - blind).abs().mean(dim=(1, 2, 3)) * 127.5)
                add("swap_effect", (out - swapped).abs().mean(dim=(1, 2, 3)) * 127.5)
                add("blind_lpips", self.lpips(blind, gt))
                if not grad_done:
                    sums["ref_grad"] = self._reference_gradient(lq, ref, gt) * n
                    grad_done = True
            for name, img in (("out", out), ("lq", lq)):
                for metric, fn in (("psnr", psnr), ("ssim", ssim), ("lpips", self.lpips)):
                    add(f"{name}_{metric}", fn(img, gt))
        return {k: round(v / n, 5) for k, v in sums.items()} | {"level": level}

    def _reference_gradient(self, lq: torch.Tensor, ref: torch.Tensor, gt: torch.Tensor) -> float:
        """‖∂ L1(out, gt) / ∂ (reference and warped reference)‖ on one batch of the EMA model."""
        with torch.enable_grad():
            ref = ref.clone().requires_grad_(True)
            guide = self.guides(lq, ref)
            if guide is not None:
                guide = guide.clone().requires_grad_(True)
            out = self.G_ema(lq, ref, 0.5, guide=guide)
            inputs = [ref] + ([guide] if guide is not None else [])
            grads = torch.autograd.grad((out - gt).abs().mean(), inputs, allow_unused=True)
        return float(sum(g.norm() ** 2 for g in grads if g is not None) ** 0.5)

    # -- checkpoints ----------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "D_proj": None if self.D_proj is None else self.D_proj.state_dict(),
            "opt_dp": None if self.opt_dp is None else self.opt_dp.state_dict(),
            "proj_steps": self.proj_steps,
            "stage": self.stage,
            "step": self.step,
            "images_seen": self.images_seen,
            "elapsed": self.elapsed,
            "stage1_steps_done": self.cfg.stage1_steps_done,
            "history": self.history,
            "prior": self.prior,
            "config": self.cfg.to_dict(),
            "model_config": self.model_config.to_dict(),
        }

    def save_checkpoint(self) -> Path:
        path = self.out_dir / CHECKPOINT
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        # weights_only: a checkpoint is data, never code.
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.stage, self.step = state["stage"], state["step"]
        self.images_seen, self.elapsed = state["images_seen"], state["elapsed"]
        self.cfg.stage1_steps_done = state["stage1_steps_done"]
        self.history = state["history"]
        self.prior = state.get("prior", {"minutes": 0.0, "images": 0})
        if state["teacher"] is not None:
            self.teacher = CodeTeacher(self.G).to(self.device)
            self.teacher.load_state_dict(state["teacher"])
        self._make_optimizers()
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.D_proj is not None and state.get("D_proj") is not None:
            self.D_proj.load_state_dict(state["D_proj"])
            self.opt_dp.load_state_dict(state["opt_dp"])
            self.proj_steps = state.get("proj_steps", 0)

    # -- main loop ------------------------------------------------------------------------------
    def _campaign(self) -> dict:
        """Cumulative CPU/GPU-minutes and images over every run that led to these weights."""
        return {
            "cumulative_minutes": round(self.prior["minutes"] + self.elapsed / 60, 2),
            "cumulative_images": self.prior["images"] + self.images_seen,
        }

    def _stage_over(self) -> bool:
        cfg = self.cfg
        minutes = self.elapsed / 60
        if self.stage == 1:
            timed_out = (
                cfg.max_minutes > 0 and minutes >= cfg.max_minutes * cfg.stage1_fraction_of_time
            )
            return self.step >= cfg.stage1_steps or timed_out
        timed_out = cfg.max_minutes > 0 and minutes >= cfg.max_minutes
        return self.step >= cfg.stage1_steps_done + cfg.stage2_steps or timed_out

    def _start_stage2(self) -> None:
        self.cfg.stage1_steps_done = self.step
        self.stage = 2
        self.teacher = CodeTeacher(self.G).to(self.device)
        # The EMA of stage 1 is the better autoencoder; stage 2 starts from it.
        self.G.load_state_dict(self.G_ema.state_dict())
        self._make_optimizers()
        self.log({"event": "stage2", "step": self.step})

    def log(self, record: dict) -> None:
        if self.rank != 0:
            return
        if "eval" in record:
            self.history.append(record)
        line = json.dumps(record)
        with open(self.out_dir / "log.jsonl", "a") as f:
            f.write(line + "\n")
        print(line, file=sys.stderr, flush=True)

    def run(self) -> None:
        cfg = self.cfg
        ckpt = self.out_dir / CHECKPOINT
        if ckpt.exists():
            self.load_checkpoint(ckpt)
            self.log({"event": "resumed", "step": self.step, "stage": self.stage})
        batches = self._batches()
        t_last_ckpt = t_log = time.time()
        images_at_log = self.images_seen
        while True:
            if self._stage_over():
                if self.stage == 1:
                    self._start_stage2()
                    continue
                break
            t0 = time.time()
            batch = next(batches)
            self.G_train.train()
            losses = self._g_step(batch)
            if self._gan_on():
                losses.update(self._d_step(batch))
            if self._alex_features is not None:
                losses.update(self._d_proj_step())
            self.step += 1
            self.images_seen += batch["gt"].shape[0] * self.world
            self.elapsed += time.time() - t0
            if self.step % cfg.log_every == 0:
                now = time.time()
                rate = (self.images_seen - images_at_log) / (now - t_log)
                t_log, images_at_log = now, self.images_seen
                record = {
                    "step": self.step,
                    "stage": self.stage,
                    "img_per_s": round(rate, 2),
                    "minutes": round(self.elapsed / 60, 2),
                    **{k: round(v, 4) for k, v in losses.items()},
                }
                if self.device.type == "cuda":
                    record["gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                self.log(record)
            if self.step % cfg.eval_every == 0 and self.rank == 0:
                self.log(
                    {
                        "eval": self.evaluate(),
                        "step": self.step,
                        "stage": self.stage,
                        **self._campaign(),
                    }
                )
            if time.time() - t_last_ckpt > cfg.checkpoint_minutes * 60 and self.rank == 0:
                self.save_checkpoint()
                self.export(self.out_dir / "export", measure=False)
                t_last_ckpt = time.time()
        if self.rank == 0:
            self.log(
                {"eval": self.evaluate(), "step": self.step, "stage": self.stage, "final": True}
            )
            self.save_checkpoint()
            self.export(self.out_dir / "export")

    def export(self, out_dir: Path, name: str | None = None, measure: bool = True) -> Path:
        from ented_cli.train.export import export_generator

        return export_generator(self, out_dir, name or self.cfg.export_name(), measure)
