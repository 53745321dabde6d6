"""`ented explain --compare RUN_A RUN_B`: the three hypotheses of Cheng et al. (CVPR 2020) on two
training runs of a restorer, each a folder of checkpoints saved in training order.

Every checkpoint k of a run is measured on the same few aligned faces, degraded the same way
(`degrade_level(..., "medium")`), with the σ-entropy measure of measure.py. The restorer runs
blind (the degraded input is its own reference), so the input is the one image measured, like
the paper's classifier input, and the distortion is taken over the whole restored image.

* Knowledge points S_k: cells whose entropy is below the background's mean by more than b (the
  paper's rule). Foreground = the cells at least half inside the face ellipse (regions.py),
  background = the others.
* H1, more knowledge: N_fg and N_bg (points per face) of the final checkpoint, and
  λ = N_fg / (N_fg + N_bg) over all faces.
* The first checkpoint is the starting point w_0 (the paper's initial weights): it anchors the
  weight path, and its points are not counted as learned.
* H2, faster and at once: the weight path L_k = Σ_{j<k} ‖w_{j+1} − w_j‖ / ‖w_0‖. A foreground
  point of the final checkpoint is learned at the first k ≥ 1 from which it stays a point, and
  gets D = L_k; D_mean and D_std are the mean and standard deviation over all those points.
* H3, stability: ρ = |S_final| / |S_1 ∪ … ∪ S_final| on foreground points, summed over faces
  (the paper's form, with its m̂ = the final checkpoint).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ented_cli.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PARTIAL,
    EntedError,
    UsageError,
    WeightsError,
)
from ented_cli.paths import DEFAULT_MAX_PIXELS, InputItem, expand_inputs, natural_key

Say = Callable[[str], None]

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = REPO_ROOT / "examples"
# The London set's first two people, when ../shared/data is there (aligned crops, CC BY 4.0).
LONDON_FACES = ("001_neutral.jpg", "002_neutral.jpg")
MEASURE_LEVEL = "medium"  # how the measured faces are degraded (train/degrade.py LEVELS)


# ------------------------------------------------------------------------------- checkpoints
def _is_weight_set(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and str(data.get("format", "")).startswith("ented-weights/")


def _checkpoint_in(folder: Path) -> Path | None:
    """A trainer out_dir's checkpoint.pt, else the one weight set in the folder or its export/."""
    if (folder / "checkpoint.pt").is_file():
        return folder / "checkpoint.pt"
    for where in (folder, folder / "export"):
        sets = [p for p in sorted(where.glob("*.json")) if _is_weight_set(p)]
        if len(sets) == 1:
            return sets[0]
    return None


def find_checkpoints(run: Path) -> list[Path]:
    """The checkpoints of a run folder in training order: trainer checkpoints (`*.pt`), ented
    weight sets (`*.json`) and subfolders holding one (a copy of a trainer's out_dir or of its
    export/), sorted by name in natural order (step-2 before step-10)."""
    run = Path(run)
    if not run.is_dir():
        raise UsageError(f"{run}: no such run folder; pass a folder of checkpoints")
    found = []
    # Natural order: 'step-2' before 'step-10'.
    for path in sorted(run.iterdir(), key=lambda p: natural_key(p.name)):
        if path.is_dir():
            inner = _checkpoint_in(path)
            if inner is not None:
                found.append(inner)
        elif path.suffix == ".pt" or (path.suffix == ".json" and _is_weight_set(path)):
            found.append(path)
    if len(found) < 2:
        raise UsageError(
            f"{run}: {len(found)} checkpoint(s) found, at least 2 are needed (*.pt, ented "
            "weight sets *.json, or subfolders holding one), named in training order"
        )
    return found


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(generator state in float32, model config) of a trainer checkpoint or a weight set. Of a
    trainer checkpoint, the EMA generator (what `ented export` ships) when it holds one."""
    if path.suffix == ".pt":
        try:  # weights_only: a checkpoint is data, never code
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"{path}: cannot be read as a checkpoint ({first})") from exc
        state = saved.get("G_ema", saved.get("G")) if isinstance(saved, dict) else None
        if state is None or "model_config" not in saved:
            raise WeightsError(
                f"{path}: not an ented checkpoint (needs G_ema or G and model_config)"
            )
        config = saved["model_config"]
    else:
        from ented_cli.model.weight_lookup import resolve_weights
        from ented_cli.model.weights import load_state_dict

        ws = resolve_weights(str(path))
        state, config = load_state_dict(ws), ws.config
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, config


class WeightPath:
    """The running weight-path length L_k = Σ_{j<k} ‖w_{j+1} − w_j‖ / ‖w_0‖ over checkpoints,
    w being every floating-point tensor of the generator's state, flattened."""

    def __init__(self):
        self.lengths: list[float] = []
        self._keys: list[str] | None = None
        self._previous: torch.Tensor | None = None
        self._scale = 1.0

    def add(self, state: Mapping[str, torch.Tensor], where: str = "checkpoint") -> float:
        keys = sorted(k for k, v in state.items() if v.is_floating_point())
        if self._keys is None:
            self._keys = keys
        elif keys != self._keys:
            raise WeightsError(
                f"{where}: other tensors than the run's first checkpoint; a run is one model"
            )
        w = torch.cat([state[k].detach().double().flatten() for k in keys])
        if self._previous is None:
            self._scale = float(w.norm()) or 1.0
            self.lengths.append(0.0)
        else:
            if w.shape != self._previous.shape:
                raise WeightsError(f"{where}: tensor shapes differ from the run's first checkpoint")
            self.lengths.append(self.lengths[-1] + float((w - self._previous).norm()) / self._scale)
        self._previous = w
        return self.lengths[-1]


