"""Export the EMA generator of a training run as a shipped weight set (fp16 safetensors shards),
its manifest recording whether fp16 and bf16 inference measured safe (for `--dtype auto`)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ented_cli.errors import UsageError
from ented_cli.imaging.atomic import write_atomic
from ented_cli.model.config import EntedConfig
from ented_cli.model.generator import EntedGenerator
from ented_cli.model.weight_lookup import resolve_weights
from ented_cli.model.weights import load_state_dict, save_weight_set

# Reduced precision counts as safe when every output is finite and, on the [0, 1] scale the
# restorer writes 8-bit images from, the mean error stays under one 8-bit step (the picture as a
# whole rounds to the same image) and no pixel moves more than 32 steps. The max is a guard
# against local breakdown, not a visibility bound: a near-tie in the VQ codebook flips one 16x16
# cell's code under any change of rounding and moves its pixels by up to ~18 steps (measured on
# the preview weights), which GPU "fp32" does too (its convolutions are TF32 by default, with
# fp16's 10-bit mantissa). Overflow and underflow, the real risks, give non-finite values or
# errors far beyond both bounds.
MAX_MEAN_ERROR = 1 / 255
MAX_PIXEL_ERROR = 32 / 255


def training_summary(state: dict) -> dict:
    evals = [h for h in state["history"] if "eval" in h]
    prior = state.get("prior") or {}
    return {
        "stage": state["stage"],
        "steps": state["step"],
        "stage1_steps": state["stage1_steps_done"],
        "images_seen": state["images_seen"],
        "train_minutes": round(state["elapsed"] / 60, 1),
        "last_eval": evals[-1]["eval"] if evals else None,
        "train_config": state["config"],
        "cumulative_minutes": round(prior.get("minutes", 0.0) + state["elapsed"] / 60, 1),
        "cumulative_images": prior.get("images", 0) + state["images_seen"],
        "resumed_from": state["config"].get("resume_from") or None,
    }


def export_generator(trainer, out_dir: Path, name: str, measure: bool = True) -> Path:
    """Writes `<name>.json` + shards from a live Trainer. `measure=False` skips the fp16/bf16
    measurement (10-14 s on 2 cores): periodic exports during training leave it to the final one
    or to `record_inference_dtypes` when a snapshot is shipped."""
    state = {
        k: v for k, v in trainer.state().items() if k not in ("G", "D", "opt_g", "opt_d", "teacher")
    }
    weights, config = trainer.G_ema.state_dict(), trainer.model_config.to_dict()
    return save_weight_set(
        weights,
        out_dir,
        name,
        config,
        extra=training_summary(state),
        inference_dtypes=measure_inference_dtypes(_as_shipped(weights, config))
        if measure
        else None,
    )


def export_checkpoint(checkpoint: Path, out_dir: Path, name: str) -> Path:
    """Writes a weight set from a checkpoint file (e.g. one fetched back from a GPU machine)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weights, config = state["G_ema"], state["model_config"]
    return save_weight_set(
        weights,
        out_dir,
        name,
        config,
        extra=training_summary(state),
        inference_dtypes=measure_inference_dtypes(_as_shipped(weights, config)),
    )


def record_inference_dtypes(spec: str | Path) -> dict:
    """Measure an exported weight set and add "inference_dtypes" to its manifest, for sets
    exported before it was measured. Only the manifest changes: shards and sha256 sums stay."""
    ws = resolve_weights(spec)
    if ws.manifest is None:
        raise UsageError(f"'{spec}' is a bare .safetensors file; pass the weight set's .json")
    measured = measure_inference_dtypes(_as_shipped(load_state_dict(ws), ws.config))
    info = json.loads(ws.manifest.read_text(encoding="utf-8"))
    info["inference_dtypes"] = measured
    write_atomic(ws.manifest, (json.dumps(info, indent=2) + "\n").encode())
    return measured


def _as_shipped(weights: dict, config: dict) -> EntedGenerator:
    """A CPU generator holding ``weights`` rounded to fp16 as the shards store them: the fp32
    baseline is then exactly what `--dtype float32` computes from the shipped files."""
    model = EntedGenerator(EntedConfig.from_dict(config))
    rounded = {
        k: v.detach().cpu().half() if v.is_floating_point() else v for k, v in weights.items()
    }
    model.load_state_dict(rounded)
    return model


