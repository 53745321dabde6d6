"""Find the (degraded, reference(s), ground truth) triplets of a benchmark.

Two forms, both matched up front so a typo is reported before any network runs:

- a folder: `DIR/degraded/<stem>.<ext>`, `DIR/gt/<stem>.<ext>` and `DIR/reference/<stem>.<ext>`
  or `DIR/reference/<stem>/` (several reference photos of that person), matched by file stem;
- a CSV (`--csv FILE`, or `DIR/triplets.csv`): columns `degraded,reference,gt` (header optional,
  several references separated by `;`, paths relative to the CSV, `#` lines skipped; the dialect
  of `paths.read_path_table`, shared with `restore --pairs`).

A triplet with a missing file is not fatal: it becomes a one-line problem naming the file, and the
run carries on with the others (exit 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ented_cli.errors import UsageError
from ented_cli.paths import images_in, read_path_table

CSV_NAME = "triplets.csv"
CSV_COLUMNS = ("degraded", "reference", "gt")
LAYOUT_HELP = (
    "DIR/degraded/, DIR/reference/ and DIR/gt/ matched by file stem, or DIR/triplets.csv "
    "with columns degraded,reference,gt"
)


@dataclass
class Triplet:
    name: str  # unique within the benchmark; names the row in reports
    degraded: Path
    references: list[Path]
    gt: Path


@dataclass
class Benchmark:
    triplets: list[Triplet] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each, naming the file
    source: str = ""  # what was read, for the report


def _by_stem(folder: Path) -> dict[str, list[Path]]:
    stems: dict[str, list[Path]] = {}
    for path in images_in(folder):
        stems.setdefault(path.stem, []).append(path)
    return stems


def _one(
    candidates: list[Path], what: str, degraded: Path, folder: Path
) -> tuple[Path | None, str]:
    stem = degraded.stem
    if not candidates:
        return (
            None,
            f"{degraded}: no {what} {folder / stem}.<ext>; add it or remove {degraded.name}",
        )
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        return None, f"{folder}: several {what} files for {stem} ({names}); keep one"
    return candidates[0], ""


def read_folder(root: Path) -> Benchmark:
    """Triplets of the folder layout (see the module docstring)."""
    folders = {name: root / name for name in ("degraded", "reference", "gt")}
    for name, folder in folders.items():
        if not folder.is_dir():
            raise UsageError(f"{root}: no {name}/ folder; a benchmark holds {LAYOUT_HELP}")
    bench = Benchmark(source=str(root))
    gts, refs = _by_stem(folders["gt"]), _by_stem(folders["reference"])
    degraded = _by_stem(folders["degraded"])
    for stem, paths in degraded.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            bench.problems.append(
                f"{folders['degraded']}: several files for {stem} ({names}); keep one"
            )
            continue
        gt, problem = _one(gts.get(stem, []), "ground truth", paths[0], folders["gt"])
        if gt is None:
            bench.problems.append(problem)
            continue
        ref_paths = list(refs.get(stem, []))
        ref_folder = folders["reference"] / stem
        if ref_folder.is_dir():
            ref_paths += images_in(ref_folder)
        if not ref_paths:
            bench.problems.append(
                f"{paths[0]}: no reference {ref_folder}.<ext> nor folder {ref_folder}/; add a "
                "photo of the same person"
            )
            continue
        bench.triplets.append(Triplet(stem, paths[0], ref_paths, gt))
    for stem in gts.keys() - degraded.keys():
        bench.problems.append(
            f"{gts[stem][0]}: ground truth without a degraded image; add degraded/{stem}.<ext> "
            "or remove it"
        )
    return bench


def _unique_name(stem: str, taken: set[str]) -> str:
    name, n = stem, 2
    while name in taken:
        name, n = f"{stem}_{n}", n + 1
    taken.add(name)
    return name


def read_csv(path: Path) -> Benchmark:
    """Triplets listed in a CSV (see the module docstring); rows with missing files are problems."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"{path}: no such CSV file; check the --csv path")
    table = read_path_table(path, {name: (name,) for name in CSV_COLUMNS}, error=UsageError)
    bench = Benchmark(source=str(path))
    taken: set[str] = set()
    for row in table.rows:
        where = f"{path}:{row.line}"
        if row.short:
            bench.problems.append(
                f"{where}: expected the columns degraded,reference,gt; fix the row"
            )
            continue
        cells = [row.cells[name] for name in CSV_COLUMNS]
        degraded, gt = (table.path(cell) if cell else None for cell in (cells[0], cells[2]))
        refs = table.paths(cells[1])
        missing = [p for p in (degraded, *refs, gt) if p is not None and not p.is_file()]
        if not all(cells) or not refs:
            bench.problems.append(f"{where}: a degraded, reference or gt cell is empty; fill it in")
        elif missing:
            bench.problems.append(
                f"{missing[0]}: no such file (listed on {where}); fix the path "
                f"(relative to {path.parent})"
            )
        else:
            name = _unique_name(degraded.stem, taken)
            bench.triplets.append(Triplet(name, degraded, refs, gt))
    return bench


def read_benchmark(root: Path | None, csv_path: Path | None) -> Benchmark:
    """The benchmark named on the command line: --csv, else DIR/triplets.csv, else the folders."""
    if csv_path is not None:
        return read_csv(csv_path)
    if root is None:
        raise UsageError("give a benchmark folder DIR, --csv FILE or --synthesize SRC")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder; a benchmark holds {LAYOUT_HELP}")
    if (root / CSV_NAME).is_file():
        return read_csv(root / CSV_NAME)
    return read_folder(root)
