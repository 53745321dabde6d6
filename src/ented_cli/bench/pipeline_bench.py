"""Time the whole pipeline on real photos, stage by stage, sequential and with worker threads.

Stages: decode (read + decode the file), detect (the face detector), align (frame conversion and
warping faces to the template), identity (embedding faces and pairing them with the reference),
restore (the network), paste (inverse warp, mask, colour match), encode (encode + atomic write).
The run is the real `BatchRunner`, and every stage time is the pipeline's own (its reports'
`timing_ms`): nothing is wrapped or subclassed.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ented_cli.bench.memory import PeakMemory
from ented_cli.errors import UsageError
from ented_cli.paths import InputItem, expand_inputs
from ented_cli.pipeline.batch import BatchRunner, ImageJob, make_job
from ented_cli.pipeline.restore import RestorePipeline

STAGES = ("decode", "detect", "align", "identity", "restore", "paste", "encode")
# The pipeline's name for each bench stage.
_TIMING_KEYS = {
    "decode": "read",
    "detect": "detect",
    "align": "align",
    "identity": "match",
    "restore": "restore",
    "paste": "paste",
    "encode": "write",
}


def bench_images(folder: Path, count: int) -> list[Path]:
    """The images of `folder` (as `ented restore` finds them), repeated in turn up to `count`."""
    items, problems = expand_inputs([str(folder)])
    if not items:
        raise UsageError(problems[0] if problems else f"{folder}: no images in this folder")
    paths = [item.path for item in items]
    return [paths[i % len(paths)] for i in range(count)]


class PipelineBench:
    """One pipeline (restorer, detector, identity encoder) timed in several worker settings."""

    def __init__(self, pipeline: RestorePipeline, batch_size: int, ref: Path | None):
        from ented_cli.pipeline.references import ReferenceGallery

        self.pipeline = pipeline
        self.batch_size = batch_size
        self.gallery = None
        if ref is not None:
            errors: list[str] = []
            faces = pipeline.references.faces([("reference", ref)], errors)
            if errors:
                raise UsageError(f"{errors[0]} (--ref)")
            self.gallery = ReferenceGallery(faces)

    def run(self, images: Sequence[Path], workers: int, out_dir: Path) -> dict:
        """One timed pass over `images`, written under `out_dir` (emptied afterwards)."""
        runner = BatchRunner(self.pipeline, batch_size=self.batch_size, workers=workers)
        out_dir.mkdir(parents=True, exist_ok=True)
        jobs = [
            make_job(
                InputItem(path, str(path), Path(path.name)),
                out_dir / f"{i:05d}{path.suffix.lower()}",
            )
            for i, path in enumerate(images)
        ]
        try:
            with PeakMemory(getattr(self.pipeline.restorer, "device", None)) as memory:
                start = time.perf_counter()
                for _ in runner.run(jobs, lambda item: self.gallery):
                    pass
                wall = time.perf_counter() - start
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        return self._result(jobs, workers, wall, memory)

    def _result(self, jobs: list[ImageJob], workers: int, wall: float, memory: PeakMemory) -> dict:
        reports = [job.report for job in jobs]
        done = [r for r in reports if not r.failed]
        faces = sum(f.restored for r in done for f in r.faces or [])
        stages = stage_breakdown([r.timing_ms for r in done])
        slowest = max(stages, key=lambda s: stages[s]["ms"])
        latencies = [r.timing_ms["total"] for r in done if "total" in r.timing_ms]
        return {
            "workers": workers,
            "batch_size": self.batch_size,
            "images": len(jobs),
            "errors": len(jobs) - len(done),
            "first_error": next((r.error for r in reports if r.failed), None),
            "faces": faces,
            "wall_s": round(wall, 3),
            "images_per_s": round(len(jobs) / wall, 3),
            "faces_per_s": round(faces / wall, 3),
            "ms_per_image": round(wall * 1000 / len(jobs), 1),  # throughput, the inverse
            "latency_ms": round(statistics.median(latencies), 1) if latencies else None,
            "stages": stages,
            "slowest_stage": slowest,
            "slowest_share": stages[slowest]["share"],
            **memory.result(),
        }


def stage_breakdown(timings: list[dict[str, float]]) -> dict[str, dict]:
    """ms and share of the stage total for every stage, from the pipeline's own timings."""
    ms = {s: sum(t.get(_TIMING_KEYS[s], 0.0) for t in timings) for s in STAGES}
    whole = sum(ms.values()) or 1.0
    return {s: {"ms": round(ms[s], 1), "share": round(ms[s] / whole, 4)} for s in STAGES}


def bench_pipeline(
    bench: PipelineBench,
    images: Sequence[Path],
    worker_settings: Sequence[int],
    repeats: int,
    out_dir: Path,
    note: Callable[[str], None],
) -> list[dict]:
    """Best of `repeats` passes for each worker setting (0, the sequential pipeline, first), the
    settings taking turns so a busy spell on the machine hits them alike."""
    device = getattr(bench.pipeline.restorer, "device", "cpu")
    note(f"pipeline on {device}: warm-up")
    warm = list(images[: max(1, min(len(images), bench.batch_size))])
    bench.run(warm, 0, out_dir)  # detector, identity model and network kernels, once
    best: dict[int, dict] = {}
    for rep in range(max(repeats, 1)):
        for workers in worker_settings:
            name = _workers_name(workers)
            note(f"pipeline on {device}: {len(images)} images, {name} ({rep + 1}/{repeats})")
            result = bench.run(images, workers, out_dir)
            if workers not in best or result["wall_s"] < best[workers]["wall_s"]:
                best[workers] = result
    rows = [dict(best[w], device=str(device), pipeline=_workers_name(w)) for w in worker_settings]
    for row in rows:  # the first setting is the sequential pipeline
        row["speedup_vs_sequential"] = round(row["images_per_s"] / rows[0]["images_per_s"], 3)
    return rows


def _workers_name(workers: int) -> str:
    return "sequential" if workers == 0 else f"{workers} workers"
