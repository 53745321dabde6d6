"""Where a training step's time goes, by part, and images per second against a baseline config.

    ented train --config configs/ented-256-preview-ref-cpu.toml --profile 12

runs a few steps of the config (after warm-up steps) with a timer around each part (data,
degradation, reference warps, generator forward, each loss, backward, optimizer), then the same
for the baseline config, and prints both tables and the ratio of images/s — one command, one run,
same machine state.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

BASELINE_CONFIG = "configs/ented-256-preview-cpu.toml"  # the trainer of the first preview weights


class StepTimer:
    """Seconds per named part; `part()` costs nothing while disabled."""

    def __init__(self) -> None:
        self.enabled = False
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def part(self, name: str):
        if not self.enabled:
            yield
            return
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t


def profile_trainer(trainer, steps: int, warmup: int = 2) -> dict:
    """Time `steps` stage-2 generator steps of a Trainer (after `warmup` untimed ones)."""
    import torch

    if trainer.stage == 1:  # profile the step that matters: the restoration stage
        trainer._start_stage2()
    batches = trainer._batches()
    for _ in range(warmup):
        trainer._g_step(next(batches))
    timer = trainer.timer
    timer.enabled, timer.seconds = True, defaultdict(float)
    images = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        with timer.part("data"):
            batch = next(batches)
        trainer._g_step(batch)
        images += batch["gt"].shape[0]
    wall = time.perf_counter() - t0
    timer.enabled = False
    parts = dict(timer.seconds)
    parts["other"] = max(0.0, wall - sum(parts.values()))
    return {
        "images_per_s": images / wall,
        "ms_per_image": {k: 1000 * v / images for k, v in parts.items()},
        "threads": torch.get_num_threads(),
        "batch_size": trainer.cfg.batch_size,
    }


def format_profile(name: str, result: dict) -> str:
    rows = sorted(result["ms_per_image"].items(), key=lambda kv: -kv[1])
    total = sum(v for _, v in rows)
    lines = [
        f"{name}: {result['images_per_s']:.2f} images/s "
        f"(batch {result['batch_size']}, {result['threads']} threads)",
        "| part | ms per image | share |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v:.1f} | {100 * v / total:.0f} % |" for k, v in rows]
    return "\n".join(lines)


def run_profile(config_path, steps: int, data_root: str | None = None) -> str:
    """Profile a config and the baseline in one run; Markdown tables and the speed ratio."""
    import tempfile
    from pathlib import Path

    from ented_cli.train.config import TrainConfig
    from ented_cli.train.trainer import Trainer

    results = {}
    for name, path, extra in (
        ("baseline", BASELINE_CONFIG, {"guide": False}),  # the model as it was trained then
        ("config", config_path, {}),
    ):
        with tempfile.TemporaryDirectory() as tmp:
            overrides = {"out_dir": tmp, "num_workers": 0, "max_minutes": 0.0, **extra}
            if data_root:
                overrides["data_root"] = data_root
            cfg = TrainConfig.load(Path(path), overrides)
            results[name] = profile_trainer(Trainer(cfg), steps)
    ratio = results["config"]["images_per_s"] / results["baseline"]["images_per_s"]
    return "\n\n".join(
        [
            format_profile(f"baseline ({BASELINE_CONFIG})", results["baseline"]),
            format_profile(f"config ({config_path})", results["config"]),
            f"speed: {ratio:.2f}x the baseline's images/s",
        ]
    )
