"""Reference photos: where they come from (CLI flags) and which face each input face gets.

Sources:
- `--ref FILE` (repeatable): each file is its own person, named after the file stem.
- `--ref-dir DIR`: a gallery. A sub-folder is one person (every image inside it, at any depth, is
  a photo of that person, named after the folder); a loose image file is its own person, named
  after its stem. Equal names are the same person, so `alice.jpg` next to `alice/` merges.
- `--pairs CSV`: rows `input,ref` (header optional); a ref cell may list several files split by
  `;`; relative paths are relative to the CSV's folder.

Which files are images, how folders are scanned and how the CSV is parsed is `ented_cli.paths`'s.

This module is pure Python + numpy: the pipeline reads, detects and aligns the reference photos
and hands over `ReferenceFace`s with their identity embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from ented_cli.errors import InputError
from ented_cli.faces.identity import MATCH_THRESHOLD, similarity
from ented_cli.paths import READABLE_LIST, file_key, read_path_table, scan_folder

MAX_REFS = 4  # references handed to the generator per face; more add cost, rarely texture

# --pairs columns and the header names that mean them.
PAIRS_COLUMNS = {
    "input": ("input", "inputs", "lq", "image"),
    "ref": ("ref", "refs", "reference", "references"),
}


@dataclass(eq=False)  # eq=False: numpy fields make the generated __eq__ ambiguous
class ReferenceFace:
    """One aligned reference face: whose it is, where it came from, its crop and embedding."""

    person: str
    path: Path
    crop: np.ndarray  # aligned 256x256 uint8 BGR crop
    embedding: np.ndarray  # (128,) identity descriptor of `crop`


class Match(NamedTuple):
    """Result of pairing one input face with the gallery.

    `person` is None when no person reaches the threshold; `similarity` is then the best
    similarity seen (useful in reports), `closest` the person it belongs to, and `faces` is
    empty.
    """

    person: str | None
    similarity: float
    faces: list[ReferenceFace]
    closest: str | None = None  # the most similar person when `person` is None


def collect_reference_files(
    ref_files: Sequence[Path], ref_dir: Path | None
) -> list[tuple[str, Path]]:
    """(person, path) for every reference photo given by `--ref` and `--ref-dir`.

    `--ref` files come first in the order given, then the gallery in natural order (scanned by
    `paths.scan_folder`: hidden names skipped, links followed once). The same file given twice
    is listed once. Raises InputError for a missing file or folder, a folder given as `--ref`, a
    file given as `--ref-dir`, a gallery folder that cannot be listed, or one without any image.
    """
    found: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def add(person: str, path: Path) -> None:
        key = file_key(path)
        if key not in seen:
            seen.add(key)
            found.append((person, path))

    for raw in ref_files:
        path = Path(raw).expanduser()
        if path.is_dir():
            raise InputError(
                f"reference {path} is a folder: pass it with --ref-dir instead of --ref"
            )
        if not path.is_file():
            raise InputError(f"reference {path} does not exist: check the --ref path")
        add(path.stem, path)

    if ref_dir is not None:
        root = Path(ref_dir).expanduser()
        if root.is_file():
            raise InputError(f"reference gallery {root} is a file: pass it with --ref instead")
        if not root.is_dir():
            raise InputError(f"reference gallery {root} does not exist: check the --ref-dir path")
        scan = scan_folder(root, recursive=True)
        if scan.problems:
            raise InputError(scan.problems[0])
        # A top-level file is its own person; anything deeper belongs to its top-level folder.
        for rel in scan.images:
            add(rel.parts[0] if len(rel.parts) > 1 else rel.stem, root / rel)
        if not scan.images:
            raise InputError(
                f"reference gallery {root} holds no images: add one sub-folder per person "
                f"or image files ({READABLE_LIST})"
            )
    return found


def _row_error(path: Path, line: int, reason: str) -> InputError:
    return InputError(f"{path} line {line}: {reason}")


@dataclass
class PairsCsv:
    pairs: list[tuple[Path, list[Path]]]  # (input, [refs]) per usable row, in file order
    problems: list[str]  # one line per row left out because a file it names does not exist


def read_pairs_csv(path: Path) -> PairsCsv:
    """The rows of a `--pairs` CSV, in file order.

    Columns `input,ref` in the dialect of `paths.read_path_table`: header optional (recognised
    by its names, extra named columns are ignored), blank and `#` lines skipped, paths relative
    to the CSV's folder. The CSV is checked up front so a typo does not surface hours into a
    batch: a row naming a file that does not exist is left out with a one-line problem (the
    batch does the other rows); a malformed row, or an input listed twice, is an InputError.
    Messages name the CSV and the line number.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"pairs file {path} does not exist: check the --pairs path")
    table = read_path_table(path, PAIRS_COLUMNS)
    base = path.parent

    pairs: list[tuple[Path, list[Path]]] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for row in table.rows:
        line = row.line
        if row.short or row.spills:
            raise _row_error(path, line, "expected the columns 'input,ref': fix or remove the row")
        input_cell, ref_cell = row.cells["input"], row.cells["ref"]
        if not input_cell or not ref_cell:
            raise _row_error(path, line, "an 'input' or 'ref' cell is empty: give both paths")
        input_path = table.path(input_cell)
        if not input_path.is_file():
            problems.append(
                f"{path} line {line}: input {input_path} does not exist: "
                f"fix the path (relative to {base})"
            )
            continue
        key = file_key(input_path)
        if key in first_line:
            raise _row_error(
                path,
                line,
                f"input {input_cell} is listed again (first on line {first_line[key]}): "
                "merge its references into one cell separated by ';'",
            )
        refs = table.paths(ref_cell)
        if not refs:
            raise _row_error(path, line, "the 'ref' cell lists no file: give paths split by ';'")
        gone = next((ref for ref in refs if not ref.is_file()), None)
        first_line[key] = line
        if gone is not None:
            problems.append(
                f"{path} line {line}: reference {gone} does not exist: "
                f"fix the path (relative to {base})"
            )
            continue
        pairs.append((input_path, refs))

    if not pairs and not problems:
        raise InputError(f"pairs file {path} lists no pairs: add rows 'input,ref'")
    return PairsCsv(pairs, problems)


