"""Side-by-side picture of the shipped weights on London faces at a fixed degradation level.

    python examples/make_side_by_side.py --level severe -o examples/london-severe.jpg

Columns: degraded | blind (no reference) | with reference | reference | ground truth. The ground
truth is each person's neutral photo, degraded with `degrade_level`; the reference is the same
person's smiling photo. Images: Face Research Lab London Set (DeBruine & Jones 2017), CC BY 4.0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from ented_cli.model.restorer import EntedRestorer, network_rgb
from ented_cli.model.weight_lookup import resolve_weights
from ented_cli.train.degrade import degrade_level

LONDON = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "london" / "aligned"
COLUMNS = ("degraded", "blind", "with reference", "reference", "ground truth")
CREDIT = "Face Research Lab London Set (DeBruine & Jones 2017), CC BY 4.0"


def crop(path: Path) -> np.ndarray:
    bgr = cv2.resize(cv2.imread(str(path)), (256, 256), interpolation=cv2.INTER_AREA)
    return bgr[..., ::-1].astype(np.float32) / 255


def label(tile: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((28, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, tile])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", default="severe")
    ap.add_argument("--people", default="001,002,003,004,005,006,007,008")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--fidelity", type=float, default=0.5)
    ap.add_argument("--tile", type=int, default=192)
    ap.add_argument("-o", "--out", type=Path, default=Path("examples/london-severe.jpg"))
    args = ap.parse_args()

    restorer = EntedRestorer(resolve_weights(args.weights), "cpu")
    rows = []
    for person in args.people.split(","):
        gt, ref = crop(LONDON / f"{person}_neutral.jpg"), crop(LONDON / f"{person}_smiling.jpg")
        x = torch.from_numpy(gt).permute(2, 0, 1)[None] * 2 - 1
        lq = ((degrade_level(x, args.level)[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()
        # This picture is built in RGB; the restorer takes and gives BGR.
        restorer.add_reference(person, network_rgb(ref))
        blind = network_rgb(restorer.restore(network_rgb(lq[None]), [[]], args.fidelity))[0]
        guided = network_rgb(restorer.restore(network_rgb(lq[None]), [[person]], args.fidelity))[0]
        restorer.forget_references([person])
        tiles = [lq, blind, guided, ref, gt]
        tiles = [
            cv2.resize(
                (t * 255).round().astype(np.uint8),
                (args.tile, args.tile),
                interpolation=cv2.INTER_AREA,
            )
            for t in tiles
        ]
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows)
    header = np.concatenate(
        [label(np.zeros((0, args.tile, 3), np.uint8), c) for c in COLUMNS], axis=1
    )
    footer = np.full((24, grid.shape[1], 3), 255, np.uint8)
    cv2.putText(
        footer,
        f"{args.level} degradation; {CREDIT}",
        (6, 17),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (60, 60, 60),
        1,
        cv2.LINE_AA,
    )
    picture = np.concatenate([header, grid, footer])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), picture[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(args.out)


if __name__ == "__main__":
    main()
