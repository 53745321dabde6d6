"""Output files: the restored image (atomically, never over an input), and the side outputs
`--save-faces` (each aligned face, before | after) and `--save-cmp` (the photo, before | after,
and the restored faces' crops, drawn by pipeline/compare_image.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from ented_cli.errors import EntedError
from ented_cli.imaging.atomic import write_atomic
from ented_cli.imaging.pixels import to_uint8
from ented_cli.imaging.read import CMYK_NOTE
from ented_cli.imaging.write import ENTED_SOFTWARE, encode_image
from ented_cli.paths import IMAGE_EXTENSIONS, STDIN_EXT, InputItem, side_path, sniff_ext
from ented_cli.pipeline.compare_image import encode_comparison, faces_comparison, frame_comparison
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
        (`raw`: the bytes of a stdin input). A copy is not marked: it stays byte-identical."""
        unchanged = not result.changed and self.opt.upscale == 1
        if unchanged and self._copy_verbatim(item, output, raw):
            return
        software = ENTED_SOFTWARE if self.opt.mark else None  # "written by ented 0.1.0"
        if result.image.from_cmyk:  # the CLI says it once per run, --json for each input
            result.report.warnings.append(f"{item.display}: {CMYK_NOTE}")
        if output == "-":
            ext = self._stdout_ext(item, raw)
            sys.stdout.buffer.write(encode_image(result.image, ext, self.opt.quality, software))
            sys.stdout.buffer.flush()
            return
        out = Path(output)
        make_folder(out.parent)
        encoded = encode_image(result.image, out.suffix.lower(), self.opt.quality, software)
        write_atomic(out, encoded)
        if self.opt.save_faces:
            result.report.faces_saved = self._save_faces(out, result)
        if self.opt.save_cmp:
            self._save_comparisons(out, result)

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

    def _save_comparisons(self, out: Path, result: RestoreResult) -> None:
        """--save-cmp: the photo before | after, and a sheet of the restored faces' crops."""
        fidelity = self.opt.fidelity if result.report.fidelity is None else result.report.fidelity
        quality = self.opt.quality
        path = side_path(out, "cmp", quality=quality)
        frame = frame_comparison(result.original, result.image, fidelity)
        write_atomic(path, encode_comparison(frame, path.suffix, quality))
        result.report.comparison = str(path)
        sheet = faces_comparison(result.faces, fidelity)
        if sheet is not None:
            path = side_path(out, "cmp_faces", quality=quality)
            write_atomic(path, encode_comparison(sheet, path.suffix, quality))
            result.report.comparison_faces = str(path)

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
