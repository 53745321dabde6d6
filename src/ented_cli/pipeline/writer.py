"""Output files: the restored image (atomically, never over an input), and the side outputs
`--save-faces` (each aligned face, before | after) and `--save-cmp` (the photo, before | after)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from ented_cli.errors import EntedError
from ented_cli.imaging.atomic import write_atomic
from ented_cli.imaging.pixels import LoadedImage, to_float_bgr, to_uint8
from ented_cli.imaging.write import encode_image
from ented_cli.paths import IMAGE_EXTENSIONS, STDIN_EXT, InputItem, side_path, sniff_ext
from ented_cli.pipeline.restore import RestoreOptions, RestoreResult


class OutputWriter:
    def __init__(self, options: RestoreOptions, stdout_ext: str | None = None):
        self.opt = options
        self.stdout_ext = stdout_ext  # --ext for `-o -`; None: the input's format

    def write(
        self, item: InputItem, output: Path | str, result: RestoreResult, raw: bytes | None = None
    ) -> None:
        """Write `result` to `output` ("-": stdout) and its side outputs, noting them in the
        report. An input left as it was is copied byte for byte when the format allows it
        (`raw`: the bytes of a stdin input)."""
        unchanged = not result.changed and self.opt.upscale == 1
        if unchanged and self._copy_verbatim(item, output, raw):
            return
        if output == "-":
            sys.stdout.buffer.write(
                encode_image(result.image, self._stdout_ext(item, raw), self.opt.quality)
            )
            sys.stdout.buffer.flush()
            return
        out = Path(output)
        make_folder(out.parent)
        write_atomic(out, encode_image(result.image, out.suffix.lower(), self.opt.quality))
        if self.opt.save_faces:
            result.report.faces_saved = self._save_faces(out, result)
        if self.opt.save_cmp:
            path = side_path(out, "cmp")
            write_atomic(path, comparison_jpeg(result.original, result.image, self.opt.quality))
            result.report.comparison = str(path)

    def _stdout_ext(self, item: InputItem, raw: bytes | None) -> str:
        """stdout keeps the input's format where ented can write it, unless --ext says."""
        if self.stdout_ext:
            return self.stdout_ext
        ext = sniff_ext(raw or b"") if item.is_stdin else item.path.suffix.lower()
        return ext if ext in IMAGE_EXTENSIONS else STDIN_EXT

    def _copy_verbatim(self, item: InputItem, output: Path | str, raw: bytes | None) -> bool:
        """Nothing changed: the output is a byte-for-byte copy when the format allows it."""
        src_ext = sniff_ext(raw or b"") if item.is_stdin else item.path.suffix.lower()
        if output == "-" or Path(output).suffix.lower() != src_ext:
            return False
        make_folder(Path(output).parent)
        write_atomic(Path(output), raw if item.is_stdin else item.path.read_bytes())
        return True

    def _save_faces(self, out: Path, result: RestoreResult) -> list[str]:
        files = []
        restored = [f for f in result.faces if f.restored is not None]
        for i, f in enumerate(restored):
            path = side_path(out, "faces", i)
            make_folder(path.parent)
            side = np.concatenate([f.crop, f.restored], axis=1)  # before | after
            write_atomic(path, _png(side))
            files.append(str(path))
        return files


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise EntedError(
            f"{folder}: cannot create the output folder (a file with that name is in the way); "
            "move the file or choose another -o"
        ) from None
    except OSError as e:
        raise EntedError(
            f"{folder}: cannot create the output folder ({e.strerror}); choose another -o"
        ) from None


def _png(bgr: np.ndarray) -> bytes:
    _, buf = cv2.imencode(".png", to_uint8(bgr))
    return buf.tobytes()


def comparison_jpeg(
    before: LoadedImage, after: LoadedImage, quality: int, max_side: int = 2048
) -> bytes:
    """Before | after, side by side at the output's size, with a thin white divider; large
    frames are shrunk first (in their own bit depth, so a huge scan never becomes a float copy).
    `before` may be the input at its own size (--upscale): it is resized straight to the tile."""
    w, h = after.size
    scale = min(1.0, max_side / max(h, 2 * w + max(2, w // 200)))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def tile(image: LoadedImage) -> np.ndarray:
        pixels = image.pixels
        if image.size != size:
            enlarge = size[0] > image.size[0]
            interp = cv2.INTER_LANCZOS4 if enlarge else cv2.INTER_AREA
            pixels = cv2.resize(pixels, size, interpolation=interp)
        return to_float_bgr(replace(image, pixels=pixels, alpha=None))

    left, right = tile(before), tile(after)
    divider = np.ones((left.shape[0], max(2, left.shape[1] // 200), 3), np.float32)
    both = np.concatenate([left, divider, right], axis=1)
    _, buf = cv2.imencode(".jpg", to_uint8(both), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes()
