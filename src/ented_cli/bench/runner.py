"""`ented bench`: build the restorer on each device, time the generator and the pipeline, and
collect everything (with the machine it ran on) into one result dict."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ented_cli.errors import UsageError

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
EXAMPLE_REFERENCE = EXAMPLES / "astronaut.png"
FULL_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
QUICK_BATCH_SIZES = (1, 4)
PARTS = ("all", "generator", "pipeline")


@dataclass
class BenchRequest:
    weights: str | None = None
    config: str | None = None
    download: bool = False
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None  # torch's CPU threads; None: auto (model/threads.py)
    backend: str | None = None  # what runs the generator (model/onnx_engine.py)
    batch_sizes: tuple[int, ...] = FULL_BATCH_SIZES
    repeats: int = 3
    warmup: int = 1
    max_seconds: float = 10.0
    images: Path | None = None  # None: the bundled examples/
    count: int | None = None  # None: 12, or 3 batches when the batch is larger
    ref: Path | None = None
    batch_size: int | None = None  # the pipeline's; None: the restorer's default per device
    workers: int = 2
    part: str = "all"
    quick: bool = False
    video: bool = False  # time the video path instead (bench/video_bench.py)
    clip: Path | None = None  # --clip: the user's video; None: a 720p clip made on the spot
    frames: int | None = None  # frames of the made clip; None: 60 (--quick: 20)

    @classmethod
    def quick_defaults(cls) -> dict:
        """What --quick changes, unless the option is given explicitly."""
        return {
            "batch_sizes": QUICK_BATCH_SIZES,
            "repeats": 1,
            "warmup": 1,
            "max_seconds": 2.0,
            "count": 3,
        }


def bench_devices(name: str) -> list:
    """auto: the CPU, and the accelerator too when there is one; otherwise the device named."""
    from ented_cli.model.restorer import pick_device

    if name != "auto":
        return [pick_device(name)]
    best = pick_device("auto")
    cpu = pick_device("cpu")
    return [cpu] if best.type == "cpu" else [cpu, best]


def _image_folder(req: BenchRequest) -> tuple[Path, Path | None]:
    if req.images is not None:
        if not req.images.is_dir():
            raise UsageError(f"--images {req.images}: not a folder; pass a folder of photos")
        return req.images, req.ref
    if not EXAMPLES.is_dir():
        raise UsageError(
            f"{EXAMPLES}: the bundled examples are not installed here; pass --images DIR"
        )
    return EXAMPLES, req.ref or EXAMPLE_REFERENCE


def run_bench(req: BenchRequest, note: Callable[[str], None]) -> dict:
    if req.part not in PARTS:
        raise UsageError(f"--part {req.part!r}: use one of {', '.join(PARTS)}")
    if req.ref is not None and not req.ref.is_file():
        raise UsageError(f"--ref {req.ref}: no such file; pass a photo of a face")
    if req.clip is not None and not req.clip.is_file():
        raise UsageError(f"--clip {req.clip}: no such file; pass a video")
    do_pipeline = req.part in ("all", "pipeline") and not req.video
    folder, ref = _image_folder(req) if do_pipeline else (None, None)
    if req.video:
        ref = req.ref or EXAMPLE_REFERENCE

    from ented_cli.bench.machine import device_name, machine_info
    from ented_cli.bench.models import resolve_model, temporary_folder
    from ented_cli.bench.pipeline_bench import bench_images

    if folder is not None:
        bench_images(folder, 1)  # an empty folder is a usage error before anything loads
    devices = bench_devices(req.device)
    machine = machine_info()
    runs = []
    with temporary_folder() as tmp:
        model = resolve_model(req.weights, req.config, req.download, Path(tmp) / "weights")
        for device in devices:
            run = _bench_device(req, model, device, folder, ref, Path(tmp), note)
            run["device_name"] = device_name(device)
            runs.append(run)
    settings = asdict(req)
    settings.update(images=str(folder) if folder else None, ref=str(ref) if ref else None)
    return {
        "ented_bench": 1,
        "machine": machine,
        "model": {
            "name": model.name,
            "random_init": model.random_init,
            "params_m": model.params_m,
            "config": req.config,
            "weights": None if model.random_init else str(model.weight_set.manifest or ""),
        },
        "settings": settings,
        "devices": runs,
    }


def _bench_video(req: BenchRequest, pipeline, ref: Path, tmp: Path, note) -> dict:
    from ented_cli.bench.pipeline_bench import PipelineBench
    from ented_cli.bench.video_bench import bench_video, make_bench_clip

    clip = req.clip
    if clip is None:
        frames = req.frames or (20 if req.quick else 60)
        note(f"video: making a {frames}-frame 720p clip")
        clip = make_bench_clip(tmp, frames, EXAMPLES / "astronaut_degraded.jpg")
    gallery = PipelineBench(pipeline, 1, ref).gallery
    rows = bench_video(pipeline, clip, gallery, tmp / "video-out", note, quick=req.quick)
    return {
        "clip": str(req.clip) if req.clip else "made: 720p, 30 frames/s, one face",
        "rows": rows,
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _bench_device(req, model, device, folder, ref, tmp: Path, note) -> dict:
    from ented_cli.bench.generator_bench import bench_generator
    from ented_cli.bench.pipeline_bench import PipelineBench, bench_images, bench_pipeline
    from ented_cli.model.restorer import default_batch_size
    from ented_cli.pipeline.restore import RestoreOptions, RestorePipeline

    # Time restore → paste on every face, whatever the weights: no do-no-harm check.
    options = RestoreOptions(guard=False)
    pipeline = RestorePipeline.from_weights(
        model.weight_set,
        options,
        device=str(device),
        dtype=req.dtype,
        threads=req.threads,
        backend=req.backend,
    )
    restorer = pipeline.restorer
    run: dict = {
        "device": str(device),
        "dtype": str(restorer.dtype).removeprefix("torch."),
        # torch's intra-op threads for this device's runs (CPU), and what chose the count
        "threads": restorer.threads or _torch_threads(),
        "threads_source": restorer.threads_source,
        "backend": getattr(restorer, "backend", "torch"),  # what ran the generator
    }
    try:
        if req.video:
            run["video"] = _bench_video(req, pipeline, ref, tmp, note)
            return run
        if req.part in ("all", "generator"):
            run["generator"] = bench_generator(
                restorer, req.batch_sizes, req.repeats, req.warmup, req.max_seconds, note
            )
        if req.part in ("all", "pipeline"):
            batch = req.batch_size or default_batch_size(device)
            count = req.count or max(12, 3 * batch)
            bench = PipelineBench(pipeline, batch, ref)
            settings = [0] if req.workers == 0 else [0, req.workers]
            run["pipeline"] = bench_pipeline(
                bench, bench_images(folder, count), settings, req.repeats, tmp / "out", note
            )
    finally:
        del restorer, pipeline
        if device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
    return run
