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
from ented_cli.imaging.imageio import LoadedImage, read_image
from ented_cli.paths import InputItem

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


def _load(image: ImageLike, name: str) -> LoadedImage:
    return image_from_array(image, name) if isinstance(image, np.ndarray) else read_image(image)


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
    ):
        from ented_cli.faces.detect import FaceDetector
        from ented_cli.faces.identity import IdentityEncoder
        from ented_cli.model.restorer import EntedRestorer
        from ented_cli.model.weights import resolve_weights
        from ented_cli.pipeline.stages import RestoreOptions, RestorePipeline

        restorer = EntedRestorer(
            resolve_weights(weights, download=download), device, dtype, batch_size
        )
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
        self.pipeline = RestorePipeline(
            restorer, FaceDetector(), IdentityEncoder(), options, batch_size=restorer.batch_size
        )

    def restore(
        self, image: ImageLike, refs: Sequence[ImageLike] = (), fidelity: float | None = None
    ) -> Restored:
        """Restore every selected face of one image, pairing faces with `refs` by identity."""
        from ented_cli.pipeline.references import ReferenceGallery
        from ented_cli.pipeline.stages import ImageJob, merge_same_person

        pipe = self.pipeline
        if fidelity is not None:
            pipe.opt.fidelity = fidelity
        faces = []
        for i, ref in enumerate(refs):
            if isinstance(ref, np.ndarray):
                name = f"<array {id(ref)}>"  # unique: the restorer caches features by this name
                faces.append(
                    pipe.references.add_image(
                        name, f"ref{i}", Path(name), image_from_array(ref, name)
                    )
                )
            else:
                faces.append(pipe.references.face(Path(ref).stem, Path(ref)))
        gallery = ReferenceGallery(merge_same_person(faces, pipe.threshold)) if faces else None

        name = "<array>" if isinstance(image, np.ndarray) else str(image)
        job = ImageJob(InputItem(None, name, Path(name)), "-", {"timing_ms": {}})
        job.image = _load(image, name)
        pipe.analyse(job, gallery)
        pipe.restore([job])
        pipe.summarise(job)
        out = pipe.compose(job)
        if out is job.image:  # nothing was pasted: never hand back the caller's own array
            out = replace(out, pixels=out.pixels.copy())
        pixels = out.pixels if out.alpha is None else np.dstack([out.pixels, out.alpha])
        return Restored(pixels, job.report["faces"], job.report["status"])
