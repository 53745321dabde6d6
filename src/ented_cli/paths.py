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
    ented restore a.jpg -o -                 -> "-" (stdout)
    cat a.jpg | ented restore -              -> results/stdin.png

An output never replaces its input: when the planned path is the input file itself, "_ented" is
added before the extension (a.jpg -> a_ented.jpg).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ented_cli.errors import UsageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}
)
# Formats ented reads but does not write (the output is then PNG, like stdin's).
READ_ONLY_EXTENSIONS: frozenset[str] = frozenset({".gif", ".avif", ".jfif"})
READABLE_EXTENSIONS = IMAGE_EXTENSIONS | READ_ONLY_EXTENSIONS
_EXTENSION_ORDER = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")  # for messages
_READABLE_ORDER = (*_EXTENSION_ORDER, ".gif", ".avif", ".jfif")
_SAME_FORMAT = {".jpeg": ".jpg", ".tiff": ".tif"}
_GLOB_MAGIC = re.compile(r"[*?[]")
STDIN_NAME = "stdin"
STDIN_EXT = ".png"  # lossless and keeps alpha: the safe choice when the input format is unknown
SAFETY_SUFFIX = "_ented"

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
        supported = ", ".join(_EXTENSION_ORDER)
        raise UsageError(f"cannot write '{ext or '(no extension)'}' images; use one of {supported}")
    return ext


def is_image_name(path: str | Path) -> bool:
    """Whether a folder scan takes this file: an extension ented can read."""
    return Path(path).suffix.lower() in READABLE_EXTENSIONS


def natural_key(rel: str | Path) -> tuple:
    """Sort key for names and paths: "img2" < "img10", folder by folder; case-insensitive
    first, then exact, so the order is total and stable."""
    return tuple(
        (tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part.casefold())), part)
        for part in Path(rel).parts
    )


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _scan_folder(folder: Path, recursive: bool) -> tuple[list[Path], bool, list[str]]:
    """Image files under `folder` (relative paths), whether non-hidden subfolders exist, and a
    message for each subfolder that could not be listed (so none is skipped silently).

    Symbolic links to folders are followed, but a folder already visited (a link back up the
    tree, two links to one album) is not entered again, so a link loop cannot hang the scan.
    """
    found: list[Path] = []
    problems: list[str] = []
    has_subfolders = False
    visited = {os.path.realpath(folder)}

    def unlistable(exc: OSError) -> None:
        problems.append(
            f"{exc.filename}: cannot list this folder ({exc.strerror}); check its permissions"
        )

    for root, dirs, files in os.walk(folder, onerror=unlistable, followlinks=recursive):
        dirs[:] = [d for d in dirs if not _is_hidden(d)]
        if not recursive:
            has_subfolders = bool(dirs)
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
        found.extend(base / f for f in files if not _is_hidden(f) and is_image_name(f))
    return sorted(found, key=natural_key), has_subfolders, problems


