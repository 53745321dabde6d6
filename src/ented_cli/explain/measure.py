"""Which input cells and which reference cells a restored region relies on (no I/O).

The measure of Cheng et al. (CVPR 2020, "Explaining Knowledge Distillation by Quantifying the
Knowledge"), adapted to a reference-based restorer:

* Units. Each image the restorer sees (the degraded face and every reference) is cut into a
  `cells` x `cells` grid (16 x 16 on the 256 crop: 16 px cells). Every cell i gets a noise level
  σ_i and its entropy H_i = log σ_i (the Gaussian entropy up to a constant, which cancels).
* Noise. The perturbation is low-frequency: standard normal values on a `noise_cells` grid,
  upsampled bicubically to 256 and scaled by the smoothly upsampled σ map. A restorer is trained
  to remove fine noise, so per-pixel noise would look "discarded" everywhere.
* Objective. The paper learns σ by minimising  D(σ) − λ·mean_i H_i , where D is the change of
  the network's output (here: the restored pixels inside the region, divided by their variance),
  and, for fairness, stops at a fixed mean entropy so that models are compared at equal total
  discarded information. We impose that rule exactly: H = H* + u − mean(u), so mean H = H*
  (= log `target_sigma`) at every step, and minimise D over u; λ is then the multiplier of the
  constraint, and the optimum is the paper's stationary point ∂D/∂H_i = λ for every cell, at the
  λ that makes the mean entropy H*. The result no longer depends on when optimisation stops.
  The mean runs over the input and all references together: cells compete for one budget, so a
  cell the output does not need is given more noise and a cell it needs is given less.
* Knowledge points. A cell is a knowledge point when its entropy is below the background's by
  more than b = 0.2 nats. The paper's background is the image outside the object's box; on an
  aligned crop that is the outer ring of cells (`border` cells wide: 32 px of hair, neck and
  backdrop), pooled over the input and the references so both sides are judged on one scale.
* Reliance. R = reference points / (reference points + input points), per region, counting the
  foreground points (inside the ring), as the paper counts the object's points; points on the
  ring are reported apart as background points.

`restore(lq, refs)` must be differentiable: lq is B x 3 x H x W in [-1, 1], refs B x N x 3 x H x W.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

RestoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Settings:
    steps: int = 30  # optimisation steps of the σ grids
    samples: int = 2  # noise draws per step (and per map of the restored panel)
    cells: int = 16  # σ grid per image (16 x 16 cells on the 256 crop)
    noise_cells: int = 32  # grid of the noise itself before bicubic upsampling (8 px blobs)
    target_sigma: float = 0.1  # mean entropy H* = log(target_sigma), σ in [-1, 1] pixel units
    span: float = 3.0  # cells stay within H* ± span (σ from target/20 to target*20)
    lr: float = 0.15  # Adam step on the entropies (nats)
    b: float = 0.2  # knowledge point: entropy below the background's by more than b
    border: int = 2  # background = the outer ring of cells this wide
    seed: int = 0
    max_batch: int = 16  # restorer calls are split into batches of at most this many images

    @property
    def target_entropy(self) -> float:
        return math.log(self.target_sigma)


@dataclass
class RegionExplanation:
    """What one output region relies on. Image 0 is the degraded input, 1.. the references."""

    region: str
    entropy: np.ndarray  # (1 + N) x cells x cells, H = log σ per cell (mean over all = H*)
    background: float  # mean entropy of the outer ring (all images)
    points: np.ndarray  # bool, same shape: knowledge points
    distortion: float  # output change in the region at the learned σ, / the region's variance
    ref_share: np.ndarray | None = None  # H x W: share of the output's change due to the refs
    settings: Settings = field(default_factory=Settings)

    @property
    def foreground(self) -> np.ndarray:
        """cells x cells bool: the cells inside the background ring."""
        return ~ring(self.entropy.shape[-1], self.settings.border)

    @property
    def input_points(self) -> int:
        return int(self.points[0][self.foreground].sum())

    @property
    def ref_points_each(self) -> list[int]:
        return [int(p[self.foreground].sum()) for p in self.points[1:]]

    @property
    def ref_points(self) -> int:
        return sum(self.ref_points_each)

    @property
    def background_points(self) -> int:
        """Knowledge points on the ring (input and references): the paper's N_bg."""
        return int(self.points[:, ~self.foreground].sum())

    @property
    def reliance(self) -> float | None:
        """R = reference points / all points; None when the region has no knowledge point."""
        total = self.ref_points + self.input_points
        return self.ref_points / total if total else None

    def drop(self) -> np.ndarray:
        """How far each cell's entropy is below the background (nats, 0 when above)."""
        return np.maximum(self.background - self.entropy, 0.0)

    def to_json(self, maps: bool = True) -> dict:
        out = {
            "reliance": None if self.reliance is None else round(self.reliance, 4),
            "input_points": self.input_points,
            "ref_points": self.ref_points,
            "ref_points_each": self.ref_points_each,
            "background_points": self.background_points,
            "background_entropy": round(self.background, 4),
            "distortion": round(self.distortion, 5),
        }
        if maps:
            out["entropy"] = np.round(self.entropy, 3).tolist()
        return out