def measure_inference_dtypes(generator: EntedGenerator, seed: int = 0) -> dict:
    """How far fp16 and bf16 inference strays from fp32 on seeded face-like inputs, blind and
    with a reference (and its warped guide, when the model has that route), on the CPU.

    Returns ``{"float16": {"safe": bool, "max_abs_err": x, "mean_abs_err": y}, "bfloat16": ...}``
    with errors on the [0, 1] output scale; a dtype that gives non-finite outputs, or that this
    CPU cannot run, gets safe False and an "error". Convolutions sum in fp32 as GPU kernels do
    (`_Float32Sums`).
    """
    model = copy.deepcopy(generator).cpu().float().eval().requires_grad_(False)
    size, gen = model.config.size, torch.Generator().manual_seed(seed)
    sharp, ref = _face_like(2, size, gen), _face_like(1, size, gen)
    # Degraded inputs: a quarter of the resolution, blown back up, plus sensor-like noise.
    lq = F.interpolate(F.avg_pool2d(sharp, 4), scale_factor=4, mode="bilinear", align_corners=False)
    lq = (lq + 0.05 * torch.randn(lq.shape, generator=gen)).clamp(-1, 1)
    guide = torch.cat([ref, _head(size)], 1) if model.config.use_guide else None
    cases = [(lq[:1], None, None), (lq[1:], ref, guide)]  # one face blind, one with a reference

    def run(dtype: torch.dtype) -> torch.Tensor:
        net, cast = copy.deepcopy(model).to(dtype), lambda t: None if t is None else t.to(dtype)
        with torch.inference_mode(), _Float32Sums():
            return torch.cat([net(cast(x), cast(r), 0.5, guide=cast(g)) for x, r, g in cases])

    baseline = run(torch.float32).clamp(-1, 1)
    measured = {}
    for dtype in (torch.float16, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        try:
            out = run(dtype).float()
        except (RuntimeError, NotImplementedError) as exc:  # an op without a kernel for it
            measured[name] = {"safe": False, "error": str(exc).strip().splitlines()[0]}
            continue
        if not torch.isfinite(out).all():  # overflowed (inf) or undefined (NaN) somewhere
            measured[name] = {"safe": False, "error": "non-finite outputs"}
            continue
        err = (out.clamp(-1, 1) - baseline).abs() / 2  # [-1, 1] outputs → the [0, 1] scale
        max_err, mean_err = err.max().item(), err.mean().item()
        measured[name] = {
            "safe": mean_err <= MAX_MEAN_ERROR and max_err <= MAX_PIXEL_ERROR,
            "max_abs_err": round(max_err, 6),
            "mean_abs_err": round(mean_err, 6),
        }
    return measured


class _Float32Sums(TorchFunctionMode):
    """Half-precision convolutions computed from the same rounded operands, summed in fp32 and
    rounded back: what GPU kernels do, where this CPU's own fp16 path (no fp16 hardware) takes
    a reference implementation about 100 times slower (two minutes a face)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d and args[0].dtype in (torch.float16, torch.bfloat16):
            up = [a.float() if isinstance(a, torch.Tensor) else a for a in args]
            up_kw = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
            return func(*up, **up_kw).to(args[0].dtype)
        return func(*args, **kwargs)


def _face_like(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """n seeded stand-ins for aligned faces, n×3×size×size in [-1, 1]: a skin-toned head with
    darker eyes and mouth where alignment puts them, over 1/f noise (the spectrum of photos)."""
    noise = sum(
        F.interpolate(
            torch.randn(n, 3, r, r, generator=gen), size=size, mode="bilinear", align_corners=False
        )
        / r**0.5
        for r in (4, 16, 64, size)
    )
    skin = 0.4 + 0.4 * torch.rand(n, 3, 1, 1, generator=gen)
    eyes_mouth = sum(_oval(size, x, y, w, h) for x, y, w, h in _FEATURES)
    image = 0.5 + (skin - 0.5) * _head(size) - 0.3 * eyes_mouth
    return (image * 2 - 1 + 0.3 * noise).clamp(-1, 1)


# Centre x, centre y, half width, half height on [-1, 1] axes: two eyes and a mouth.
_FEATURES = ((-0.3, -0.15, 0.14, 0.07), (0.3, -0.15, 0.14, 0.07), (0.0, 0.45, 0.25, 0.08))


def _head(size: int) -> torch.Tensor:
    return _oval(size, 0.0, 0.05, 0.62, 0.8)[None, None]


def _oval(size: int, x: float, y: float, half_w: float, half_h: float) -> torch.Tensor:
    axis = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return ((((xx - x) / half_w) ** 2 + ((yy - y) / half_h) ** 2) < 1).float()
