"""Images/s of `ented restore --cluster local` with 1 and 2 generator workers, next to the
single-machine run, on a folder of real photos; and where the time goes (docs/cluster.md).

    python scripts/cluster_speed.py --photos 12 --workers 1,2 -o results/cluster-speed

Each run is the real command in a subprocess. "wall" is the whole command (model loads and, for
a cluster, starting Ray and its workers); "stream" is what the cluster note says: from the first
photo sent to the last report back. Stage times are the pipeline's own (`--json` timing_ms),
summed over the photos. Every cluster output is compared with the single run's, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2

from ented_cli.bench.pipeline_bench import STAGES, stage_breakdown

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SOURCES = ("astronaut_degraded.jpg", "grace_hopper.jpg", "astronaut.png")


def make_photos(folder: Path, count: int) -> None:
    """`count` photos with one face each: the examples, then their mirror images, in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name = SOURCES[i % len(SOURCES)]
        image = cv2.imread(str(EXAMPLES / name))
        if (i // len(SOURCES)) % 2:
            image = image[:, ::-1]
        cv2.imwrite(str(folder / f"{i:03d}_{Path(name).stem}.png"), image)


def run(folder: Path, out: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "ented_cli", "restore", str(folder), "-o", str(out)]
    command += ["--ref", str(EXAMPLES / "astronaut.png"), "--json", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    stream = re.search(r"cluster: (\d+) image\(s\) in ([\d.]+) s", done.stderr)
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}
    return {
        "command": " ".join(command[1:]),
        "wall_s": round(wall, 1),
        "stream_s": float(stream.group(2)) if stream else None,
        "images": len(reports),
        "stages": stage_breakdown([r["timing_ms"] for r in reports]),
        "files": files,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--workers", default="1,2", help="comma-separated generator workers")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "results" / "cluster-speed")
    args = parser.parse_args()

    photos = args.out / "photos"
    make_photos(photos, args.photos)
    results = {"load_average_before": os.getloadavg(), "runs": {}}
    results["runs"]["single"] = single = run(photos, args.out / "single", [])
    for n in (int(w) for w in args.workers.split(",")):
        extra = ["--cluster", "local", "--workers", str(n)]
        result = run(photos, args.out / f"cluster-{n}", extra)
        result["identical_to_single"] = result["files"] == single["files"]
        results["runs"][f"cluster, {n} worker(s)"] = result
    results["load_average_after"] = os.getloadavg()

    print("| run | wall s | images/s (wall) | stream s | images/s (stream) | identical |")
    print("|---|---:|---:|---:|---:|---|")
    for name, r in results["runs"].items():
        stream = r["stream_s"]
        rate = f"{r['images'] / stream:.3f}" if stream else "—"
        print(
            f"| {name} | {r['wall_s']} | {r['images'] / r['wall_s']:.3f} | {stream or '—'} | "
            f"{rate} | {r.get('identical_to_single', '—')} |"
        )
    print("\n| stage | " + " | ".join(results["runs"]) + " |")
    print("|---|" + "---:|" * len(results["runs"]))
    for stage in STAGES:
        cells = [
            f"{r['stages'][stage]['ms'] / r['images']:.0f} ms ({r['stages'][stage]['share']:.0%})"
            for r in results["runs"].values()
        ]
        print(f"| {stage} (per image) | " + " | ".join(cells) + " |")
    print(
        f"\nload average before {results['load_average_before']}, after {results['load_average_after']}"
    )
    (args.out / "cluster_speed.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
