"""Restore faces from Python, with the same pipeline as `ented restore`.

    from ented_cli.api import Ented

    ented = Ented()                                   # bundled weights, best device
    result = ented.restore("old.jpg", refs=["good.jpg"])
    cv2.imwrite("fixed.png", result.image)            # same layout as the input (gray, alpha, 16-bit)
    print(result.faces)                               # boxes, references used, identity similarities

Images can be paths or numpy arrays (BGR, BGRA or gray; uint8 or uint16), as OpenCV reads them.
Reference photos are encoded once per `Ented` object and reused across calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ented_cli.errors import InputError
from ented_cli.imaging.pixels import LoadedImage

ImageLike = str | Path | np.ndarray


@dataclass
class Restored:
    image: np.ndarray  # same channels, dtype and alpha as the input (alpha appended as 4th channel)
    faces: list[dict]  # one record per face, as in the `--json` report
    status: str  # "restored", "unchanged" or "no_face"


def image_from_array(array: np.ndarray, name: str = "<array>") -> LoadedImage:
    if array.dtype not in (np.uint8, np.uint16) or array.ndim not in (2, 3):
        raise InputError(
            f"{name}: expected an HxW, HxWx3 or HxWx4 uint8/uint16 array, got {array.dtype} {array.shape}"
        )
    alpha = None
    if array.ndim == 3 and array.shape[2] == 4:
        array, alpha = array[..., :3], array[..., 3]
    elif array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    elif array.ndim == 3 and array.shape[2] != 3:
        raise InputError(f"{name}: {array.shape[2]} channels; expected 1, 3 or 4")
    return LoadedImage(np.ascontiguousarray(array), alpha, None, None, "png", name)


class Ented:
    def __init__(
        self,
        weights: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int | None = None,
        faces: str = "all",
        fidelity: float = 0.5,
        match_threshold: float | None = None,
        unmatched: str = "blind",
        colour_match: bool = True,
        keep_detail: bool = True,
        upscale: float = 1.0,
        guard: bool = True,
        download: bool = False,
        threads: int | None = None,
    ):
        from ented_cli.pipeline.restore import RestoreOptions, RestorePipeline

        options = RestoreOptions(
            faces=faces,
            fidelity=fidelity,
            match_threshold=match_threshold,
            unmatched=unmatched,
            colour_match=colour_match,
            keep_detail=keep_detail,
            upscale=upscale,
            guard=guard,
            report_identity=True,
        )
        self.pipeline = RestorePipeline.from_weights(
            weights,
            options,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            download=download,
            threads=threads,
        )

    def restore(
        self, image: ImageLike, refs: Sequence[ImageLike] = (), fidelity: float | None = None
    ) -> Restored:
        """Restore every selected face of one image, pairing faces with `refs` by identity."""
        from ented_cli.pipeline.library import merge_same_person
        from ented_cli.pipeline.references import ReferenceGallery

        pipe = self.pipeline
        faces = []
        for i, ref in enumerate(refs):
            if isinstance(ref, np.ndarray):
                faces.append(
                    pipe.references.array_face(f"ref{i}", image_from_array(ref, f"refs[{i}]"))
                )
            else:
                faces.append(pipe.references.face(Path(ref).stem, Path(ref)))
        gallery = ReferenceGallery(merge_same_person(faces, pipe.threshold)) if faces else None

        source = image_from_array(image, "<array>") if isinstance(image, np.ndarray) else image
        result = pipe(source, gallery, fidelity=fidelity)
        out = result.image
        if out is result.original:  # nothing was pasted: never hand back the caller's own array
            out = replace(out, pixels=out.pixels.copy())
        pixels = out.pixels if out.alpha is None else np.dstack([out.pixels, out.alpha])
        faces_json = [f.to_json() for f in result.report.faces]
        return Restored(pixels, faces_json, result.report.status)
