"""The one place that knows how to call a restorer's network.

Everything else in `ented_cli.explain` sees only `restore(lq, refs) -> restored`, with tensors
in [-1, 1]: lq B x 3 x H x W, refs B x N x 3 x H x W.

Weights with the aligned-reference route (`model/guide.py`) also take the reference warped onto
the input's landmarks. The warp's geometry is found once, on the unperturbed face and reference
(`anchor`, or the first call, which the measure makes with the clean images), and then applied
to every perturbed reference with `grid_sample`, so noise on reference pixels reaches the output
through the warp as well as through NTED: both routes count as relying on the reference.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

RestoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _Warp:
    """A fixed reference → input warp: sampling grid, validity mask, and which reference."""

    def __init__(self, lq: torch.Tensor, refs: torch.Tensor):
        from ented_cli.faces.refwarp import Landmarks68, pose_distance, to_uint8, warp_field

        lm = Landmarks68()
        to_np = lambda t: ((t.detach().float().cpu().permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()  # noqa: E731
        face_pts = lm(to_uint8(to_np(lq)))
        ref_pts = [lm(to_uint8(to_np(r))) for r in refs]
        self.index = int(np.argmin([pose_distance(p, face_pts) for p in ref_pts]))
        size = lq.shape[-1]
        map_xy, mask = warp_field(ref_pts[self.index], face_pts, size)
        grid = torch.from_numpy((map_xy + 0.5) / size * 2 - 1).float()  # pixel centres → [-1, 1]
        self.grid = grid[None]
        self.mask = torch.from_numpy(mask)[None, None]

    def guide(self, refs: torch.Tensor) -> torch.Tensor:
        """B x 4 x H x W generator guide from B x N x 3 x H x W (perturbed) references."""
        ref = refs[:, self.index]
        b = ref.shape[0]
        grid = self.grid.to(ref.device, ref.dtype).expand(b, -1, -1, -1)
        warped = F.grid_sample(
            ref, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        return torch.cat([warped, self.mask.to(ref.device, ref.dtype).expand(b, -1, -1, -1)], dim=1)


def make_restore_fn(restorer_or_model, fidelity: float = 0.5) -> RestoreFn:
    """A differentiable restore callable from an `EntedRestorer` (uses its `.model`) or a bare
    generator `model(lq, ref, fidelity)`. Inputs are cast to the model's device and dtype, and
    the output comes back as float32 on the input's device. For a guided model, call
    `restore.anchor(lq, refs)` with each new face's clean images (else the first call anchors)."""
    model = getattr(restorer_or_model, "model", restorer_or_model)
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else None
    dtype = param.dtype if param is not None else None
    guided = bool(getattr(getattr(model, "config", None), "use_guide", False))
    state: dict = {"warp": None}

    def anchor(lq: torch.Tensor, refs: torch.Tensor) -> None:
        lq = lq.reshape(-1, *lq.shape[-3:])[0]
        refs = refs.reshape(-1, *refs.shape[-4:])[0] if refs.dim() >= 4 else refs[None]
        state["warp"] = _Warp(lq, refs) if guided else None

    def restore(lq: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
        guide = None
        if guided:
            refs5 = refs if refs.dim() == 5 else refs[:, None]
            if state["warp"] is None:
                anchor(lq, refs5)
            guide = state["warp"].guide(refs5.to(device, dtype))
        if guided:
            out = model(lq.to(device, dtype), refs.to(device, dtype), fidelity, guide=guide)
        else:
            out = model(lq.to(device, dtype), refs.to(device, dtype), fidelity)
        return out.to(lq.device, torch.float32)

    restore.anchor = anchor
    return restore
