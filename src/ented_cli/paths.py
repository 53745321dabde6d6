"""Which files to read and where to write them (pure Python: no image libraries).

Inputs (`expand_inputs`): files, folders, quoted glob patterns (with `**`) and `-` for stdin.
Folders give the images directly inside them (with `recursive`, their subfolders too), in natural
order (img2 before img10); hidden files and folders are skipped; a file named explicitly is always
taken, whatever its extension. The same file reached twice is processed once.

Outputs (`plan_output`), following GFPGAN/Real-ESRGAN habits (a `results/` folder, the input's name
and extension, an optional `_suffix`, `--ext` to change the format):

    ented restore a.jpg                      -> results/a.jpg
    ented restore a.jpg --suffix fixed       -> results/a_fixed.jpg
    ented restore a.jpg --ext png            -> results/a.png
    ented restore a.jpg -o out.png           -> out.png           (exactly one input)
    ented restore a.jpg -o out/              -> out/a.jpg         (folder: exists, ends with "/",
    ented restore shots/ -r -o out           -> out/2020/b.jpg     has no image extension, or
                                                                   several inputs)
    ented restore a.jpg -o y.gif             -> usage error       (an image ented cannot write)
    ented restore a.jpg -o -                 -> "-" (stdout)
    cat a.jpg | ented restore -              -> results/stdin.jpg (stdin keeps its format when
                                                                   ented writes it, else PNG)

An output never replaces its input: when the planned path is the input file itself, "_ented" is
added before the extension (a.jpg -> a_ented.jpg).

Videos (`ented restore clip.mp4`) are told from photos by their first bytes (`sniff_video`), so a
clip with an odd name is still a clip; a video's output keeps its container (.mp4, .mov, .mkv,
.webm, .avi; other containers become .mp4), and `-o fixed.mp4` names a file.

This module is also the one place that knows, for every command:
- which file names are images (`READABLE_EXTENSIONS`; `IMAGE_EXTENSIONS` are those ented writes)
  and videos (`VIDEO_EXTENSIONS`; `WRITABLE_VIDEO_EXTENSIONS` are those ented writes);
- what a folder holds (`scan_folder`, `images_in`, `subfolders`: natural order, hidden names
  skipped, links followed without looping);
- whether two paths are the same file (`file_key`, `same_file`);
- how a CSV of paths is read (`read_path_table`: --pairs, eval's triplets.csv, --synthesize).
"""

from __future__ import annotations

import csv
import glob
import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ented_cli.errors import EntedError, InputError, UsageError

