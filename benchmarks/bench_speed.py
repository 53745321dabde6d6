"""Speed of the generator and of the whole pipeline on this machine, with ratios measured in the
same run (so they compare like with like even on a busy machine).

    python benchmarks/bench_speed.py [--device cpu] [--repeats 5]

Prints one JSON object: ms per face for each model configuration and batch size, the gain from
caching reference features, and where the time of one `ented restore` goes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ented_cli.model.config import preset
from ented_cli.model.generator import EntedGenerator, ReferenceFeatures

ROOT = Path(__file__).resolve().parents[1]


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, oneDNN kernels
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def generator_speed(name: str, device: torch.device, repeats: int) -> dict:
    g = EntedGenerator(preset(name)).to(device).eval()
    out = {"params_M": round(sum(p.numel() for p in g.parameters()) / 1e6, 2)}
    with torch.inference_mode():
        for batch in (1, 4):
            lq = torch.rand(batch, 3, 256, 256, device=device) * 2 - 1
            ref = torch.rand(1, 3, 256, 256, device=device) * 2 - 1
            cached = ReferenceFeatures.stack([g.encode_reference(ref)] * batch)
            t_raw = best_of(lambda: g(lq, ref.expand(batch, -1, -1, -1), 0.5), repeats) / batch
            t_cached = best_of(lambda: g(lq, cached, 0.5), repeats) / batch
            out[f"batch{batch}"] = {"ms_per_face_ref_photo": round(t_raw * 1000, 1),
                                    "ms_per_face_cached_ref": round(t_cached * 1000, 1),
                                    "cache_speedup": round(t_raw / t_cached, 2)}
    out["batch4_vs_batch1_per_face"] = round(
        out["batch4"]["ms_per_face_cached_ref"] / out["batch1"]["ms_per_face_cached_ref"], 2)
    return out


def pipeline_speed(repeats: int) -> dict:
    """Stage timings of `ented restore` on the bundled example (from its own JSON report)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "ented_cli", "restore", str(ROOT / "examples" / "astronaut_degraded.jpg"),
           "--ref", str(ROOT / "examples" / "astronaut.png"), "-o", "/tmp/ented-bench/", "--json", "-q"]
    reports = []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        report = json.loads(proc.stdout)
        report["timing_ms"]["process_wall"] = round((time.perf_counter() - t) * 1000, 1)
        reports.append(report["timing_ms"])
    return {k: float(np.median([r.get(k, 0.0) for r in reports])) for k in reports[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    result = {"device": str(device), "torch_threads": torch.get_num_threads(),
              "generator": {name: generator_speed(name, device, args.repeats)
                            for name in ("ented-256-preview", "ented-256")}}
    gen = result["generator"]
    result["release_vs_preview_per_face"] = round(
        gen["ented-256"]["batch1"]["ms_per_face_cached_ref"] / gen["ented-256-preview"]["batch1"]["ms_per_face_cached_ref"], 2)
    if device.type == "cpu":
        result["pipeline_ms_median"] = pipeline_speed(max(1, args.repeats // 2))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