def _glob_root(pattern: str) -> Path:
    """The part of a pattern before its first wildcard: output trees are mirrored from there."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _GLOB_MAGIC.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _expand_glob(pattern: str) -> tuple[list[tuple[Path, Path]], int]:
    """(path, rel) for the image files a pattern matches, and how many files it matched at all."""
    root = _glob_root(pattern)
    files = [Path(m) for m in glob.glob(pattern, recursive=True) if os.path.isfile(m)]
    images = [p for p in files if is_image_name(p) and not _is_hidden(p.name)]
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
    args: Sequence[str], recursive: bool = False
) -> tuple[list[InputItem], list[str]]:
    """Turn command-line input arguments into a list of images to process.

    Each argument is "-" (stdin, at most once), a file, a folder, or a glob pattern (quoted so the
    shell leaves it alone; `**` matches any depth). Returns the items in argument order (no file
    twice) and one-line messages for arguments that gave nothing; the caller reports those and
    carries on with the rest.
    """
    items: list[InputItem] = []
    errors: list[str] = []
    seen: set[str] = set()
    stdin_taken = False

    def add(path: Path, display: str, rel: Path) -> None:
        key = os.path.normcase(os.path.realpath(path))
        if key not in seen:
            seen.add(key)
            items.append(InputItem(path=path, display=display, rel=rel))

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
            found, has_subfolders, problems = _scan_folder(path, recursive)
            errors.extend(problems)
            for rel in found:
                add(path / rel, str(path / rel), rel)
            if not found and not problems:
                hint = "; add --recursive to search its subfolders" if has_subfolders else ""
                errors.append(
                    f"{arg}: no images in this folder (looked for "
                    f"{', '.join(_READABLE_ORDER)}){hint}"
                )
        elif _GLOB_MAGIC.search(arg):
            pairs, n_files = _expand_glob(str(path))
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


def _is_same_file(a: Path, b: Path) -> bool:
    if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links, case folding
    except OSError:
        return False


def _looks_like_folder(output: str) -> bool:
    return (
        output.endswith(("/", os.sep))
        or Path(output).is_dir()
        or Path(output).suffix.lower() not in IMAGE_EXTENSIONS
    )


def plan_output(
    item: InputItem,
    output: str | None,
    *,
    many: bool,
    suffix: str | None,
    ext: str | None,
    default_dir: Path = Path("results"),
) -> Path | str:
    """Where the restored image for `item` goes: a Path, or "-" for stdout.

    output: the -o value. "-" = stdout (single input only). A folder when it exists, ends with
    "/", has no image extension, or there are several inputs (then the input's path relative to
    its folder/glob root is mirrored inside it). Otherwise a file name, used as typed (suffix is
    not applied; it must agree with --ext). None = `default_dir`, used as a folder.
    suffix: "fixed" -> name_fixed.jpg ("_x", "-x", ".x" are kept as typed).
    ext: ".png"/"png" changes the format; default is the input's extension (stdin: .png).
    `many` means the run has more than one input (after expansion).
    Never returns the input file itself: "_ented" is added before the extension instead.
    """
    if output == "-":
        if many:
            raise UsageError(
                "-o -: stdout takes exactly one image, got several inputs; "
                "give an output folder instead"
            )
        return "-"
    new_ext = normalise_ext(ext) if ext else None

    if output is not None and not _looks_like_folder(output):
        if many:
            raise UsageError(
                f"-o {output}: a file name needs exactly one input, got several; "
                f"give a folder instead (end it with '/')"
            )
        target = Path(output)
        if new_ext and _SAME_FORMAT.get(new_ext, new_ext) != _SAME_FORMAT.get(
            target.suffix.lower(), target.suffix.lower()
        ):
            raise UsageError(
                f"-o {output} and --ext {new_ext} ask for different formats; drop one of them"
            )
    else:
        folder = default_dir if output is None else Path(output)
        if item.path is None:
            stem, in_ext = STDIN_NAME, STDIN_EXT
        else:
            stem, in_ext = item.path.stem, item.path.suffix
            if in_ext.lower() not in IMAGE_EXTENSIONS:  # e.g. .gif, .avif, no extension
                in_ext = STDIN_EXT
        name = stem + _normalise_suffix(suffix) + (new_ext or in_ext)
        target = folder / item.rel.parent / name

    if item.path is not None and _is_same_file(target, item.path):
        target = target.with_name(target.stem + SAFETY_SUFFIX + target.suffix)
    return target


def _key(path: Path) -> str:
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


SIDE_KINDS = ("faces", "cmp")


def side_path(out: Path | str, kind: str, index: int = 0) -> Path:
    """Where the extra outputs of `out` go, beside it:

    "faces": restored face crops, results/faces/<out stem>_face00.png (index = face number);
    "cmp":   the before/after comparison, results/<out stem>_cmp.jpg.
    Run the result through `unique_path` too when several outputs may share a name.
    """
    if str(out) == "-":
        raise UsageError("--save-faces/--save-cmp need an output file or folder, not -o -")
    out = Path(out)
    if kind == "faces":
        return out.parent / "faces" / f"{out.stem}_face{index:02d}.png"
    if kind == "cmp":
        return out.parent / f"{out.stem}_cmp.jpg"
    raise ValueError(f"unknown side output kind {kind!r}; expected one of {SIDE_KINDS}")


def input_paths(items: Iterable[InputItem]) -> set[Path]:
    """The run's input files: seed `unique_path`'s `taken` with them so that no output (nor a
    side output) of a batch can overwrite another input of the same batch."""
    return {item.path for item in items if item.path is not None}
