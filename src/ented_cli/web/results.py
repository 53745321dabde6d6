"""What a restored photo becomes for the page: the file to download (in the photo's own format,
as `ented restore` writes it), JPEG previews before and after for the sliders, a before/after
pair per face, and the faces of the `--json` report with the references named as uploaded."""

from __future__ import annotations

import cv2
import numpy as np

from ented_cli.imaging.pixels import LoadedImage
from ented_cli.imaging.write import ENTED_SOFTWARE, encode_image
from ented_cli.pipeline.report import NO_FACE, RESTORED, UNCHANGED
from ented_cli.pipeline.restore import RestoreResult
from ented_cli.web.jobs import Job, PhotoResult, Upload
from ented_cli.web.uploads import stem_of

QUALITY = 95  # the restored JPEG/WebP, as `ented restore`'s default --quality
PREVIEW_MAX_SIDE = 2048  # the slider's pictures: enough for a screen, small to send
FACE_PREVIEW_PX = 384
FACE_MARGIN = 0.45  # the face window shows this much of the face's size around it


def photo_result(
    job: Job,
    index: int,
    upload: Upload,
    data: bytes,
    result: RestoreResult,
    reference_names: dict[str, tuple[int, str]],
) -> PhotoResult:
    """Write the download and the previews of one restored photo into the job's folder."""
    report = result.report
    download = f"{stem_of(upload.name)}_ented{upload.ext}"
    # Nothing restored: the file goes back byte for byte, as `ented restore` copies it; a
    # restored one carries the "ented 0.1.0" Software mark, as `ented restore` writes it.
    if result.changed:
        restored = encode_image(result.image, upload.ext, QUALITY, ENTED_SOFTWARE)
    else:
        restored = data
    before, after = preview_pixels(result.original), preview_pixels(result.image)
    urls = {
        "result": job.add_file(f"{index}-result{upload.ext}", restored, download),
        "before": job.add_file(f"{index}-before.jpg", _jpeg(_shrink(before, PREVIEW_MAX_SIDE))),
        "after": job.add_file(f"{index}-after.jpg", _jpeg(_shrink(after, PREVIEW_MAX_SIDE))),
    }
    faces = []
    for k, face in enumerate(report.faces or []):
        record = page_face(face.to_json(), reference_names)
        x0, y0, x1, y1 = record["window"] = face_window(face.box, *before.shape[1::-1])
        for side, pixels in (("before", before), ("after", after)):
            crop = _shrink(pixels[y0:y1, x0:x1], FACE_PREVIEW_PX)
            record["urls"][side] = job.add_file(f"{index}-face{k}-{side}.jpg", _jpeg(crop))
        faces.append(record)
    return PhotoResult(
        name=upload.name,
        status=report.status,
        message=summary(report.status, faces),
        width=report.width,
        height=report.height,
        faces=faces,
        warnings=report.warnings,
        timing_ms=report.timing_ms,
        download_name=download,
        urls=urls,
    )


def page_face(record: dict, reference_names: dict[str, tuple[int, str]]) -> dict:
    """A face of the `--json` report, its references given as the page knows them: the index
    of each uploaded reference and its name (the report holds the server's internal keys)."""
    keys = record.pop("references")
    record["reference_indices"] = [reference_names[k][0] for k in keys if k in reference_names]
    record["references"] = [reference_names[k][1] for k in keys if k in reference_names]
    record["urls"] = {}
    return record


def summary(status: str, faces: list[dict]) -> str:
    """One sentence for the photo; each face says its own story on the page."""
    restored = sum(f["restored"] for f in faces)
    paired = sum(f["restored"] and f["mode"] == "reference" for f in faces)
    if status == NO_FACE:
        return "No face was found in this photo, so it was left as it was."
    if status == UNCHANGED:
        return "Faces were found, but none was changed (each face below says why)."
    if status == RESTORED:
        face_s = "face" if restored == 1 else "faces"
        with_ref = "" if not paired else f", {paired} with a reference photo"
        return f"{restored} {face_s} restored{with_ref}."
    return status


def face_window(box: list[float], width: int, height: int) -> list[int]:
    """A square around a face box with some margin, inside the picture (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * FACE_MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    right, bottom = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
    return [left, top, max(right, left + 1), max(bottom, top + 1)]


def preview_pixels(image: LoadedImage) -> np.ndarray:
    """8-bit BGR pixels of any image ented reads (gray, 16-bit; alpha is left out)."""
    pixels = image.pixels
    if pixels.dtype == np.uint16:
        pixels = (pixels // 257).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    return pixels


def _shrink(pixels: np.ndarray, max_side: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return pixels
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _jpeg(pixels: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(pixels), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:  # pragma: no cover - OpenCV encodes any 8-bit BGR array
        raise RuntimeError("cannot encode a preview")
    return buf.tobytes()