def _as_batch(lq: torch.Tensor, refs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One face: lq -> 1 x 3 x H x W, refs -> 1 x N x 3 x H x W."""
    if lq.dim() == 3:
        lq = lq[None]
    if refs.dim() == 3:
        refs = refs[None, None]
    elif refs.dim() == 4:  # N references of the one face
        refs = refs[None]
    if lq.shape[0] != 1 or refs.shape[0] != 1:
        raise ValueError("explain one face at a time: lq 1 x 3 x H x W, refs 1 x N x 3 x H x W")
    if refs.shape[-2:] != lq.shape[-2:]:
        raise ValueError(
            f"references are {tuple(refs.shape[-2:])}, the input {tuple(lq.shape[-2:])}"
        )
    return lq, refs


def ring(cells: int, width: int) -> np.ndarray:
    """cells x cells bool: the outer ring of cells, `width` wide."""
    inner = np.zeros((cells, cells), bool)
    inner[width : cells - width, width : cells - width] = True
    return ~inner


class _Perturber:
    """Low-frequency noise with a per-cell σ, for a stack of images (G x S x U x 3 x H x W)."""

    def __init__(self, settings: Settings, size: tuple[int, int], device: torch.device):
        self.s, self.size, self.device = settings, size, device
        self.gen = torch.Generator().manual_seed(settings.seed)
        # Bicubic upsampling averages neighbouring draws; this rescales the noise to unit variance.
        probe = self._upsample(
            torch.randn(
                64,
                1,
                settings.noise_cells,
                settings.noise_cells,
                generator=torch.Generator().manual_seed(1),
            )
        )
        self.gain = float(1.0 / probe.std())

    def _upsample(self, grid: torch.Tensor) -> torch.Tensor:
        return F.interpolate(grid, size=self.size, mode="bicubic", align_corners=False)

    def sigma_map(self, entropy: torch.Tensor) -> torch.Tensor:
        """G x U x c x c entropies -> G x U x H x W smooth σ."""
        g, u, c, _ = entropy.shape
        sigma = torch.exp(entropy).reshape(g * u, 1, c, c)
        return F.interpolate(sigma, size=self.size, mode="bilinear", align_corners=False).reshape(
            g, u, *self.size
        )

    def noise(self, shape: tuple[int, ...]) -> torch.Tensor:
        """shape = (G, S, U): unit-variance low-frequency noise G x S x U x 3 x H x W."""
        n = self.s.noise_cells
        count = math.prod(shape) * 3
        z = torch.randn(count, 1, n, n, generator=self.gen)
        return (self._upsample(z) * self.gain).reshape(*shape, 3, *self.size).to(self.device)


def _restore_chunked(
    restore: RestoreFn, lq: torch.Tensor, refs: torch.Tensor, max_batch: int
) -> torch.Tensor:
    outs = [
        restore(lq[i : i + max_batch], refs[i : i + max_batch])
        for i in range(0, lq.shape[0], max_batch)
    ]
    return torch.cat(outs).float()


def explain(
    restore: RestoreFn,
    lq: torch.Tensor,
    refs: torch.Tensor,
    masks: Mapping[str, np.ndarray | torch.Tensor],
    settings: Settings = Settings(),
    on_step: Callable[[int], None] | None = None,
    ref_share: bool = True,
) -> dict[str, RegionExplanation]:
    """Learn one σ grid per image for each output region in `masks` ({name: H x W in [0, 1]}).

    lq: the aligned degraded face (1 x 3 x H x W or 3 x H x W, [-1, 1]); refs: its reference(s)
    (1 x N x 3 x H x W, N x 3 x H x W or 3 x H x W). `on_step(i)` is called after each step.
    With `ref_share`, also maps which share of each restored pixel's change comes from the
    references (noise on the references only vs on the input only, at the learned σ).
    """
    s = settings
    lq, refs = _as_batch(lq.detach().float(), refs.detach().float())
    device = lq.device
    names = list(masks)
    n_regions, n_refs = len(names), refs.shape[1]
    n_units = 1 + n_refs
    size = tuple(lq.shape[-2:])
    images = torch.cat([lq[:, None], refs], dim=1)[0]  # U x 3 x H x W
    mask = torch.stack([torch.as_tensor(masks[n], dtype=torch.float32) for n in names]).to(device)
    if mask.shape[-2:] != size:
        raise ValueError(f"region masks are {tuple(mask.shape[-2:])}, the faces {size}")
    area = mask.sum(dim=(1, 2)).clamp_min(1.0) * 3  # G

    with torch.no_grad():
        clean = _restore_chunked(restore, lq, refs, s.max_batch)[0]  # 3 x H x W
        mean = (clean * mask[:, None]).sum(dim=(1, 2, 3)) / area
        var = (((clean - mean[:, None, None, None]) ** 2) * mask[:, None]).sum(dim=(1, 2, 3)) / area
        scale = var.clamp_min(1e-4)  # G: distortion relative to the region's own contrast

    def distortion(out: torch.Tensor) -> torch.Tensor:
        """out: G x S x 3 x H x W -> G: mean squared change inside each region / its variance."""
        err = ((out - clean) ** 2 * mask[:, None, None]).sum(dim=(2, 3, 4)) / area[:, None]
        return err.mean(dim=1) / scale

    noise = _Perturber(s, size, device)
    h_star = s.target_entropy
    u = torch.zeros(n_regions, n_units, s.cells, s.cells, device=device, requires_grad=True)
    opt = torch.optim.Adam([u], lr=s.lr)

    def entropies() -> torch.Tensor:
        return h_star + u - u.mean(dim=(1, 2, 3), keepdim=True)  # mean entropy H* per region

    def run(entropy: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Restore with noise at `entropy`; `keep` (U,) zeroes the noise on some images."""
        sigma = noise.sigma_map(entropy)[:, None, :, None]  # G x 1 x U x 1 x H x W
        eps = noise.noise((n_regions, s.samples, n_units)) * sigma
        if keep is not None:
            eps = eps * keep.reshape(1, 1, -1, 1, 1, 1)
        noisy = (images + eps).flatten(0, 1)  # (G S) x U x 3 x H x W
        out = _restore_chunked(restore, noisy[:, 0], noisy[:, 1:], s.max_batch)
        return out.reshape(n_regions, s.samples, 3, *size)

    for step in range(s.steps):
        opt.zero_grad(set_to_none=True)
        loss = distortion(run(entropies())).sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            u.clamp_(-s.span, s.span)
        if on_step is not None:
            on_step(step)

    with torch.no_grad():
        entropy = entropies()
        final = distortion(run(entropy))
        shares = _ref_share(run, entropy, clean, n_units) if ref_share else [None] * n_regions

    background_cells = torch.as_tensor(ring(s.cells, s.border), device=device)
    results = {}
    for g, name in enumerate(names):
        h = entropy[g].cpu().numpy().astype(np.float64)
        bg = float(entropy[g][:, background_cells].mean())
        results[name] = RegionExplanation(
            region=name,
            entropy=h,
            background=bg,
            points=(bg - h) > s.b,
            distortion=float(final[g]),
            ref_share=shares[g],
            settings=s,
        )
    return results


def _ref_share(run, entropy: torch.Tensor, clean: torch.Tensor, n_units: int) -> list[np.ndarray]:
    """Per restored pixel: change from noise on the references / change from either side."""
    only_input = torch.zeros(n_units, device=entropy.device)
    only_input[0] = 1

    # Squared changes averaged over samples and channels, then over 9 px neighbourhoods: a ratio
    # of two noisy per-pixel estimates would be mostly noise.
    def change(keep: torch.Tensor) -> torch.Tensor:
        sq = ((run(entropy, keep) - clean) ** 2).mean(dim=(1, 2))  # G x H x W
        return F.avg_pool2d(sq[:, None], 9, stride=1, padding=4, count_include_pad=False)[:, 0]

    from_input, from_refs = change(only_input), change(1 - only_input)
    total = from_input + from_refs
    share = torch.where(total > 1e-12, from_refs / total.clamp_min(1e-12), torch.zeros_like(total))
    return [m.cpu().numpy().astype(np.float32) for m in share]
