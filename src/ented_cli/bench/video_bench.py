"""`ented bench --video`: a clip through `ented restore`'s video path, timed by stage, with its
flicker (the restored faces' frame-to-frame change against the input's).

The clip is the user's (`--clip`) or one made on the spot: 720p, 30 frames/s, the example face
moving and scaling, fresh noise in every frame, a sine tone. Two runs are timed on it: the
default (detection every 5 frames, faces followed by optical flow, steadying on) and the naive
one (detection on every frame, no steadying), so what tracking and steadying buy is measured in
the same run. Stage times are the runner's own: decode and encode run on their own threads and
overlap the rest, so they add up to more than the wall time.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path

from ented_cli.bench.memory import PeakMemory
from ented_cli.errors import UsageError
from ented_cli.paths import InputItem
from ented_cli.pipeline.restore import RestorePipeline
from ented_cli.video.runner import VideoOptions, VideoRunner
from ented_cli.video.settings import DEFAULT_DETECT_EVERY

STAGES = ("decode", "detect", "track", "align", "match", "restore", "paste", "encode")
CLIP_SIZE = (1280, 720)
CLIP_FPS = 30
SETTINGS = {
    "tracked": VideoOptions(detect_every=DEFAULT_DETECT_EVERY, steady=True),
    "detect every frame": VideoOptions(detect_every=1, steady=False),
}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_bench_clip(folder: Path, frames: int, face: Path) -> Path:
    """A 720p clip of `face` (a photo) moving, `frames` long."""
    import cv2

    from ented_cli.video.synthetic import make_face_clip

    photo = cv2.imread(str(face))
    if photo is None:
        raise UsageError(f"{face}: cannot read the face photo for the bench clip")
    path = folder / f"bench-{CLIP_SIZE[1]}p.mp4"
    make_face_clip(path, photo, size=CLIP_SIZE, fps=CLIP_FPS, frames=frames)
    return path


def bench_video(
    pipeline: RestorePipeline,
    clip: Path,
    gallery,
    out_dir: Path,
    note: Callable[[str], None],
    quick: bool = False,
) -> list[dict]:
    """One row per setting: frames/s, ms per frame by stage, flicker, peak memory."""
    names = ["tracked"] if quick else list(SETTINGS)
    rows = []
    for name in names:
        note(f"video: {clip.name}, {name}")
        runner = VideoRunner(pipeline, SETTINGS[name])
        item = InputItem(clip, str(clip), Path(clip.name), video=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        with PeakMemory(getattr(pipeline.restorer, "device", None)) as memory:
            start, cpu = time.perf_counter(), _cpu_seconds()
            report = runner.run(item, out_dir / f"out{clip.suffix}", gallery)
            wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        if report.failed:
            raise UsageError(report.error)
        frames = max(report.frames, 1)
        timing = report.timing_ms
        rows.append(
            {
                "setting": name,
                "detect_every": SETTINGS[name].detect_every,
                "steady": SETTINGS[name].steady,
                "frames": report.frames,
                "width": report.width,
                "height": report.height,
                "faces": report.face_frames,
                "tracks": len(report.tracks),
                "wall_s": round(wall, 2),
                "frames_per_s": round(report.frames / wall, 2),
                # CPU time of every thread: what a frame costs whatever else runs on the machine
                "cpu_ms_per_frame": round(cpu * 1000 / frames, 1),
                "ms_per_frame": {s: round(timing.get(s, 0.0) / frames, 1) for s in STAGES},
                "flicker": report.flicker,
                **memory.result(),
            }
        )
    return rows
