"""`ented eval --synthesize SRC`: turn clean photos of people into a benchmark folder.

SRC is a folder with one sub-folder of aligned photos per person, or a CSV with a path column
(`path` or `aligned`) and a person column (`identity` or `person`), paths relative to the CSV;
an optional `split` column can be filtered (`--split val`). People are taken in natural order of
their names, photos in natural order of their paths. For each person with at least two photos,
the first is the ground truth, degraded with `degrade_level(level)` (deterministic), or with
training's random degradation seeded by `seed` + the person's index when the level is `random`;
the second photo is the reference.

The benchmark is written as BENCH/degraded/<person>.png (lossless, so what is scored is what is
on disk) and BENCH/triplets.csv, which names the original ground truth and reference files (by
absolute path: the source photos are never copied). `ented eval BENCH` scores it again.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ented_cli.errors import InputError, UsageError
from ented_cli.evaluation.faces import read_crop, write_png
from ented_cli.evaluation.triplets import CSV_NAME
from ented_cli.imaging.atomic import write_atomic
from ented_cli.paths import images_in, is_image_name, natural_key, read_path_table, subfolders

LEVELS = ("mild", "medium", "severe", "random")
PATH_COLUMNS = ("path", "aligned", "file", "image")
PERSON_COLUMNS = ("identity", "person", "id")


@dataclass
class People:
    photos: dict[str, list[Path]] = field(default_factory=dict)  # person → photos, in order
    problems: list[str] = field(default_factory=list)


def _from_folder(src: Path) -> People:
    people = People()
    for folder in subfolders(src):
        people.photos[folder.name] = images_in(folder)
    return people


def _from_csv(csv_path: Path, split: str | None) -> People:
    columns = {"photo path": PATH_COLUMNS, "person": PERSON_COLUMNS}
    if split is not None:
        columns["split"] = ("split",)
    table = read_path_table(csv_path, columns, header_required=True, error=UsageError)
    if not table.has_header:
        raise UsageError(f"{csv_path}: empty CSV; it needs a header and one row per photo")
    people = People()
    found: dict[str, list[Path]] = {}
    for row in table.rows:
        where = f"{csv_path}:{row.line}"
        if row.short:
            people.problems.append(f"{where}: too few columns; fix the row")
            continue
        if split is not None and row.cells["split"] != split:
            continue
        cell = row.cells["photo path"]
        path = table.path(cell)
        if not cell or not is_image_name(path):
            continue  # e.g. london.csv rows without an aligned crop
        if not path.is_file():
            people.problems.append(f"{path}: no such file (listed on {where}); fix the path")
            continue
        found.setdefault(row.cells["person"], []).append(path)
    for person in sorted(found, key=natural_key):
        people.photos[person] = sorted(found[person], key=lambda p: natural_key(str(p)))
    if split is not None and not found:
        raise UsageError(f"{csv_path}: no rows with split={split!r}; check --split")
    return people


def read_people(src: Path, split: str | None = None) -> People:
    """Photos per person of a folder of person folders, or of a CSV (see the module docstring)."""
    src = Path(src).expanduser()
    if src.is_file():
        return _from_csv(src, split)
    if not src.is_dir():
        raise UsageError(f"{src}: no such folder or CSV; --synthesize needs photos of people")
    if split is not None:
        raise UsageError(f"--split needs a CSV with a split column; {src} is a folder")
    return _from_folder(src)


def _safe_name(person: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", person).strip("._") or "person"
    name, n = base, 2
    while name.casefold() in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name.casefold())
    return name


def degrade_crop(rgb: np.ndarray, level: str, seed: int) -> np.ndarray:
    """Degraded copy of a uint8 RGB crop at the same size (see the module docstring)."""
    from ented_cli.train.degrade import degrade_image

    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    out = degrade_image(bgr, seed, level=None if level == "random" else level)
    return np.ascontiguousarray(out[:, :, ::-1])


def synthesize(
    people: People,
    bench_dir: Path,
    level: str,
    seed: int,
    limit: int | None = None,
    progress: Callable[[str], None] = lambda name: None,
) -> tuple[Path, list[str]]:
    """Write BENCH/degraded/*.png + BENCH/triplets.csv; returns the CSV and one-line problems."""
    if level not in LEVELS:
        raise UsageError(f"--level {level!r} is unknown; use one of {', '.join(LEVELS)}")
    problems = list(people.problems)
    eligible = [(p, photos) for p, photos in people.photos.items() if len(photos) >= 2]
    if not eligible:
        raise UsageError(
            "no person has two photos or more; --synthesize needs a ground truth and a "
            "reference of the same person"
        )
    eligible = eligible[:limit] if limit else eligible
    (bench_dir / "degraded").mkdir(parents=True, exist_ok=True)
    rows, taken = [], set()
    for index, (person, photos) in enumerate(eligible):
        gt, reference = photos[0], photos[1]
        try:
            degraded = degrade_crop(read_crop(gt), level, seed + index)
        except InputError as e:
            problems.append(str(e))
            continue
        name = _safe_name(person, taken)
        write_png(bench_dir / "degraded" / f"{name}.png", degraded)
        rows.append((f"degraded/{name}.png", str(reference.resolve()), str(gt.resolve())))
        progress(name)
    text = io.StringIO()
    text.write(
        f"# ented eval --synthesize: level={level} seed={seed}; ground truth = first photo\n"
    )
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["degraded", "reference", "gt"])
    writer.writerows(rows)
    csv_path = bench_dir / CSV_NAME
    write_atomic(csv_path, text.getvalue().encode("utf-8"))
    return csv_path, problems