def weight_path_lengths(states: Iterable[Mapping[str, torch.Tensor]]) -> np.ndarray:
    path = WeightPath()
    for state in states:
        path.add(state)
    return np.array(path.lengths)


# ------------------------------------------------------------------------------------ metrics
@dataclass
class RunKnowledge:
    """Knowledge points of one run: `points` K x F x cells x cells (checkpoint, face, cell)."""

    run: str
    checkpoints: list[str]
    points: np.ndarray
    foreground: np.ndarray  # cells x cells bool
    path: np.ndarray  # K weight-path lengths, path[0] = 0
    seconds: float = 0.0

    def _counts(self, k: int, cells: np.ndarray) -> np.ndarray:
        return self.points[k][:, cells].sum(axis=1)  # per face

    @property
    def n_fg(self) -> float:
        return float(self._counts(-1, self.foreground).mean())

    @property
    def n_bg(self) -> float:
        return float(self._counts(-1, ~self.foreground).mean())

    @property
    def ratio(self) -> float | None:
        """λ = N_fg / (N_fg + N_bg) of the final checkpoint; None without any point."""
        total = self.n_fg + self.n_bg
        return self.n_fg / total if total else None

    def learned_at(self) -> np.ndarray:
        """For each foreground point of the final checkpoint, the first checkpoint from which it
        stays a point to the end; at least 1, as nothing is learned at the starting weights."""
        stays = np.flip(np.logical_and.accumulate(np.flip(self.points, 0), axis=0), 0)
        first = stays.argmax(axis=0)  # stays is False ... False True ... True along k
        return np.maximum(first[self.points[-1] & self.foreground], 1)

    @property
    def distances(self) -> np.ndarray:
        return self.path[self.learned_at()]

    @property
    def d_mean(self) -> float | None:
        d = self.distances
        return float(d.mean()) if d.size else None

    @property
    def d_std(self) -> float | None:
        d = self.distances
        return float(d.std()) if d.size else None

    @property
    def rho(self) -> float | None:
        """ρ = |S_final| / |S_1 ∪ … ∪ S_final| (foreground points, summed over faces). S_0, the
        starting weights' points, is left out: a random network has points too, none learned."""
        fg = self.points[1:, :, self.foreground]
        ever = int(fg.any(axis=0).sum())
        return int(fg[-1].sum()) / ever if ever else None

    def to_json(self, maps: bool = False) -> dict:
        """The numbers; with `maps`, also every knowledge point (checkpoint x face x cells x
        cells, 0/1), so that other definitions can be tried without measuring again."""

        def num(x):
            return None if x is None else round(x, 4)

        out = {
            "run": self.run,
            "checkpoints": len(self.checkpoints),
            "faces": int(self.points.shape[1]),
            "fg_points": num(self.n_fg),
            "bg_points": num(self.n_bg),
            "ratio": num(self.ratio),
            "d_mean": num(self.d_mean),
            "d_std": num(self.d_std),
            "rho": num(self.rho),
            "path_lengths": [round(float(v), 4) for v in self.path],
            "fg_points_per_checkpoint": [
                round(float(self._counts(k, self.foreground).mean()), 2)
                for k in range(len(self.path))
            ],
            "seconds": round(self.seconds, 1),
        }
        if maps:
            out["foreground"] = self.foreground.astype(int).tolist()
            out["points"] = self.points.astype(int).tolist()
        return out


