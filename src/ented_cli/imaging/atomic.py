"""Atomic file writes: a temp file in the same folder, fsync, rename. A crash or a full disk
never leaves a half-written output (images, weight shards, manifests)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ented_cli.errors import EntedError


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder + fsync + rename.

    The folder must exist (callers create output folders on purpose, not by accident here).
    Raises EntedError naming the path when it cannot be written; never leaves a partial file.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist"
        raise EntedError(
            f"{path}: cannot write (folder {folder} {why}); create it or choose another -o"
        )
    if path.is_dir():
        raise EntedError(f"{path}: cannot write (it is a folder); choose a file name")

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """For writers that want a file name rather than bytes (a video muxer): yields a new temp
    file beside `path` to write; when the block ends normally it is fsynced and renamed onto
    `path`, otherwise (an error, Ctrl-C) it is removed, so `path` is whole or untouched."""
    path = Path(path)
    tmp, fd = _create_temp(path)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise EntedError(
                f"{path}: cannot write ({exc.strerror or exc}); free some space or "
                "choose another output folder"
            ) from None
        raise
    _fsync_folder(path.parent)


# Longest file name most file systems take (bytes); a temp name must fit even when the target's
# name is already close to it.
_NAME_MAX = 255
_TEMP_EXTRA = len(".") + 8 + len("..tmp")


def _temp_name(name: str) -> str:
    """A hidden temp name beside `name`: ".name.<random>.tmp", shortened to fit _NAME_MAX."""
    room = _NAME_MAX - _TEMP_EXTRA
    while len(os.fsencode(name)) > room:
        name = name[:-1]
    return f".{name}.{secrets.token_hex(4)}.tmp"


def _create_temp(path: Path) -> tuple[Path, int]:
    """Create a new temp file beside `path` and return it with its open descriptor."""
    folder = path.parent
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = folder / _temp_name(path.name)
        try:
            return tmp, os.open(tmp, flags, 0o666)  # 0o666 & ~umask, like a normal new file
        except FileExistsError:
            continue
        except PermissionError:
            raise EntedError(
                f"{path}: cannot write (permission denied in {folder}); choose "
                "another output folder"
            ) from None
        except OSError as exc:
            raise EntedError(
                f"{path}: cannot write ({exc.strerror}); choose another output folder"
            ) from None
    raise EntedError(  # pragma: no cover - 100 random name collisions
        f"{path}: cannot write (no free temporary name); clean up {folder}"
    )


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable on POSIX; not possible (nor needed) on Windows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
