"""Cheap training losses (no loss network) and the losses on the reference path itself.

TRAINING.md: pixel losses alone teach a restorer to ignore its reference. These give the
reference route gradient of its own:
- `attention_reconstruction`: NTED's loss — warp the reference RGB with the model's own
  extraction × distribution attention and compare with the ground truth at each scale;
- `trust_loss`: the guide's trust map against where the warped reference agrees with the GT;
- `degradation_consistency`: the output, degraded like the input (blur + down-sampling, the
  sample's own parameters), must match the ground truth degraded the same way; together with a
  low full-resolution L1 weight it leaves the output's fine detail free to follow the reference
  wherever the input cannot contradict it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ented_cli.train.degrade import DegradationParams, blur, gaussian_kernels


def per_image_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().flatten(1).mean(dim=1)


def multiscale_l1(out: torch.Tensor, gt: torch.Tensor, scales=(2, 4)) -> torch.Tensor:
    total = out.new_zeros(out.shape[0])
    for s in scales:
        total = total + per_image_l1(F.avg_pool2d(out, s), F.avg_pool2d(gt, s))
    return total / len(scales)


def fft_l1(out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """L1 between amplitude spectra: rewards the right amount of fine detail, which plain L1
    averages away."""
    fo = torch.fft.rfft2(out.float(), norm="ortho").abs()
    fg = torch.fft.rfft2(gt.float(), norm="ortho").abs()
    return (fo - fg).abs().flatten(1).mean(dim=1)


def attention_reconstruction(
    attention: dict, ref: torch.Tensor, gt: torch.Tensor, scale_weights: dict[int, float]
) -> torch.Tensor:
    """Σ_r w_r · L1(ref_r warped by Dᵀ·A, gt_r), per image; attention[r] = (A: B×K×N, D: B×K×HW)."""
    total = gt.new_zeros(gt.shape[0])
    for r, (extract, distribute) in attention.items():
        w = scale_weights.get(r, 0.0)
        if w == 0:
            continue
        ref_r = F.interpolate(ref, size=r, mode="area").flatten(2)  # B×3×N
        textures = torch.bmm(extract, ref_r.transpose(1, 2))  # B×K×3
        recon = torch.bmm(textures.transpose(1, 2), distribute)  # B×3×HW
        side = int(round(distribute.shape[-1] ** 0.5))
        gt_r = F.interpolate(gt, size=side, mode="area")
        total = total + w * per_image_l1(recon.view_as(gt_r), gt_r)
    return total


def trust_loss(trust: dict, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of every scale's trust map against the 64×64 target, per image,
    weighted to the warp's validity mask (plus a little everywhere): outside the face the target
    is a trivial 0 that would otherwise drown the signal that matters."""
    total = target.new_zeros(target.shape[0])
    for t in trust.values():
        size = t.shape[-1]
        tgt = F.interpolate(target, size=size, mode="bilinear", align_corners=False)
        w = F.interpolate(valid, size=size, mode="area") + 0.05
        bce = F.binary_cross_entropy(
            t.float().clamp(1e-4, 1 - 1e-4), tgt.clamp(0, 1), reduction="none"
        )
        total = total + (bce * w).flatten(1).sum(dim=1) / w.flatten(1).sum(dim=1)
    return total / max(1, len(trust))


def linear_degradation(images: torch.Tensor, params: list[DegradationParams]) -> torch.Tensor:
    """Blur and down-sample each image with its own parameters (no noise, no JPEG): the part
    of the degradation the output can be checked against, differentiably."""
    x = blur(images.float(), gaussian_kernels(params, 20))
    h = images.shape[-1]
    out = []
    for i, p in enumerate(params):
        small = F.interpolate(x[i : i + 1], size=max(4, round(h / p.scale)), mode="area")
        out.append(F.interpolate(small, size=h, mode="bilinear", align_corners=False))
    return torch.cat(out)


def degradation_consistency(
    out: torch.Tensor, gt: torch.Tensor, params: list[DegradationParams]
) -> torch.Tensor:
    with torch.no_grad():
        target = linear_degradation(gt, params)
    return per_image_l1(linear_degradation(out, params), target)
