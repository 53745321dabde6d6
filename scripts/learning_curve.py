"""Learning curve of a training campaign from its runs' log.jsonl files, as a Markdown table.

    python scripts/learning_curve.py runs/a/log.jsonl runs/b/log.jsonl ...

Each eval line gives held-out metrics with and without the reference and the reference-use
probes. Cumulative minutes/images come from the log (`cumulative_*`, written since the campaign
bookkeeping) or, for older logs, from the `prior_*` of the run's resume event, or `--offset
MIN:IMAGES` given once per log in the same order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = (
    "out_lpips",
    "blind_lpips",
    "lq_lpips",
    "out_psnr",
    "lq_psnr",
    "ref_effect",
    "swap_effect",
    "ref_grad",
)


def rows(log: Path, offset: tuple[float, int] | None) -> list[dict]:
    prior_min, prior_img = offset or (0.0, 0)
    out, minutes, images = [], 0.0, 0
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "resume_from_weights" and offset is None:
            prior_min, prior_img = rec.get("prior_minutes", 0.0), rec.get("prior_images", 0)
        if "minutes" in rec and "step" in rec:
            minutes = rec["minutes"]
            images = rec["step"] * 4  # the CPU campaign's batch size; exact when cumulative_* exist
        if "eval" in rec:
            out.append(
                {
                    "minutes": rec.get("cumulative_minutes", prior_min + minutes),
                    "images": rec.get("cumulative_images", prior_img + images),
                    "level": rec["eval"].get("level", ""),
                    **{k: rec["eval"].get(k) for k in COLUMNS},
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", type=Path)
    ap.add_argument(
        "--offset", action="append", default=[], help="MIN:IMAGES for the log at that position"
    )
    args = ap.parse_args()
    offsets = [tuple(float(x) for x in o.split(":")) for o in args.offset]
    print("| CPU-min | images | level | " + " | ".join(COLUMNS) + " |")
    print("|---:|---:|---|" + "---:|" * len(COLUMNS))
    for i, log in enumerate(args.logs):
        off = (offsets[i][0], int(offsets[i][1])) if i < len(offsets) else None
        for r in rows(log, off):
            vals = " | ".join("" if r[k] is None else f"{r[k]:.4g}" for k in COLUMNS)
            print(f"| {r['minutes']:.1f} | {r['images']} | {r['level']} | {vals} |")


if __name__ == "__main__":
    main()
