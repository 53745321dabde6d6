"""Time the generator alone: faces/s and latency at each batch size, with and without a reference.

It goes through the restorer's own `restore` (tensor conversion, reference features, the
network, back to numpy), the same call the pipeline makes, so the numbers are what a run gets
from the network. With a reference, its features are cached once, as `ented restore` does; blind
faces are encoded as their own reference, as `ented restore` does too.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from ented_cli.bench.memory import PeakMemory

MODES = ("reference", "blind")
REFERENCE_KEY = "ented-bench-reference"


def bench_generator(
    restorer,
    batch_sizes: Sequence[int],
    repeats: int,
    warmup: int,
    max_seconds: float,
    note: Callable[[str], None],
    fidelity: float = 0.5,
) -> list[dict]:
    """One row per (mode, batch size), rows in that order. Batch sizes go up, both modes at each,
    so memory grows from one measurement to the next. A measurement stops repeating once its
    timed runs took `max_seconds` (at least one run always counts)."""
    rng = np.random.default_rng(0)  # content does not change the work; a seed keeps runs alike
    faces = rng.random((max(batch_sizes), 256, 256, 3), dtype=np.float32)
    restorer.add_reference(REFERENCE_KEY, faces[0])
    rows = []
    for batch in sorted(batch_sizes):
        for mode in MODES:
            note(f"generator on {restorer.device}: {mode}, batch {batch}")
            rows.append(
                _measure(restorer, faces[:batch], mode, repeats, warmup, max_seconds, fidelity)
            )
        if any("error" in row for row in rows[-len(MODES) :]):
            break  # larger batches would run out of memory as well
    rows.sort(key=lambda r: MODES.index(r["mode"]))  # stable: batch sizes stay in order
    _add_batch_speedups(rows)
    return rows


def _measure(
    restorer,
    faces: np.ndarray,
    mode: str,
    repeats: int,
    warmup: int,
    max_seconds: float,
    fidelity: float,
) -> dict:
    batch = len(faces)
    refs = [[REFERENCE_KEY] if mode == "reference" else [] for _ in range(batch)]
    restorer.batch_size = batch
    times: list[float] = []
    with PeakMemory(restorer.device) as memory:
        for _ in range(warmup):  # allocator, kernel selection, caches
            restorer.restore(faces, refs, fidelity)
        while len(times) < max(repeats, 1):
            start = time.perf_counter()
            restorer.restore(faces, refs, fidelity)  # returns numpy: the device has finished
            times.append(time.perf_counter() - start)
            if sum(times) >= max_seconds:
                break
    row = {
        "device": str(restorer.device),
        "dtype": str(restorer.dtype).removeprefix("torch."),
        "mode": mode,
        "batch_size": batch,
        "runs": len(times),
    }
    if restorer.batch_size < batch:  # the restorer halved the batch after running out of memory
        row["error"] = f"out of memory at batch {batch}; it ran as batch {restorer.batch_size}"
    latency = statistics.median(times)
    row.update(
        faces_per_s=round(batch / latency, 3),
        ms_per_face=round(latency * 1000 / batch, 2),
        latency_ms=round(latency * 1000, 2),  # what each face of the batch waits
        latency_min_ms=round(min(times) * 1000, 2),
        **memory.result(),
    )
    return row


def _add_batch_speedups(rows: list[dict]) -> None:
    """Per-face speed-up of each batch size over the smallest one, measured in the same run."""
    for mode in MODES:
        same = [r for r in rows if r["mode"] == mode]
        if not same:
            continue
        base = min(same, key=lambda r: r["batch_size"])
        for r in same:
            r["speedup_vs_batch1"] = round(r["faces_per_s"] / base["faces_per_s"], 3)
            r["baseline_batch"] = base["batch_size"]
