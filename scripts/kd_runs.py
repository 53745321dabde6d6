"""Two small training runs of one model for `ented explain --compare`: one from data alone, one
distilled from the shipped generator. Both start from the same seeded weights and see the same
degraded faces in the same order; a checkpoint is saved before training and after every epoch.

    python scripts/kd_runs.py --out runs            # writes runs/kd-data/ and runs/kd-distilled/
    ented explain --compare runs/kd-distilled runs/kd-data

Model: the `tiny` preset without the landmark-warp route (training and measuring are blind: the
degraded input is its own reference). Data: `--faces` sharp aligned crops (native_px >= 256) of
the celeba-wild training split in ../shared/data, each degraded once with a fixed seed.
Losses: data run L1(student, clean) + VQ; distilled run adds L1(student, teacher), the teacher
being `--teacher` run blind on the same degraded input. Checkpoints are `epoch-NN.pt` holding
{"G", "model_config", "step", "epoch"}, the subset of a trainer checkpoint that --compare reads.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ented_cli.evaluation.metrics import psnr
from ented_cli.model.config import EntedConfig, preset
from ented_cli.model.generator import EntedGenerator
from ented_cli.model.weight_lookup import resolve_weights
from ented_cli.model.weights import load_state_dict
from ented_cli.train.data import _to_tensor, load_rgb, read_face_csv
from ented_cli.train.degrade import DegradationConfig, degrade

ROOT = Path(__file__).resolve().parents[1]
# Milder than the trainer's default range: a tiny model in a few minutes can learn these.
DEGRADATION = DegradationConfig(
    blur_sigma=(0.5, 3.0), downscale=(2.0, 6.0), noise=(0.0, 10.0), jpeg=(50, 95), gray_prob=0.0
)
FIDELITY = 0.5  # for the teacher, the student and the measurement alike


def pick_faces(data: Path, split: str, count: int) -> list[Path]:
    """`count` sharp, well-labelled faces of `split`, spread evenly over the sorted list."""
    records = read_face_csv(data / "celeba-wild.csv", data)
    paths = sorted(
        r.path
        for r in records
        if r.split == split and r.native_px >= 256 and r.id_consistency >= 0.2
    )
    if len(paths) < count:
        raise SystemExit(f"{data}: only {len(paths)} usable {split} faces, {count} asked for")
    return [paths[i * len(paths) // count] for i in range(count)]


def load_pairs(paths: list[Path], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, degraded) N x 3 x 256 x 256 in [-1, 1]; one fixed degradation per face."""
    clean = torch.stack([_to_tensor(load_rgb(p, 256)) for p in paths])
    degraded = torch.cat(
        [degrade(clean[i : i + 16], seed * 1000 + i, DEGRADATION) for i in range(0, len(clean), 16)]
    )
    return clean, degraded


def load_teacher(spec: str) -> EntedGenerator:
    ws = resolve_weights(spec)
    teacher = EntedGenerator(EntedConfig.from_dict(ws.config))
    teacher.load_state_dict({k: v.float() for k, v in load_state_dict(ws).items()})
    return teacher.eval().requires_grad_(False)


@torch.no_grad()
def restore_all(model: EntedGenerator, lq: torch.Tensor, batch: int = 8) -> torch.Tensor:
    model.eval()
    out = [model(lq[i : i + batch], None, FIDELITY).clamp(-1, 1) for i in range(0, len(lq), batch)]
    return torch.cat(out)


def student_config() -> EntedConfig:
    config = preset("tiny")
    config.use_guide = False  # no landmark warps: trained and measured blind
    return config


def train(name: str, data: dict, teacher_out: torch.Tensor | None, args) -> dict:
    """One run into args.out / name; returns its summary."""
    folder = args.out / name
    folder.mkdir(parents=True, exist_ok=True)
    config = student_config()
    torch.manual_seed(args.seed)  # the same initial weights for both runs
    model = EntedGenerator(config)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(args.seed)  # the same batches for both runs
    gt, lq = data["gt"], data["lq"]
    t0, step, log = time.process_time(), 0, []

    def save(epoch: int) -> None:
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        record = {"G": state, "model_config": config.to_dict(), "step": step, "epoch": epoch}
        torch.save(record, folder / f"epoch-{epoch:02d}.pt")

    save(0)
    for epoch in range(1, args.epochs + 1):
        model.train()
        sums = {"l1_data": 0.0, "l1_teacher": 0.0}
        perm = torch.randperm(len(gt), generator=order)
        for i in range(0, len(perm) - args.batch + 1, args.batch):
            idx = perm[i : i + args.batch]
            out, aux = model(lq[idx], None, FIDELITY, return_aux=True)
            l1_data = F.l1_loss(out, gt[idx])
            loss = l1_data + aux["vq_loss"]
            sums["l1_data"] += l1_data.item()
            if teacher_out is not None:
                l1_teacher = F.l1_loss(out, teacher_out[idx])
                loss = loss + l1_teacher
                sums["l1_teacher"] += l1_teacher.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        save(epoch)
        val = restore_all(model, data["val_lq"])
        record = {
            "run": name,
            "epoch": epoch,
            "step": step,
            "val_psnr": round(float(psnr(val, data["val_gt"]).mean()), 3),
            "cpu_s": round(time.process_time() - t0, 1),
            **{k: round(v / (len(perm) // args.batch), 4) for k, v in sums.items()},
        }
        log.append(record)
        print(json.dumps(record), flush=True)
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return log[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "runs")
    parser.add_argument("--teacher", default=str(ROOT / "weights" / "ented-256-preview.json"))
    parser.add_argument("--faces", type=int, default=256, help="training faces")
    parser.add_argument("--val-faces", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.process_time()
    gt, lq = load_pairs(pick_faces(args.data, "train", args.faces), args.seed)
    val_gt, val_lq = load_pairs(pick_faces(args.data, "val", args.val_faces), args.seed + 1)
    data = {"gt": gt, "lq": lq, "val_gt": val_gt, "val_lq": val_lq}
    teacher = load_teacher(args.teacher)
    teacher_out = restore_all(teacher, lq)
    summary = {
        "input_val_psnr": round(float(psnr(val_lq, val_gt).mean()), 3),
        "teacher_val_psnr": round(float(psnr(restore_all(teacher, val_lq), val_gt).mean()), 3),
        "teacher_train_psnr": round(float(psnr(teacher_out, gt).mean()), 3),
        "prepare_cpu_s": round(time.process_time() - t0, 1),
    }
    print(json.dumps(summary), flush=True)
    del teacher
    summary["kd-data"] = train("kd-data", data, None, args)
    summary["kd-distilled"] = train("kd-distilled", data, teacher_out, args)
    summary["total_cpu_s"] = round(time.process_time() - t0, 1)
    (args.out / "kd-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({"total_cpu_s": summary["total_cpu_s"]}), flush=True)


if __name__ == "__main__":
    main()
