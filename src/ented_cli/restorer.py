"""The `Restorer` interface the pipeline talks to, and its ENTED implementation.

A restorer takes aligned 256x256 faces (float32 RGB in [0, 1], N x 256 x 256 x 3), optional
reference faces per face, and a fidelity weight, and returns restored faces in the same layout.
Reference features are computed once per reference photo and cached by the caller's key.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Sequence
from typing import Protocol

import numpy as np

from ented_cli.errors import EntedError, UsageError

FACE_SIZE = 256


class Restorer(Protocol):
    name: str

    def add_reference(self, key: Hashable, face: np.ndarray) -> None: ...

    def restore(
        self, faces: np.ndarray, references: Sequence[Sequence[Hashable]], fidelity: float
    ) -> np.ndarray: ...


def pick_device(name: str = "auto"):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(
            f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this torch build sees no CUDA GPU; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


def pick_dtype(name: str, device):
    import torch

    if name == "auto":  # fp32 on CPU (fast enough, exact), fp16 where the hardware is built for it
        return torch.float32 if device.type == "cpu" else torch.float16
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if name not in table:
        raise UsageError(f"--dtype {name!r} is unknown; use auto, float32, float16 or bfloat16")
    return table[name]


def default_batch_size(device) -> int:
    # On CPU a batch brings no speed-up per face (benchmarks/bench_speed.py: 1.0x for the preview
    # model, 1.6x slower for ented-256 at batch 4), only memory; GPUs gain from large batches.
    return 1 if device.type == "cpu" else 16


class EntedRestorer:
    """Runs the ENTED generator from a weight set on one device."""

    def __init__(
        self, weight_set, device: str = "auto", dtype: str = "auto", batch_size: int | None = None
    ):
        import torch

        from ented_cli.model.config import EntedConfig
        from ented_cli.model.generator import EntedGenerator
        from ented_cli.weights import load_state_dict

        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.batch_size = batch_size or default_batch_size(self.device)
        self.name = weight_set.name
        try:
            config = EntedConfig.from_dict(weight_set.config)
        except (TypeError, ValueError) as e:
            raise EntedError(f"{weight_set.shards[0]}: not an ENTED weight set ({e})") from None
        model = EntedGenerator(config)
        state = load_state_dict(weight_set)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise EntedError(
                f"{weight_set.shards[0]}: weights do not fit the ENTED model "
                f"({len(missing)} missing, {len(unexpected)} unexpected tensors); use weights exported by `ented train`"
            )
        self.model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        self._refs: dict = {}
        self._torch = torch

    def _to_tensor(self, faces: np.ndarray):
        t = self._torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2)
        return t.to(self.device, self.dtype) * 2 - 1

    def add_reference(self, key: Hashable, face: np.ndarray) -> None:
        """Encode one reference face (256 x 256 x 3 float RGB) once; later faces reuse it by key."""
        if key not in self._refs:
            with self._torch.inference_mode():
                self._refs[key] = self.model.encode_reference(self._to_tensor(face[None]))

    def restore(
        self, faces: np.ndarray, references: Sequence[Sequence[Hashable]], fidelity: float
    ) -> np.ndarray:
        out, start, batch = [], 0, self.batch_size
        while start < len(faces):
            stop = min(start + batch, len(faces))
            try:
                out.append(self._restore_batch(faces[start:stop], references[start:stop], fidelity))
                start = stop
            except self._torch.OutOfMemoryError:
                if batch == 1:
                    raise EntedError(
                        "out of GPU memory even for one face; use --device cpu"
                    ) from None
                batch = max(1, batch // 2)
                self._torch.cuda.empty_cache()
                print(
                    f"ented: warning: out of GPU memory; retrying with --batch-size {batch}",
                    file=sys.stderr,
                )
        self.batch_size = batch  # later batches start from the size that fitted
        return np.concatenate(out) if out else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.float32)

    def _restore_batch(
        self, faces: np.ndarray, references: Sequence[Sequence[Hashable]], fidelity: float
    ) -> np.ndarray:
        from ented_cli.model.generator import ReferenceFeatures

        torch = self._torch
        with torch.inference_mode():
            lq = self._to_tensor(faces)
            per_face = []
            for i, keys in enumerate(references):
                if keys:
                    per_face.append(ReferenceFeatures.join([self._refs[k] for k in keys]))
                else:  # blind: the face is its own reference, as in training
                    per_face.append(self.model.encode_reference(lq[i : i + 1]))
            restored = self.model(lq, ReferenceFeatures.stack(per_face), fidelity)
            restored = ((restored.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
            return restored.cpu().numpy()
