"""Fit the trust calibration of a weight set (`guide_trust_gain`) on held-out faces.

The trust map that lets the reference's detail band into the output is supervised in training
against a target built from CelebA pairs, and comes out cautious. This scores the weights with
the map scaled by each gain (clamped to 1) on one or more `ented eval` benchmarks and, with
--write, saves a copy of the weights carrying the best gain: the lowest mean LPIPS with the
reference, among the gains whose identity to the ground truth is not below gain 1's. Fit it on
validation faces (CelebA val), never on the benchmark you report.

    python scripts/calibrate_trust.py WEIGHTS.json BENCH.csv [BENCH.csv ...] \
        --gains 1 2 4 100 -o calib/ [--write OUT_DIR --name NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def with_gain(weights: Path, gain: float, out_dir: Path, name: str) -> Path:
    """A copy of the weight set whose config carries `gain` (the tensors are unchanged)."""
    from ented_cli.model.weight_lookup import resolve_weights
    from ented_cli.model.weights import load_state_dict, save_weight_set

    ws = resolve_weights(str(weights))
    config = dict(ws.config, guide_trust_gain=float(gain))
    extra = dict(ws.info.get("extra", {}), guide_trust_gain=float(gain))
    return save_weight_set(
        load_state_dict(ws),
        out_dir,
        name,
        config,
        extra=extra,
        card=ws.info.get("card"),
        inference_dtypes=ws.info.get("inference_dtypes"),
    )


def score(weights: Path, bench: Path, out: Path) -> dict:
    """`ented eval`'s averages for the with-reference row on one benchmark."""
    cmd = [
        sys.executable,
        "-m",
        "ented_cli",
        "eval",
        "--csv",
        str(bench),
        "--weights",
        str(weights),
        "--no-wrong-ref",
        "--no-classical",
        "-o",
        str(out),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
    return json.loads((out / "report.json").read_text())["averages"]["ented"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", type=Path)
    ap.add_argument("benchmarks", type=Path, nargs="+", help="ented eval triplet CSVs")
    ap.add_argument("--gains", type=float, nargs="+", default=[1.0, 2.0, 4.0, 100.0])
    ap.add_argument("-o", "--out", type=Path, default=Path("calib"))
    ap.add_argument("--write", type=Path, help="save the calibrated weights in this folder")
    ap.add_argument("--name", help="name of the calibrated weight set (default: the input's)")
    args = ap.parse_args()

    rows = {}
    for gain in args.gains:
        ws = with_gain(args.weights, gain, args.out / f"weights-g{gain:g}", "calib")
        results = [
            score(ws, b, args.out / f"g{gain:g}-{b.parent.parent.name}") for b in args.benchmarks
        ]
        rows[gain] = {
            key: sum(r[key] for r in results) / len(results) for key in ("lpips", "id_gt", "psnr")
        }
        print(
            f"gain {gain:g}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[gain].items()),
            flush=True,
        )
    base = rows[min(rows, key=lambda g: abs(g - 1.0))]
    allowed = [g for g in rows if rows[g]["id_gt"] >= base["id_gt"]]
    best = min(allowed, key=lambda g: rows[g]["lpips"])
    print(f"best gain: {best:g}")
    (args.out / "calibration.json").write_text(json.dumps({"rows": rows, "best": best}, indent=1))
    if args.write:
        from ented_cli.model.weight_lookup import resolve_weights

        name = args.name or resolve_weights(str(args.weights)).name
        print(with_gain(args.weights, best, args.write, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
