"""Same-identity training pairs (ground truth + reference) from the face CSVs, DESIGN.md §4.

The CSV format is the one of `shared/data/celeba-wild.csv`: `path` (relative to the data root),
`identity`, `split` (optional, default "train"), `native_px`, `id_consistency`. Degradation is
not done here: the trainer degrades whole batches, on the GPU when there is one.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ented_cli.errors import InputError

TRAINING_CSVS = (
    "celeba-wild.csv",
    "celebface17.csv",
    "studio.csv",
    "faces.csv",
)  # faces.csv: `ented prepare-data`
_REQUIRED = ("path", "identity", "native_px", "id_consistency")


@dataclass(frozen=True)
class FaceRecord:
    path: Path
    identity: str
    split: str
    native_px: float  # side of the crop in source pixels (< crop size: upsampled)
    id_consistency: float  # cosine to the identity's other photos; low = label probably wrong


def read_face_csv(csv_path: Path, root: Path) -> list[FaceRecord]:
    """Read one face CSV; paths in it are relative to `root`."""
    csv_path, root = Path(csv_path), Path(root)
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(
                    f"{csv_path}: missing column(s) {', '.join(missing)}; "
                    f"it needs {', '.join(_REQUIRED)} (split optional)"
                )
            records = []
            for line, row in enumerate(reader, start=2):
                try:
                    records.append(
                        FaceRecord(
                            path=root / row["path"],
                            identity=row["identity"],
                            split=(row.get("split") or "train").strip(),
                            native_px=float(row["native_px"]),
                            id_consistency=float(row["id_consistency"]),
                        )
                    )
                except (TypeError, ValueError) as e:
                    raise InputError(
                        f"{csv_path}:{line}: bad value ({e}); "
                        "native_px and id_consistency must be numbers"
                    ) from None
    except FileNotFoundError:
        raise InputError(f"{csv_path}: no such CSV file; check the data folder") from None
    return records


def load_training_records(data_root: Path) -> list[FaceRecord]:
    """All records of celeba-wild, celebface17 and studio CSVs found directly in `data_root`."""
    data_root = Path(data_root)
    found = [data_root / name for name in TRAINING_CSVS if (data_root / name).is_file()]
    if not found:
        raise InputError(
            f"{data_root}: none of {', '.join(TRAINING_CSVS)} found; "
            "make one with `ented prepare-data PHOTOS DIR` or pass --data-root"
        )
    return [r for path in found for r in read_face_csv(path, data_root)]


def load_rgb(path: Path, size: int) -> np.ndarray:
    """size×size float32 RGB in [0, 1]; larger images shrink with INTER_AREA."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(
            f"{path}: cannot read the image; check that the file exists and is a JPEG/PNG"
        )
    h, w = img.shape[:2]
    if (h, w) != (size, size):
        interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_CUBIC
        img = cv2.resize(img, (size, size), interpolation=interp)
    return img[:, :, ::-1].astype(np.float32) / 255.0


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))) * 2 - 1


def augment_copy(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip, small similarity transform and colour jitter: a 'reference' that is the GT itself."""
    if rng.random() < 0.5:
        rgb = rgb[:, ::-1]
    size = rgb.shape[0]
    angle = rng.uniform(-5, 5)
    scale = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-0.03, 0.03, size=2) * size
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    m[:, 2] += shift
    rgb = cv2.warpAffine(
        np.ascontiguousarray(rgb),
        m,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    # Colour jitter: brightness, contrast (around the mean), saturation (around the gray).
    rgb = rgb * rng.uniform(0.9, 1.1)
    rgb = (rgb - rgb.mean()) * rng.uniform(0.9, 1.1) + rgb.mean()
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    rgb = (rgb - gray[..., None]) * rng.uniform(0.9, 1.1) + gray[..., None]
    return np.clip(rgb, 0, 1).astype(np.float32)


class PairDataset(torch.utils.data.Dataset):
    """Item i: GT = photo i, reference = another photo of the same identity (or a GT copy).

    Returns dict(gt=3×H×W, ref=3×H×W, both float32 in [-1, 1], weight=float, identity=str).
    `weight` = clamp(native_px / size, 0.5, 1) down-weights upsampled (soft) ground truths.
    All randomness of item i comes from (seed, epoch, i), so any worker order gives the same data.
    """

    def __init__(
        self,
        records: list[FaceRecord],
        split: str = "train",
        min_id_consistency: float = 0.2,
        min_native_px: float = 0.0,
        self_ref_prob: float = 0.2,
        ref_augment_prob: float = 0.0,
        size: int = 256,
        seed: int = 0,
        hflip: bool = True,
    ) -> None:
        self.records = [
            r
            for r in records
            if r.split == split
            and r.id_consistency >= min_id_consistency
            and r.native_px >= min_native_px
        ]
        self.split = split
        self.self_ref_prob = self_ref_prob
        self.ref_augment_prob = ref_augment_prob
        self.size = size
        self.seed = seed
        self.hflip = hflip
        # In shared memory so that persistent DataLoader workers (which hold copies of this
        # dataset) see `set_epoch` from the main process.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        by_identity: dict[str, list[int]] = {}
        for i, r in enumerate(self.records):
            by_identity.setdefault(r.identity, []).append(i)
        self.by_identity = by_identity

    @property
    def identities(self) -> list[str]:
        return sorted(self.by_identity)

    @property
    def weights(self) -> list[float]:
        """Per-item weights (see class docstring), e.g. for a WeightedRandomSampler."""
        return [self._weight(r) for r in self.records]

    def _weight(self, r: FaceRecord) -> float:
        return min(1.0, max(0.5, r.native_px / self.size)) if math.isfinite(r.native_px) else 0.5

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw new references and augmentations (call before each epoch's `iter(loader)`)."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.records)

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, i])

    def pick(self, i: int) -> tuple[FaceRecord, FaceRecord | None]:
        """The GT record of item i and its reference record (None = augmented copy of the GT)."""
        return self._pick(i, self._rng(i))

    def _pick(self, i: int, rng: np.random.Generator) -> tuple[FaceRecord, FaceRecord | None]:
        gt = self.records[i]
        others = [j for j in self.by_identity[gt.identity] if j != i]
        if not others or rng.random() < self.self_ref_prob:
            return gt, None
        return gt, self.records[others[int(rng.integers(len(others)))]]

    def __getitem__(self, i: int) -> dict:
        rng = self._rng(i)
        gt_rec, ref_rec = self._pick(i, rng)
        gt = load_rgb(gt_rec.path, self.size)
        if self.hflip and rng.random() < 0.5:
            gt = gt[:, ::-1]
        if ref_rec is None:
            ref = augment_copy(gt, rng)
        else:
            ref = load_rgb(ref_rec.path, self.size)
            if rng.random() < self.ref_augment_prob:
                ref = augment_copy(ref, rng)
            elif self.hflip and rng.random() < 0.5:
                ref = ref[:, ::-1]
        return {
            "gt": _to_tensor(gt),
            "ref": _to_tensor(ref),
            "weight": self._weight(gt_rec),
            "identity": gt_rec.identity,
        }