# The one list of image file names, for every command. All of them are decoded by
# imaging.read.read_image (Pillow), which reads inputs, references, benchmarks and raw photos.
_EXTENSION_ORDER = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")  # for messages
# Formats ented reads but does not write (the output is then PNG, like stdin's).
_READ_ONLY_ORDER = (".gif", ".avif", ".jfif", ".jp2", ".pgm", ".ppm")
IMAGE_EXTENSIONS: frozenset[str] = frozenset(_EXTENSION_ORDER)
READ_ONLY_EXTENSIONS: frozenset[str] = frozenset(_READ_ONLY_ORDER)
READABLE_EXTENSIONS = IMAGE_EXTENSIONS | READ_ONLY_EXTENSIONS
READABLE_LIST = ", ".join((*_EXTENSION_ORDER, *_READ_ONLY_ORDER))  # for messages
WRITABLE_LIST = ", ".join(_EXTENSION_ORDER)  # for messages
# An output named like one of these is a mistake, not a folder: ented cannot write them.
UNWRITABLE_EXTENSIONS = READ_ONLY_EXTENSIONS | {".heic", ".heif", ".jxl"}
_SAME_FORMAT = {".jpeg": ".jpg", ".tiff": ".tif"}
_GLOB_MAGIC = re.compile(r"[*?[]")
STDIN_NAME = "stdin"
STDIN_EXT = ".png"  # lossless and keeps alpha: the safe choice when the input format is unknown
# The first bytes of the formats ented writes, to keep the format of an image read from stdin.
_MAGIC_EXT = (
    (b"\xff\xd8\xff", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
    (b"II+\x00", ".tif"),  # BigTIFF
    (b"MM\x00+", ".tif"),
    (b"BM", ".bmp"),
)
SAFETY_SUFFIX = "_ented"

# Video containers: those ented writes (an input keeps its container), and those it only reads
# (camcorder, DVD and old-phone files; their output is .mp4).
_VIDEO_ORDER = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
_VIDEO_READ_ONLY_ORDER = (".mts", ".m2ts", ".ts", ".mpg", ".mpeg", ".3gp", ".wmv", ".flv")
WRITABLE_VIDEO_EXTENSIONS: frozenset[str] = frozenset(_VIDEO_ORDER)
VIDEO_EXTENSIONS = WRITABLE_VIDEO_EXTENSIONS | frozenset(_VIDEO_READ_ONLY_ORDER)
VIDEO_LIST = ", ".join(_VIDEO_ORDER)  # for messages
DEFAULT_VIDEO_EXT = ".mp4"
# ISO-BMFF brands of still images (HEIC, AVIF): an "ftyp" box alone does not make a video.
_IMAGE_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
_IMAGE_BRANDS += (b"avif", b"avis")

# Pictures above this many pixels are refused from their header unless the user raises the limit
# (--max-pixels, ENTED_MAX_PIXELS). 100 MP admits every phone and full-frame camera (up to ~61 MP)
# and A4 scans at 1200 dpi (~140 MP need the flag); restoring peaks at about 35 bytes per pixel
# (measured: 3.6 GiB on 108 MP with a face filling half of it, docs/reliability.md), so 100 MP
# is about 3.3 GiB of memory. Kept here (pure Python) so the CLI can show it cheaply.
DEFAULT_MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class InputItem:
    path: Path | None  # None for stdin
    display: str  # what to print in messages/JSON ("-" for stdin)
    rel: Path  # path relative to the folder/glob root it came from (for mirroring folder trees)
    video: bool = False  # a video container (by its first bytes): restored frame by frame

    @property
    def is_stdin(self) -> bool:
        return self.path is None


def normalise_ext(ext: str) -> str:
    """Lower-case with a leading dot (".PNG", "png" -> ".png"); UsageError if ented cannot
    write that format."""
    ext = ext.strip().lower()
    if ext and not ext.startswith("."):
        ext = "." + ext
    if ext not in IMAGE_EXTENSIONS:
        raise UsageError(
            f"cannot write '{ext or '(no extension)'}' images; use one of {WRITABLE_LIST}"
        )
    return ext


def sniff_ext(data: bytes) -> str | None:
    """The extension of image bytes (stdin's) in a format ented writes, from their first bytes;
    None for any other format."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((ext for magic, ext in _MAGIC_EXT if data.startswith(magic)), None)


def sniff_video(data: bytes) -> str | None:
    """The container of video bytes from their first 512 (".mp4", ".mov", ".mkv", ".webm",
    ".avi", ".ts", ".mpg", ".wmv", ".flv"); None when they are not a video container (a photo,
    HEIC/AVIF included). Audio-only files in a video container (.m4a) count as videos: reading
    them says that they have no picture."""
    box = data[4:8]
    if box == b"ftyp":
        brand = data[8:12]
        if brand in _IMAGE_BRANDS:
            return None
        return ".mov" if brand == b"qt  " else ".mp4"
    if box in (b"moov", b"mdat", b"wide", b"free", b"skip"):  # QuickTime files without ftyp
        return ".mov"
    if data.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska or WebM (the DocType says)
        return ".webm" if b"webm" in data[:64] else ".mkv"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return ".avi"
    if data[0:1] == data[188:189] == data[376:377] == b"\x47":
        return ".ts"  # MPEG transport stream: a sync byte every 188 bytes
    if data.startswith(b"\x00\x00\x01\xba"):
        return ".mpg"  # MPEG program stream (DVD)
    if data.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return ".wmv"  # ASF
    if data.startswith(b"FLV\x01"):
        return ".flv"
    return None


def is_video_file(path: str | Path) -> bool:
    """Whether `path` holds a video container (by its first bytes, not its name); False when it
    cannot be read (reading it later says why)."""
    if not Path(path).is_file():  # a FIFO or device would block the open: never sniff one
        return False
    try:
        with open(path, "rb") as fh:
            return sniff_video(fh.read(512)) is not None
    except OSError:
        return False


def is_image_name(path: str | Path) -> bool:
    """Whether a folder scan takes this file: an extension ented can read."""
    return Path(path).suffix.lower() in READABLE_EXTENSIONS


def is_media_name(path: str | Path) -> bool:
    """Whether a scan for `ented restore` takes this file: an image or a video extension."""
    return is_image_name(path) or Path(path).suffix.lower() in VIDEO_EXTENSIONS


def natural_key(rel: str | Path) -> tuple:
    """Sort key for names and paths: "img2" < "img10", folder by folder; case-insensitive
    first, then exact, so the order is total and stable."""
    return tuple(
        (tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part.casefold())), part)
        for part in Path(rel).parts
    )


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _cannot_list(folder: str | Path, reason: str) -> str:
    return f"{folder}: cannot list this folder ({reason}); check its permissions"


@dataclass
class FolderScan:
    images: list[Path] = field(default_factory=list)  # relative to the folder, natural order
    skipped_subfolders: int = 0  # non-hidden subfolders a flat scan did not enter
    problems: list[str] = field(default_factory=list)  # one line per folder that cannot be listed

    @property
    def has_subfolders(self) -> bool:
        return self.skipped_subfolders > 0


def scan_folder(folder: str | Path, recursive: bool = False, videos: bool = False) -> FolderScan:
    """The image files in `folder` (with `recursive`, in its subfolders too; with `videos`, video
    files too), hidden files and folders skipped, and a message for each folder that could not
    be listed (so none is skipped silently).

    Symbolic links to folders are followed, but a folder already visited (a link back up the
    tree, two links to one album) is not entered again, so a link loop cannot hang the scan.
    """
    folder = Path(folder)
    scan = FolderScan()
    visited = {os.path.realpath(folder)}

    def unlistable(exc: OSError) -> None:
        scan.problems.append(_cannot_list(exc.filename, exc.strerror))

    for root, dirs, files in os.walk(folder, onerror=unlistable, followlinks=recursive):
        dirs[:] = [d for d in dirs if not _is_hidden(d)]
        if not recursive:
            scan.skipped_subfolders = len(dirs)
            dirs[:] = []
        # Real folders before links to them, so a file keeps its real path in the output tree.
        dirs.sort(key=lambda d: (os.path.islink(os.path.join(root, d)), natural_key(Path(d))))
        fresh = []
        for d in dirs:
            real = os.path.realpath(os.path.join(root, d))
            if real not in visited:
                visited.add(real)
                fresh.append(d)
        dirs[:] = fresh
        base = Path(root).relative_to(folder)
        wanted = is_media_name if videos else is_image_name
        scan.images.extend(base / f for f in files if not _is_hidden(f) and wanted(f))
    scan.images.sort(key=natural_key)
    return scan


def images_in(folder: str | Path, recursive: bool = False) -> list[Path]:
    """`folder / name` for each image `scan_folder` finds, in natural order; InputError naming
    the first folder that cannot be listed."""
    scan = scan_folder(folder, recursive)
    if scan.problems:
        raise InputError(scan.problems[0])
    return [Path(folder) / rel for rel in scan.images]


def subfolders(folder: str | Path) -> list[Path]:
    """The folders directly in `folder` (links to folders too), hidden ones skipped, in natural
    order of their names; InputError when `folder` cannot be listed."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError as exc:
        raise InputError(_cannot_list(folder, exc.strerror)) from None
    found = [p for p in entries if not _is_hidden(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: natural_key(p.name))


def file_key(path: str | Path) -> str:
    """What identifies a file in sets and dicts: its real path, case-folded where the system
    folds case. Two spellings, a link and its target give one key; a link loop gets a key too
    (unlike Path.resolve, this never raises), and reading it fails later with a clear message."""
    return os.path.normcase(os.path.realpath(path))


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether `a` and `b` name one file: the same real path, or (both existing) the same inode,
    which also catches hard links and case-insensitive file systems."""
    if file_key(a) == file_key(b):
        return True
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def _glob_root(pattern: str) -> Path:
    """The part of a pattern before its first wildcard: output trees are mirrored from there."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _GLOB_MAGIC.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _expand_glob(pattern: str, videos: bool = False) -> tuple[list[tuple[Path, Path]], int]:
    """(path, rel) for the image (and with `videos`, video) files a pattern matches, and how many
    files it matched at all."""
    root = _glob_root(pattern)
    files = [Path(m) for m in glob.glob(pattern, recursive=True) if os.path.isfile(m)]
    wanted = is_media_name if videos else is_image_name
    images = [p for p in files if wanted(p) and not _is_hidden(p.name)]
    pairs = []
    for p in images:
        try:
            rel = p.relative_to(root)
        except ValueError:  # cannot happen for glob's own output; keep the name to be safe
            rel = Path(p.name)
        pairs.append((p, rel))
    pairs.sort(key=lambda pr: natural_key(pr[1]))
    return pairs, len(files)


def expand_inputs(
    args: Sequence[str],
    recursive: bool = False,
    notes: list[str] | None = None,
    videos: bool = False,
) -> tuple[list[InputItem], list[str]]:
    """Turn command-line input arguments into a list of images to process.

    Each argument is "-" (stdin, at most once), a file, a folder, or a glob pattern (quoted so the
    shell leaves it alone; `**` matches any depth). Returns the items in argument order (no file
    twice) and one-line messages for arguments that gave nothing; the caller reports those and
    carries on with the rest. `notes`, when given, gets a line for each folder whose images were
    taken but whose sub-folders were not searched (no `recursive`). With `videos` (`ented
    restore`), folders and patterns give video files too, and every item says whether it is a
    video, by its first bytes.
    """
    items: list[InputItem] = []
    errors: list[str] = []
    seen: set[str] = set()
    stdin_taken = False

    def add(path: Path, display: str, rel: Path) -> None:
        key = file_key(path)
        if key not in seen:
            seen.add(key)
            video = videos and is_video_file(path)
            items.append(InputItem(path=path, display=display, rel=rel, video=video))

    for arg in args:
        if arg == "-":
            if stdin_taken:
                errors.append("-: stdin was given more than once; pass '-' once")
            else:
                stdin_taken = True
                items.append(InputItem(path=None, display="-", rel=Path(STDIN_NAME)))
            continue
        if not arg.strip():
            errors.append("'': empty input argument; remove it")
            continue

        path = Path(arg)
        if not path.exists() and arg.startswith("~"):
            path = Path(os.path.expanduser(arg))  # a quoted "~/..." that the shell did not expand
        if path.is_file():
            add(path, arg, Path(path.name))
        elif path.is_dir():
            scan = scan_folder(path, recursive, videos)
            errors.extend(scan.problems)
            for rel in scan.images:
                add(path / rel, str(path / rel), rel)
            if not scan.images and not scan.problems:
                hint = "; add --recursive to search its subfolders" if scan.has_subfolders else ""
                looked = f"{READABLE_LIST}, {VIDEO_LIST}" if videos else READABLE_LIST
                errors.append(f"{arg}: no images in this folder (looked for {looked}){hint}")
            elif scan.has_subfolders and notes is not None:
                notes.append(
                    f"{arg}: skipped {scan.skipped_subfolders} sub-folder(s); "
                    "add -R (--recursive) to include them"
                )
        elif _GLOB_MAGIC.search(arg):
            pairs, n_files = _expand_glob(str(path), videos)
            for p, rel in pairs:
                add(p, str(p), rel)
            if not pairs:
                what = f"{n_files} file(s) but no images" if n_files else "no files"
                errors.append(f"{arg}: pattern matched {what}; check the pattern")
        elif path.exists():
            errors.append(f"{arg}: not a regular file or folder; pass an image file")
        else:
            errors.append(f"{arg}: no such file or folder; check the path")
    return items, errors


def _normalise_suffix(suffix: str | None) -> str:
    if not suffix:
        return ""
    if any(sep in suffix for sep in ("/", "\\", os.sep)):
        raise UsageError(f"--suffix {suffix!r}: a suffix cannot contain a path separator")
    # "fixed" -> "_fixed"; a suffix that brings its own separator is kept as typed.
    return suffix if suffix[0] in "_-." else "_" + suffix


def _names_a_folder(output: str) -> bool:
    return output.endswith(("/", os.sep)) or Path(output).is_dir()


def _looks_like_folder(output: str) -> bool:
    suffix = Path(output).suffix.lower()
    return _names_a_folder(output) or suffix not in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


def plan_output(
    item: InputItem,
    output: str | None,
    *,
    many: bool,
    suffix: str | None,
    ext: str | None,
    default_dir: Path = Path("results"),
    stdin_ext: str = STDIN_EXT,
) -> Path | str:
    """Where the restored image for `item` goes: a Path, or "-" for stdout.

    output: the -o value. "-" = stdout (single input only). A folder when it exists, ends with
    "/", has no image extension, or there are several inputs (then the input's path relative to
    its folder/glob root is mirrored inside it). Otherwise a file name, used as typed (suffix is
    not applied; it must agree with --ext). None = `default_dir`, used as a folder. A name
    ending in an image format ented cannot write (.gif, .heic, ...) is a UsageError.
    suffix: "fixed" -> name_fixed.jpg ("_x", "-x", ".x" are kept as typed).
    ext: ".png"/"png" changes the format; default is the input's extension (stdin: `stdin_ext`,
    the format `sniff_ext` found in its bytes, else .png).
    `many` means the run has more than one input (after expansion).
    A video input (`item.video`) keeps its container (.mp4 for containers ented only reads);
    `ext` is for photos and leaves it alone; `-o` must then name a video file or a folder.
    Never returns the input file itself: "_ented" is added before the extension instead.
    """
    if output == "-":
        if item.video:
            raise UsageError(
                f"-o -: {item.display} is a video, which cannot be written to stdout; "
                "give an output file or folder"
            )
        if many:
            raise UsageError(
                "-o -: stdout takes exactly one image, got several inputs; "
                "give an output folder instead"
            )
        return "-"
    new_ext = normalise_ext(ext) if ext else None
    if output is not None and not _names_a_folder(output):
        unwritable = Path(output).suffix.lower()
        if unwritable in UNWRITABLE_EXTENSIONS:
            raise UsageError(
                f"-o {output}: ented cannot write '{unwritable}' images; use one of "
                f"{WRITABLE_LIST} (or end -o with '/' for a folder)"
            )

    if output is not None and not _looks_like_folder(output):
        if many:
            raise UsageError(
                f"-o {output}: a file name needs exactly one input, got several; "
                f"give a folder instead (end it with '/')"
            )
        target = Path(output)
        _check_output_kind(item, output)
        if item.video:
            pass  # --ext is for photos
        elif new_ext and _SAME_FORMAT.get(new_ext, new_ext) != _SAME_FORMAT.get(
            target.suffix.lower(), target.suffix.lower()
        ):
            raise UsageError(
                f"-o {output} and --ext {new_ext} ask for different formats; drop one of them"
            )
    else:
        folder = default_dir if output is None else Path(output)
        if item.path is None:
            stem, in_ext = STDIN_NAME, stdin_ext
        elif item.video:
            stem, in_ext = item.path.stem, item.path.suffix.lower()
            if in_ext not in WRITABLE_VIDEO_EXTENSIONS:  # e.g. .mts, .wmv, no extension
                in_ext = DEFAULT_VIDEO_EXT
            new_ext = None  # --ext is for photos
        else:
            stem, in_ext = item.path.stem, item.path.suffix
            if in_ext.lower() not in IMAGE_EXTENSIONS:  # e.g. .gif, .avif, no extension
                in_ext = STDIN_EXT
        name = stem + _normalise_suffix(suffix) + (new_ext or in_ext)
        target = folder / item.rel.parent / name

    if item.path is not None and same_file(target, item.path):
        target = target.with_name(target.stem + SAFETY_SUFFIX + target.suffix)
    return target


def _check_output_kind(item: InputItem, output: str) -> None:
    """A photo's output file must be an image, a video's a video container ented writes."""
    suffix = Path(output).suffix.lower()
    if item.video and suffix not in WRITABLE_VIDEO_EXTENSIONS:
        if suffix in VIDEO_EXTENSIONS:
            raise UsageError(
                f"-o {output}: ented cannot write '{suffix}' videos; use one of {VIDEO_LIST}"
            )
        raise UsageError(
            f"-o {output}: {item.display} is a video; name a video file ({VIDEO_LIST}) or a folder"
        )
    if not item.video and suffix in VIDEO_EXTENSIONS:
        raise UsageError(
            f"-o {output} names a video file, but {item.display} is a photo; name an image "
            f"({WRITABLE_LIST}) or a folder"
        )


def _key(path: Path) -> str:
    # The planned name, not the file (outputs do not exist yet): cheap, as it runs for every
    # output against every other; plan_output has already moved outputs off their own input.
    return os.path.normcase(os.path.abspath(path))


def unique_path(path: Path, taken: set[Path]) -> Path:
    """`path`, or name_1.ext, name_2.ext, ... when another output of this run already has it.

    Only this run's paths count (`taken`, which this function updates; seed it with
    `input_paths(items)` so a batch never writes over one of its own inputs): a file left on disk
    by an earlier run is overwritten, like GFPGAN and Real-ESRGAN do, so re-running is idempotent.
    """
    used = {_key(p) for p in taken}
    candidate = path
    n = 0
    while _key(candidate) in used:
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    taken.add(candidate)
    return candidate


SIDE_KINDS = ("faces", "cmp", "cmp_faces")
LOSSLESS_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp")  # (and WebP at --quality 100)


def side_path(out: Path | str, kind: str, index: int = 0, quality: int = 95) -> Path:
    """Where the extra outputs of `out` go, beside it:

    "faces":     restored face crops, results/faces/<out stem>_face00.png (index = face number);
    "cmp":       the before/after comparison of the photo, results/<out stem>_cmp.jpg;
    "cmp_faces": the before/after/reference sheet of its faces, results/<out stem>_cmp_faces.jpg.
    The comparisons are .png instead when the output is lossless (PNG, TIFF, BMP, or WebP at
    `quality` 100), so nothing is judged through JPEG artefacts the output does not have.
    Run the result through `unique_path` too when several outputs may share a name.
    """
    if str(out) == "-":
        raise UsageError("--save-faces/--save-cmp need an output file or folder, not -o -")
    out = Path(out)
    if kind == "faces":
        return out.parent / "faces" / f"{out.stem}_face{index:02d}.png"
    if kind in ("cmp", "cmp_faces"):
        suffix = out.suffix.lower()
        lossless = suffix in LOSSLESS_EXTENSIONS or (suffix == ".webp" and quality >= 100)
        return out.parent / f"{out.stem}_{kind}{'.png' if lossless else '.jpg'}"
    raise ValueError(f"unknown side output kind {kind!r}; expected one of {SIDE_KINDS}")


def input_paths(items: Iterable[InputItem]) -> set[Path]:
    """The run's input files: seed `unique_path`'s `taken` with them so that no output (nor a
    side output) of a batch can overwrite another input of the same batch."""
    return {item.path for item in items if item.path is not None}


# --- CSV tables of paths ------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRow:
    line: int  # the CSV line the row ends on, for messages
    cells: dict[str, str]  # column -> its cell, stripped ("" past the end of a short row)
    short: bool  # the row stops before one of the columns
    spills: bool  # a cell past the table's width (the header's, or the columns') is filled in


@dataclass
class PathTable:
    csv: Path
    has_header: bool
    rows: list[TableRow] = field(default_factory=list)

    def path(self, cell: str) -> Path:
        """A cell as a path: `~` expanded, a relative path taken from the CSV's folder."""
        path = Path(cell.strip()).expanduser()
        return path if path.is_absolute() else self.csv.parent / path

    def paths(self, cell: str) -> list[Path]:
        """The files of a cell that lists several, split by `;` (empty parts ignored)."""
        return [self.path(part) for part in cell.split(";") if part.strip()]


def _header_positions(row: list[str], columns: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Where each column's name stands in `row` (its first name present wins); absent ones are
    left out."""
    cells = [cell.strip().lower() for cell in row]
    positions = {}
    for column, names in columns.items():
        index = next((cells.index(name) for name in names if name in cells), None)
        if index is not None:
            positions[column] = index
    return positions


def read_path_table(
    csv_path: str | Path,
    columns: Mapping[str, Sequence[str]],
    *,
    header_required: bool = False,
    error: type[EntedError] = InputError,
) -> PathTable:
    """The rows of a CSV that lists files, in the dialect every such CSV of ented shares.

    `columns` maps each column to the header names that mean it (lower case, preferred first).
    The text is UTF-8, with or without the BOM spreadsheets write first; blank lines and lines
    starting with `#` are skipped. The first row is a header when it names every column (in any
    order, other cells ignored); otherwise the columns are the first cells, in the order of
    `columns`. With `header_required`, a first row that lacks a column is an error naming it.
    Cells that name files become paths with `PathTable.path(s)` (relative to the CSV's folder).
    The caller checks that the CSV exists and judges the rows: its messages name the flag.
    Raises `error` for a file that is not UTF-8 or, with `header_required`, lacks a column.
    """
    csv_path = Path(csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")  # -sig: drop a BOM when there is one
    except UnicodeDecodeError:
        raise error(f"{csv_path}: not UTF-8 text; save it as a UTF-8 CSV") from None
    table = PathTable(csv_path, has_header=False)
    positions = {column: i for i, column in enumerate(columns)}
    width = len(columns)
    first_row = True
    reader = csv.reader(io.StringIO(text, newline=""))
    for row in reader:
        if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if first_row:
            first_row = False
            found = _header_positions(row, columns)
            if len(found) == len(columns):
                positions, width, table.has_header = found, len(row), True
                continue
            if header_required:
                column = next(c for c in columns if c not in found)
                names = ", ".join(columns[column])
                raise error(
                    f"{csv_path}: no {column} column (one of {names}); add a header row naming it"
                )
        table.rows.append(
            TableRow(
                line=reader.line_num,
                cells={c: row[i].strip() if i < len(row) else "" for c, i in positions.items()},
                short=len(row) <= max(positions.values()),
                spills=any(cell.strip() for cell in row[width:]),
            )
        )
    return table