# (label, attribute, words when A's value is larger / smaller, which the hypotheses predict
# for the distilled run)
CHECKS = (
    ("H1", "foreground points", "n_fg", ("more", "fewer"), "more"),
    ("H1", "λ", "ratio", ("a higher", "a lower"), "a higher"),
    ("H2", "D_mean", "d_mean", ("a larger", "a smaller"), "a smaller"),
    ("H2", "D_std", "d_std", ("a larger", "a smaller"), "a smaller"),
    ("H3", "ρ", "rho", ("a higher", "a lower"), "a higher"),
)


def verdicts(a: RunKnowledge, b: RunKnowledge) -> list[str]:
    """One comparison per metric, phrased 'A has more/a smaller ... than B (a vs b)'."""
    lines = []
    for hypothesis, label, attr, (larger, smaller), _ in CHECKS:
        va, vb = getattr(a, attr), getattr(b, attr)
        if va is None or vb is None:
            lines.append(f"{hypothesis}: {label} is undefined for a run without knowledge points")
        elif math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-12):
            lines.append(f"{hypothesis}: A and B have the same {label} ({va:.3g})")
        else:
            word = larger if va > vb else smaller
            lines.append(f"{hypothesis}: A has {word} {label} than B ({va:.3g} vs {vb:.3g})")
    return lines


def verdict_json(a: RunKnowledge, b: RunKnowledge) -> dict:
    """{"fg_points": "more", ...}: A's side of each comparison (None when undefined)."""
    out: dict = {"A": a.run, "B": b.run}
    for _, _, attr, (larger, smaller), _ in CHECKS:
        va, vb = getattr(a, attr), getattr(b, attr)
        if va is None or vb is None:
            out[attr] = None
        elif math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-12):
            out[attr] = "same"
        else:
            out[attr] = (larger if va > vb else smaller).removeprefix("a ")
    return out


