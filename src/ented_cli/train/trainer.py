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

from ented_cli.model.config import preset
from ented_cli.model.discriminator import Discriminator
from ented_cli.model.generator import EntedGenerator
from ented_cli.restorer import pick_device
from ented_cli.train.config import TrainConfig
from ented_cli.train.data import PairDataset, load_training_records
from ented_cli.train.degrade import degrade, degrade_level
from ented_cli.train.perceptual import LPIPS, PerceptualLoss, find_vgg_weights

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
        torch.manual_seed(cfg.seed + self.rank)
        self.out_dir = Path(cfg.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

        self.model_config = preset(cfg.model)
        self.G = EntedGenerator(self.model_config).to(self.device)
        self.D = Discriminator(self.model_config.size, width=cfg.disc_width).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.teacher: CodeTeacher | None = None
        if self.device.type == "cuda":
            for m in (self.G, self.D, self.G_ema):
                m.to(memory_format=torch.channels_last)

        vgg = find_vgg_weights()
        self.perceptual = PerceptualLoss(weights_path=vgg, reduction="none").to(self.device)
        self.lpips = LPIPS(vgg).to(self.device)

        records = load_training_records(Path(cfg.data_root))
        common = {"min_id_consistency": cfg.min_id_consistency, "seed": cfg.seed}
        self.train_set = PairDataset(
            records,
            "train",
            min_native_px=cfg.min_native_px,
            self_ref_prob=cfg.self_ref_prob,
            **common,
        )
        self.val_set = PairDataset(records, "val", self_ref_prob=0.0, hflip=False, **common)

        self.stage, self.step, self.images_seen, self.elapsed = 1, 0, 0, 0.0
        self.history: list[dict] = []
        self._make_optimizers()

    # -- setup --------------------------------------------------------------------------------
    def _make_optimizers(self) -> None:
        fused = self.device.type == "cuda"
        params = [
            p
            for n, p in self.G.named_parameters()
            if self.stage == 1 or not n.startswith("codebook.")
        ]
        self.G.codebook.requires_grad_(self.stage == 1)
        self.opt_g = torch.optim.AdamW(
            params, lr=self.cfg.lr, betas=(0.5, 0.99), weight_decay=0.0, fused=fused
        )
        self.opt_d = torch.optim.AdamW(
            self.D.parameters(), lr=self.cfg.lr_d, betas=(0.5, 0.99), weight_decay=0.0, fused=fused
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
            lq = degrade(gt, seed=self._seed())
            ref = batch["ref"].clone()
            blind = torch.rand(gt.shape[0], device=gt.device) < cfg.blind_prob
            ref[blind] = lq[blind]  # blind use stays in-distribution
            fidelity = torch.rand(gt.shape[0], device=gt.device)
            with self._autocast():
                out, aux = self.G_train(lq, ref, fidelity, return_aux=True)
                losses = self._reconstruction(out, gt, weight)
                codebook = self.G.codebook
                target = codebook.logits(self.teacher(gt)).argmax(dim=1)  # B x HW
                losses["code_ce"] = F.cross_entropy(codebook.logits(aux["z"]).float(), target)
                target_words = codebook.normalised_codes()[target].transpose(1, 2)
                losses["code_feat"] = F.mse_loss(
                    F.normalize(aux["z"].flatten(2), dim=1).float(), target_words.detach()
                )
                total = (
                    w.l1 * losses["l1"]
                    + w.perceptual * losses["perceptual"]
                    + w.code_ce * losses["code_ce"]
                    + w.code_feat * losses["code_feat"]
                )
                if self._gan_on():
                    self.D.requires_grad_(False)  # the generator's loss must not train D
                    losses["gan"] = F.softplus(-self.D_train(out)).mean()
                    self.D.requires_grad_(True)
                    total = total + w.gan * losses["gan"]
            batch["fake"] = out.detach()
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        self._update_ema()
        return {k: float(v.detach()) for k, v in losses.items()}

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
    def evaluate(self, level: str = "medium") -> dict:
        """PSNR/SSIM/LPIPS on held-out identities, for the restoration and for the input itself."""
        from ented_cli.metrics import psnr, ssim

        self.val_set.set_epoch(0)
        n = min(self.cfg.eval_images, len(self.val_set))
        loader = DataLoader(torch.utils.data.Subset(self.val_set, range(n)), batch_size=min(8, n))
        sums: dict[str, float] = {}
        for batch in loader:
            gt, ref = batch["gt"].to(self.device), batch["ref"].to(self.device)
            lq = degrade_level(gt, level)
            if self.stage == 1:
                out = self.G_ema(gt, autoencode=True)
            else:
                out = self.G_ema(lq, ref, 0.5)
            out = out.float().clamp(-1, 1)
            for name, img in (("out", out), ("lq", lq)):
                for metric, fn in (("psnr", psnr), ("ssim", ssim), ("lpips", self.lpips)):
                    sums[f"{name}_{metric}"] = sums.get(f"{name}_{metric}", 0.0) + float(
                        fn(img, gt).sum()
                    )
        return {k: v / n for k, v in sums.items()}

    # -- checkpoints ----------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "stage": self.stage,
            "step": self.step,
            "images_seen": self.images_seen,
            "elapsed": self.elapsed,
            "stage1_steps_done": self.cfg.stage1_steps_done,
            "history": self.history,
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
        if state["teacher"] is not None:
            self.teacher = CodeTeacher(self.G).to(self.device)
            self.teacher.load_state_dict(state["teacher"])
        self._make_optimizers()
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])

    # -- main loop ------------------------------------------------------------------------------
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
                self.log({"eval": self.evaluate(), "step": self.step, "stage": self.stage})
            if time.time() - t_last_ckpt > cfg.checkpoint_minutes * 60 and self.rank == 0:
                self.save_checkpoint()
                self.export(self.out_dir / "export")
                t_last_ckpt = time.time()
        if self.rank == 0:
            self.log(
                {"eval": self.evaluate(), "step": self.step, "stage": self.stage, "final": True}
            )
            self.save_checkpoint()
            self.export(self.out_dir / "export")

    def export(self, out_dir: Path, name: str | None = None) -> Path:
        from ented_cli.train.export import export_generator

        return export_generator(self, out_dir, name or f"{self.cfg.model}")