class _Encoder(Protocol):
    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray: ...


class ReferenceGallery:
    """Reference faces grouped by person, matched against input faces by identity similarity.

    A single `--ref` with a single input face still goes through `match`, so a wrong reference
    is reported as unmatched rather than silently pasted onto a stranger. A caller that must
    pair anyway (the user insists on that reference) passes `threshold=-1`: cosine similarity
    is never below -1, so the best person is always taken.
    """

    def __init__(self, faces: Sequence[ReferenceFace] = (), max_refs: int = MAX_REFS) -> None:
        if max_refs < 1:
            raise ValueError(f"max_refs must be at least 1, got {max_refs}")
        self.max_refs = max_refs
        self._faces: list[ReferenceFace] = []
        self._stack: np.ndarray | None = None  # (n_faces, dim), rebuilt lazily after add()
        for face in faces:
            self.add(face)

    @classmethod
    def from_crops(
        cls,
        items: Sequence[tuple[str, Path, np.ndarray]],
        encoder: _Encoder,
        max_refs: int = MAX_REFS,
    ) -> ReferenceGallery:
        """Embed (person, path, aligned crop) items in one `encoder.embed` call."""
        embeddings = encoder.embed([crop for _, _, crop in items]) if items else []
        faces = [
            ReferenceFace(person, Path(path), crop, emb)
            for (person, path, crop), emb in zip(items, embeddings)
        ]
        return cls(faces, max_refs=max_refs)

    def __len__(self) -> int:
        return len(self._faces)

    @property
    def faces(self) -> list[ReferenceFace]:
        return list(self._faces)

    def add(self, face: ReferenceFace) -> None:
        embedding = np.asarray(face.embedding)
        if embedding.ndim != 1:
            raise ValueError(f"embedding of {face.path} must be 1-D, got shape {embedding.shape}")
        if self._faces and embedding.shape != self._faces[0].embedding.shape:
            raise ValueError(
                f"embedding of {face.path} has shape {embedding.shape}, "
                f"the gallery holds {self._faces[0].embedding.shape}"
            )
        self._faces.append(face)
        self._stack = None

    def persons(self) -> list[str]:
        """Person names in the order they were first added."""
        return list(dict.fromkeys(face.person for face in self._faces))

    def _person_scores(self, embeddings: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Names, per-face similarities (Q, n_faces) and per-person best similarity (Q, P)."""
        if self._stack is None:
            self._stack = np.stack([np.asarray(f.embedding, np.float64) for f in self._faces])
        face_sims = np.atleast_2d(similarity(embeddings, self._stack))
        names = self.persons()
        owner = np.array([names.index(face.person) for face in self._faces])
        person_sims = np.full((face_sims.shape[0], len(names)), -np.inf)
        for p in range(len(names)):
            person_sims[:, p] = face_sims[:, owner == p].max(axis=1)
        return names, face_sims, person_sims

    def _faces_of(self, person: str, sims: np.ndarray) -> list[ReferenceFace]:
        # Most similar photos first: they carry the texture closest to this input.
        idx = [i for i, face in enumerate(self._faces) if face.person == person]
        idx.sort(key=lambda i: -sims[i])
        return [self._faces[i] for i in idx[: self.max_refs]]

    def match(self, embedding: np.ndarray, threshold: float = MATCH_THRESHOLD) -> Match:
        """The person whose best photo is most similar to `embedding`, if >= `threshold`.

        Returns (person, similarity, that person's faces, most similar first, at most
        `max_refs`) or (None, best similarity, []) below the threshold. An empty gallery gives
        (None, -1.0, []) whatever the threshold. Ties go to the person added first.
        """
        embedding = np.asarray(embedding)
        if embedding.ndim != 1:
            raise ValueError(f"match takes one embedding, got shape {embedding.shape}")
        if not self._faces:
            return Match(None, -1.0, [])
        names, face_sims, person_sims = self._person_scores(embedding[None, :])
        best = int(np.argmax(person_sims[0]))
        score = float(person_sims[0, best])
        if score < threshold:
            return Match(None, score, [], names[best])
        return Match(names[best], score, self._faces_of(names[best], face_sims[0]))

    def assign(self, embeddings: np.ndarray, threshold: float = MATCH_THRESHOLD) -> list[Match]:
        """One Match per face of ONE input image; each person goes to at most one face.

        Greedy on similarity: the most similar (face, person) pair at or above the threshold is
        fixed first, then the next among the remaining faces and persons, so in a group photo two
        faces never share a person and the closer face wins. A face left without a person gets
        (None, its best similarity to any person, [], that person) -- who may have gone to a
        closer face.
        """
        embeddings = np.atleast_2d(np.asarray(embeddings))
        n_queries = embeddings.shape[0]
        if not self._faces or n_queries == 0:
            return [Match(None, -1.0, []) for _ in range(n_queries)]
        names, face_sims, person_sims = self._person_scores(embeddings)
        result = [
            Match(None, float(person_sims[q].max()), [], names[int(np.argmax(person_sims[q]))])
            for q in range(n_queries)
        ]
        open_pairs = np.where(person_sims >= threshold, person_sims, -np.inf)
        while np.isfinite(open_pairs).any():
            q, p = np.unravel_index(int(np.argmax(open_pairs)), open_pairs.shape)
            score = float(person_sims[q, p])
            result[q] = Match(names[p], score, self._faces_of(names[p], face_sims[q]))
            open_pairs[q, :] = -np.inf
            open_pairs[:, p] = -np.inf
        return result