def table(runs: list[RunKnowledge]) -> str:
    def cell(x, fmt):
        return "-" if x is None else format(x, fmt)

    rows = [("run", "checkpoints", "N_fg", "N_bg", "λ", "D_mean", "D_std", "ρ")]
    for tag, r in zip("AB", runs):
        rows.append(
            (
                f"{tag} {r.run}",
                str(len(r.checkpoints)),
                cell(r.n_fg, ".1f"),
                cell(r.n_bg, ".1f"),
                cell(r.ratio, ".3f"),
                cell(r.d_mean, ".4f"),
                cell(r.d_std, ".4f"),
                cell(r.rho, ".3f"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
        for row in rows
    )


# -------------------------------------------------------------------------------- measuring
class BlindRestorer(nn.Module):
    """The generator with no reference: the input serves as its own, as `ented restore` does
    without --ref, so the degraded input is the only image whose cells are measured."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, lq, refs, fidelity):
        return self.generator(lq, None, fidelity)


def foreground_cells(cells: int, size: int = 256) -> np.ndarray:
    """cells x cells bool: the cells at least half inside the face ellipse."""
    from ented_cli.explain.regions import region_masks

    face = region_masks(size, ("face",))["face"]
    side = size // cells
    return face.reshape(cells, side, cells, side).mean(axis=(1, 3)) >= 0.5


def knowledge_points(restore, faces: list[torch.Tensor], settings, foreground: np.ndarray):
    """F x cells x cells bool: each face's knowledge points under `restore`."""
    from ented_cli.explain.measure import explain

    whole = {"image": np.ones(faces[0].shape[-2:], np.float32)}
    maps = []
    for lq in faces:
        no_refs = lq.new_zeros(1, 0, *lq.shape)
        entropy = explain(restore, lq, no_refs, whole, settings, ref_share=False)["image"].entropy[
            0
        ]
        background = entropy[~foreground].mean()
        maps.append(background - entropy > settings.b)
    return np.stack(maps)


def measure_run(
    run: Path, checkpoints: list[Path], faces, settings, fidelity: float, device, dtype, step=None
) -> RunKnowledge:
    """RunKnowledge of one run: every checkpoint measured on every face (`step(name)` after
    each checkpoint)."""
    from ented_cli.explain.model_adapter import make_restore_fn
    from ented_cli.model.config import EntedConfig
    from ented_cli.model.generator import EntedGenerator

    t0 = time.perf_counter()
    foreground = foreground_cells(settings.cells, faces[0].shape[-1])
    path, points = WeightPath(), []
    for ckpt in checkpoints:
        state, config = load_checkpoint(ckpt)
        path.add(state, str(ckpt))
        generator = EntedGenerator(EntedConfig.from_dict(config))
        try:
            generator.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsError(f"{ckpt}: does not fit its own model config ({exc})") from exc
        restore = make_restore_fn(BlindRestorer(generator.to(device, dtype)), fidelity)
        points.append(knowledge_points(restore, faces, settings, foreground))
        if step is not None:
            step(ckpt.name)
    return RunKnowledge(
        str(run),
        [str(c) for c in checkpoints],
        np.stack(points),
        foreground,
        np.array(path.lengths),
        time.perf_counter() - t0,
    )


# ---------------------------------------------------------------------------------- command
@dataclass
class CompareRequest:
    runs: tuple[Path, Path]
    inputs: tuple[str, ...] = ()  # faces to measure; none: default_faces()
    aligned: bool = False
    faces: str = "largest"
    steps: int = 30
    samples: int = 2
    seed: int = 0
    fidelity: float = 0.5
    device: str = "auto"
    dtype: str = "auto"
    as_json: bool = False
    maps: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    quiet: bool = False


def shared_data() -> Path:
    return Path(os.environ.get("ENTED_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def default_faces() -> list[tuple[InputItem, bool]]:
    """(item, is an aligned crop): the bundled example photos and, when ../shared/data is
    there, two aligned London faces."""
    photos = [p for p in sorted(EXAMPLES.glob("*")) if p.suffix.lower() in (".jpg", ".png")]
    london = shared_data() / "london" / "aligned"
    aligned = [london / name for name in LONDON_FACES if (london / name).is_file()]
    return [(InputItem(p, str(p), Path(p.name)), False) for p in photos] + [
        (InputItem(p, str(p), Path(p.name)), True) for p in aligned
    ]


def load_faces(items, faces: str, max_pixels, device, error: Say, warn: Say):
    """([degraded aligned 3 x 256 x 256 faces in [-1, 1]], inputs that failed)."""
    from ented_cli.explain.runner import FaceFinder, _to_tensor
    from ented_cli.train.degrade import degrade_level

    finders = {flag: FaceFinder(flag, faces, max_pixels) for flag in (False, True)}
    tensors, failed = [], 0
    for item, aligned in items:
        finder = finders[aligned]
        try:
            crops = finder.crops(finder.read(item))
        except EntedError as e:
            error(str(e))
            failed += 1
            continue
        if not crops:
            warn(f"{item.display}: no face found; not measured")
        for _, crop in crops:
            clean = _to_tensor(crop, "cpu")[None]
            tensors.append(degrade_level(clean, MEASURE_LEVEL)[0].to(device))
    return tensors, failed


def run_compare(req: CompareRequest, error: Say, warn: Say) -> int:
    from ented_cli.cli.progress import ProgressBar
    from ented_cli.explain.measure import Settings
    from ented_cli.model.restorer import pick_device, pick_dtype

    checkpoints = [find_checkpoints(run) for run in req.runs]  # usage errors before any work
    if req.inputs:
        found, problems = expand_inputs(req.inputs)
        for p in problems:
            error(p)
        items = [(item, req.aligned) for item in found]
    else:
        items, problems = default_faces(), []
        if not items:
            raise UsageError(
                f"no faces to measure ({EXAMPLES} is absent); pass photos, or aligned crops "
                "with --aligned, as INPUTS"
            )
    device = pick_device(req.device)
    dtype = pick_dtype(req.dtype, device)
    faces, failed = load_faces(items, req.faces, req.max_pixels, device, error, warn)
    if not faces:
        error("no face to measure; pass photos with a clearly visible face as INPUTS")
        return EXIT_FAILURE

    settings = Settings(steps=req.steps, samples=req.samples, seed=req.seed)
    with ProgressBar("measuring", sum(map(len, checkpoints)), req.quiet) as step:
        runs = [
            measure_run(run, ckpts, faces, settings, req.fidelity, device, dtype, step)
            for run, ckpts in zip(req.runs, checkpoints)
        ]
    a, b = runs
    report = "\n".join(
        [
            f"{len(faces)} faces degraded '{MEASURE_LEVEL}', measured blind "
            f"(steps {settings.steps}, samples {settings.samples}, seed {settings.seed})",
            table(runs),
            *verdicts(a, b),
            "If A is the distilled run, the paper's hypotheses predict more foreground points "
            "and a higher λ (H1), a smaller D_mean and D_std (H2), a higher ρ (H3).",
        ]
    )
    if req.as_json:  # stdout carries only the JSON lines
        for r in runs:
            sys.stdout.write(json.dumps(r.to_json(req.maps)) + "\n")
        sys.stdout.write(json.dumps({"compare": verdict_json(a, b)}) + "\n")
        if not req.quiet:
            sys.stderr.write(report + "\n")
    else:
        sys.stdout.write(report + "\n")
    sys.stdout.flush()
    return EXIT_PARTIAL if failed or problems else EXIT_OK
