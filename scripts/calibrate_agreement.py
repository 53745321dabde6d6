"""Fit `guide_full_trust_agreement`: how well a reference must agree with the input to give its
whole detail band.

The trust map that gates the warped reference's detail is trained on CelebA pairs taken on
different days, and stays cautious (mean trust about 0.2 inside the warp's mask) even when the
reference is as good as the ground truth. This scores held-out CelebA val faces, at each
degradation level, with the trust as trained and with full trust, records each face's mean
agreement (input vs warped reference, `model.guide.mean_agreement`), and picks the lowest
threshold at which full trust for the faces above it costs no level more than `--tolerance` in
mean LPIPS or dlib identity to the ground truth. Fit it on validation faces, never on the
benchmark you report.

    python scripts/calibrate_agreement.py WEIGHTS.json --faces 150 -o calib-agreement.json \
        [--write OUT_DIR --name NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

THRESHOLDS = [round(0.2 + 0.05 * i, 2) for i in range(11)]  # 0.20 … 0.70


def to_bgr8(t: torch.Tensor) -> np.ndarray:
    a = ((t[0].permute(1, 2, 0).float().clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    return np.ascontiguousarray(a[..., ::-1])


def score_faces(
    weights: str, levels: list[str], n: int, data_root: Path, self_reference: bool = False
) -> dict:
    """Per level, per face: agreement, mean trust (as trained, inside the mask), and LPIPS /
    identity with the trust as trained and full. `self_reference`: the reference is the ground
    truth itself, augmented (the best reference there can be)."""
    from ented_cli.faces.identity import IdentityEncoder, similarity
    from ented_cli.faces.refwarp import Landmarks68, guide_array, to_uint8
    from ented_cli.model.config import EntedConfig
    from ented_cli.model.generator import EntedGenerator
    from ented_cli.model.guide import agreement, mean_agreement, stack_guides
    from ented_cli.model.weight_lookup import resolve_weights
    from ented_cli.model.weights import load_state_dict
    from ented_cli.train.data import PairDataset, load_training_records
    from ented_cli.train.degrade import degrade_level
    from ented_cli.train.perceptual import LPIPS, find_vgg_weights

    ws = resolve_weights(weights)
    config = EntedConfig.from_dict(dict(ws.config, guide_full_trust_agreement=0.0))
    net = EntedGenerator(config).eval()
    net.load_state_dict(load_state_dict(ws))
    val = PairDataset(
        load_training_records(data_root),
        "val",
        self_ref_prob=1.0 if self_reference else 0.0,
        hflip=False,
    )
    val.set_epoch(0)
    landmarks, identity, lpips = Landmarks68(), IdentityEncoder(), LPIPS(find_vgg_weights())

    def rgb01(t: torch.Tensor) -> np.ndarray:
        return ((t[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()

    per_level: dict[str, list[dict]] = {}
    with torch.no_grad():
        for level in levels:
            rows = per_level.setdefault(level, [])
            for i in range(min(n, len(val))):
                item = val[i]
                gt, ref = item["gt"][None], item["ref"][None]
                lq = degrade_level(gt, level)
                gt_id = identity.embed([to_bgr8(gt)])[0]
                lq01, ref01 = rgb01(lq), rgb01(ref)
                guide = stack_guides(
                    [guide_array(ref01, landmarks(to_uint8(ref01)), landmarks(to_uint8(lq01)))],
                    256,
                )
                row = {
                    "agree": float(
                        mean_agreement(agreement(lq, guide[:, :3], guide[:, 3:]), guide[:, 3:])
                    )
                }
                for name, gain in (("trained", 1.0), ("full", 1e6)):
                    config.guide_trust_gain = gain
                    out, aux = net(lq, ref, 0.5, guide=guide, return_aux=True)
                    out = out.clamp(-1, 1)
                    if name == "trained":
                        trust, mask = aux["trust"][max(aux["trust"])], guide[:, 3:]
                        row["trust"] = float((trust * mask).sum() / mask.sum().clamp_min(1e-6))
                    row[f"lpips_{name}"] = float(lpips(out, gt))
                    row[f"id_{name}"] = float(similarity(identity.embed([to_bgr8(out)])[0], gt_id))
                config.guide_trust_gain = 1.0
                rows.append(row)
            print(f"{level}: {len(rows)} faces scored", file=sys.stderr, flush=True)
    return per_level


def fit(per_level: dict, tolerance: float) -> tuple[float, list[dict]]:
    """Each threshold's mean LPIPS / identity per level; the lowest threshold within tolerance."""
    table, best = [], 0.0
    for thr in THRESHOLDS:
        entry = {"threshold": thr, "levels": {}}
        ok = True
        for level, rows in per_level.items():
            full = [r["agree"] >= thr for r in rows]
            lp = np.mean([r["lpips_full"] if f else r["lpips_trained"] for r, f in zip(rows, full)])
            idn = np.mean([r["id_full"] if f else r["id_trained"] for r, f in zip(rows, full)])
            base_lp = np.mean([r["lpips_trained"] for r in rows])
            base_id = np.mean([r["id_trained"] for r in rows])
            entry["levels"][level] = {
                "full_trust_faces": int(sum(full)),
                "lpips": round(float(lp), 4),
                "lpips_change": round(float(lp - base_lp), 4),
                "id": round(float(idn), 4),
                "id_change": round(float(idn - base_id), 4),
            }
            ok &= lp <= base_lp + tolerance and idn >= base_id - tolerance
        entry["within_tolerance"] = bool(ok)
        table.append(entry)
    allowed = [e["threshold"] for e in table if e["within_tolerance"]]
    if allowed:
        best = min(allowed)
    return best, table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("--faces", type=int, default=150, help="CelebA val faces per level")
    ap.add_argument("--levels", nargs="+", default=["severe", "medium", "mild"])
    ap.add_argument("--tolerance", type=float, default=0.0005)
    ap.add_argument(
        "--self-reference",
        action="store_true",
        help="use each face's own augmented ground truth as its reference (no fit written)",
    )
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("-o", "--out", type=Path, default=Path("calib-agreement.json"))
    ap.add_argument("--write", type=Path, help="save the calibrated weights in this folder")
    ap.add_argument("--name", help="name of the calibrated weight set (default: the input's)")
    args = ap.parse_args()

    per_level = score_faces(
        args.weights, args.levels, args.faces, args.data_root, args.self_reference
    )
    for level, rows in per_level.items():
        print(
            f"{level}: mean agreement {np.mean([r['agree'] for r in rows]):.3f}, "
            f"mean trust {np.mean([r['trust'] for r in rows]):.3f}; full trust for all: "
            f"ΔLPIPS {np.mean([r['lpips_full'] - r['lpips_trained'] for r in rows]):+.4f}, "
            f"Δidentity {np.mean([r['id_full'] - r['id_trained'] for r in rows]):+.4f}"
        )
    best, table = fit(per_level, args.tolerance)
    print(
        "| threshold | "
        + " | ".join(f"{lv}: full-trust faces, ΔLPIPS, Δidentity" for lv in per_level)
        + " |"
    )
    for e in table:
        cells = [
            f"{v['full_trust_faces']}, {v['lpips_change']:+.4f}, {v['id_change']:+.4f}"
            for v in e["levels"].values()
        ]
        mark = " ✓" if e["within_tolerance"] else ""
        print(f"| {e['threshold']:.2f}{mark} | " + " | ".join(cells) + " |")
    print(f"chosen threshold: {best:g} (0 = off)")
    args.out.write_text(json.dumps({"best": best, "table": table, "faces": per_level}, indent=1))
    if args.write and not args.self_reference:
        from ented_cli.model.weight_lookup import resolve_weights
        from ented_cli.model.weights import load_state_dict, save_weight_set

        ws = resolve_weights(args.weights)
        extra = dict(ws.info.get("extra", {}), guide_full_trust_agreement=best)
        print(
            save_weight_set(
                load_state_dict(ws),
                args.write,
                args.name or ws.name,
                dict(ws.config, guide_full_trust_agreement=best),
                extra=extra,
                card=ws.info.get("card"),
                inference_dtypes=ws.info.get("inference_dtypes"),
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
