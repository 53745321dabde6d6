"""Quality of a weight set on the London set (CC BY 4.0, DeBruine & Jones 2017).

Each person's neutral photo (aligned, 512 → 256) is degraded at a fixed level; the smiling photo
of the same person is the reference (a same-identity, different-photo task). Prints PSNR / SSIM /
LPIPS-VGG against the clean original and dlib identity similarity, for the degraded input itself,
blind restoration, and restoration with the reference — all measured in this run.

    python benchmarks/eval_london.py --level medium --limit 102 [--weights PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ented_cli.identity import IdentityEncoder, similarity
from ented_cli.metrics import psnr, ssim
from ented_cli.restorer import EntedRestorer
from ented_cli.train.degrade import degrade_level
from ented_cli.train.perceptual import LPIPS
from ented_cli.weights import resolve_weights

ROOT = Path(__file__).resolve().parents[1]


def load_rgb(path: Path) -> np.ndarray:
    bgr = cv2.resize(cv2.imread(str(path)), (256, 256), interpolation=cv2.INTER_AREA)
    return bgr[..., ::-1].astype(np.float32) / 255


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2) * 2 - 1


def to_uint8_bgr(t: torch.Tensor) -> list[np.ndarray]:
    arr = ((t.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    return [np.rint(a[..., ::-1] * 255).astype(np.uint8) for a in arr]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "london"))
    ap.add_argument("--weights", default=None)
    ap.add_argument("--level", default="medium", choices=["mild", "medium", "severe"])
    ap.add_argument("--limit", type=int, default=102)
    ap.add_argument("--fidelity", type=float, default=0.5)
    args = ap.parse_args()

    data = Path(args.data)
    people = sorted({p.name.split("_")[0] for p in (data / "aligned").glob("*_neutral.jpg")})[: args.limit]
    gt = to_tensor(np.stack([load_rgb(data / "aligned" / f"{p}_neutral.jpg") for p in people]))
    refs = np.stack([load_rgb(data / "aligned" / f"{p}_smiling.jpg") for p in people])
    lq = degrade_level(gt, args.level)

    restorer = EntedRestorer(resolve_weights(args.weights), "cpu")
    lq_rgb = ((lq + 1) / 2).permute(0, 2, 3, 1).numpy()
    t = time.perf_counter()
    blind = restorer.restore(lq_rgb, [[] for _ in people], args.fidelity)
    t_blind = (time.perf_counter() - t) / len(people)
    for p, r in zip(people, refs):
        restorer.add_reference(p, r)
    t = time.perf_counter()
    with_ref = restorer.restore(lq_rgb, [[p] for p in people], args.fidelity)
    t_ref = (time.perf_counter() - t) / len(people)

    lpips, encoder = LPIPS(), IdentityEncoder()
    ref_emb = encoder.embed(to_uint8_bgr(to_tensor(refs)))
    rows = {}
    for name, images in (("input", lq), ("blind", to_tensor(blind)), ("reference", to_tensor(with_ref))):
        with torch.no_grad():
            d = lpips(images, gt)
        emb = encoder.embed(to_uint8_bgr(images))
        ident = [float(similarity(e, r)) for e, r in zip(emb, ref_emb)]
        rows[name] = {"psnr": float(psnr(images, gt).mean()), "ssim": float(ssim(images, gt).mean()),
                      "lpips": float(d.mean()), "identity_to_ref": float(np.mean(ident))}
    print(json.dumps({"weights": restorer.name, "level": args.level, "faces": len(people),
                      "fidelity": args.fidelity, "ms_per_face_blind": round(t_blind * 1000),
                      "ms_per_face_ref": round(t_ref * 1000), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
