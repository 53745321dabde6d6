"""`ented explain`, step by step: read → find and align faces → measure → picture + JSON line.

Every face of an input is explained with every `--ref` photo (no identity pairing: the question is
what the network does with the reference it is given). stdout carries only the JSON lines.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ented_cli.cli.progress import ProgressBar
from ented_cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EntedError, InputError, UsageError
from ented_cli.paths import DEFAULT_MAX_PIXELS, InputItem, expand_inputs

Say = Callable[[str], None]


@dataclass
class ExplainRequest:
    inputs: tuple[str, ...]
    refs: tuple[Path, ...]
    output: Path
    aligned: bool = False
    faces: str = "largest"
    region: str = "face"
    steps: int = 30
    samples: int = 2
    seed: int = 0
    fidelity: float = 0.5
    weights: str | None = None
    download: bool = False
    device: str = "auto"
    dtype: str = "auto"
    as_json: bool = False
    maps: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    quiet: bool = False


def _to_tensor(crop: np.ndarray, device):
    """float32 BGR [0, 1] H x W x 3 -> RGB 3 x H x W in [-1, 1]."""
    import torch

    from ented_cli.model.restorer import network_rgb

    return (torch.from_numpy(network_rgb(crop)).permute(2, 0, 1) * 2 - 1).to(device)


def _to_bgr_uint8(t) -> np.ndarray:
    rgb = (
        ((t.detach().float().clamp(-1, 1) + 1) * 127.5)
        .round()
        .byte()
        .permute(1, 2, 0)
        .cpu()
        .numpy()
    )
    from ented_cli.model.restorer import network_rgb

    return network_rgb(rgb)


class FaceFinder:
    """Aligned 256 crops of the faces in a photo (or of the whole image with `aligned`)."""

    def __init__(self, aligned: bool, faces: str, max_pixels: int | None):
        self.aligned, self.faces, self.max_pixels = aligned, faces, max_pixels
        self._detector = None

    def read(self, item: InputItem):
        from ented_cli.imaging.read import read_image

        if item.is_stdin:
            return read_image("-", data=sys.stdin.buffer.read(), max_pixels=self.max_pixels)
        return read_image(item.path, max_pixels=self.max_pixels)

    def crops(self, image, mode: str | None = None) -> list[tuple[list[float], np.ndarray]]:
        """[(box in the photo, aligned float32 BGR 256 crop)] for the selected faces."""
        from ented_cli.faces.align import estimate_alignment, warp_face
        from ented_cli.faces.detect import FaceDetector, select_faces
        from ented_cli.imaging.pixels import to_float_bgr
        from ented_cli.model.restorer import FACE_SIZE
        from ented_cli.pipeline.restore import aligned_crop

        frame = to_float_bgr(image)
        if self.aligned:
            h, w = frame.shape[:2]
            return [([0.0, 0.0, float(w), float(h)], aligned_crop(frame))]
        if self._detector is None:
            self._detector = FaceDetector()
        found = select_faces(
            self._detector.detect(image.pixels), mode or self.faces, image.pixels.shape[:2]
        )
        return [
            (
                [round(float(v), 1) for v in f.box],
                warp_face(frame, estimate_alignment(f.landmarks, FACE_SIZE), FACE_SIZE),
            )
            for f in found
        ]


def run_explain(req: ExplainRequest, error: Say, warn: Say) -> int:
    import torch

    from ented_cli.explain.measure import Settings, explain
    from ented_cli.explain.model_adapter import make_restore_fn
    from ented_cli.explain.regions import REGIONS, region_masks
    from ented_cli.model.restorer import EntedRestorer
    from ented_cli.model.weight_lookup import resolve_weights

    if not req.inputs:
        raise UsageError(
            "no input given; pass a photo, e.g. `ented explain photo.jpg --ref ref.jpg -o out/`"
        )
    if not req.refs:
        raise UsageError("explain needs a reference photo; add --ref FILE")
    items, problems = expand_inputs(req.inputs)
    for p in problems:
        error(p)
    if not items:
        return EXIT_FAILURE

    finder = FaceFinder(req.aligned, req.faces, req.max_pixels)
    restorer = EntedRestorer(
        resolve_weights(req.weights, download=req.download), req.device, req.dtype
    )
    device = restorer.device
    refs, ref_names = [], []
    for path in req.refs:
        try:
            crops = finder.crops(
                finder.read(InputItem(path, str(path), Path(path.name))), mode="largest"
            )
            if not crops:
                raise InputError(
                    f"{path}: no face found in this reference; use a photo where the face is clearly visible"
                )
        except EntedError as e:
            error(str(e))
            continue
        refs.append(crops[0][1])
        ref_names.append(str(path))
    if not refs:
        return EXIT_FAILURE
    ref_tensor = torch.stack([_to_tensor(c, device) for c in refs])  # N x 3 x 256 x 256
    ref_tiles = [np.uint8(np.clip(c, 0, 1) * 255 + 0.5) for c in refs]

    names = REGIONS if req.region == "all" else (req.region,)
    masks = region_masks(256, names)
    settings = Settings(steps=req.steps, samples=req.samples, seed=req.seed)
    restore = make_restore_fn(restorer, req.fidelity)
    req.output.mkdir(parents=True, exist_ok=True)

    failed = 0
    for item in items:
        record = {
            "input": item.display,
            "status": "explained",
            "error": None,
            "references": ref_names,
            "weights": restorer.name,
            "faces": [],
        }
        try:
            crops = finder.crops(finder.read(item))
            if not crops:
                record["status"] = "no_face"
                warn(f"{item.display}: no face found; nothing to explain")
            stem = "stdin" if item.is_stdin else Path(item.display).stem
            for i, (box, crop) in enumerate(crops):
                out = req.output / (f"{stem}.png" if len(crops) == 1 else f"{stem}_face{i}.png")
                record["faces"].append(
                    _explain_face(
                        crop,
                        box,
                        ref_tensor,
                        ref_tiles,
                        restore,
                        masks,
                        settings,
                        req,
                        out,
                        f"{item.display} face {i}",
                        explain,
                    )
                )
        except EntedError as e:
            failed += 1
            record.update(status="error", error=str(e))
            error(str(e))
        if req.as_json:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
    if failed == len(items):
        return EXIT_FAILURE
    return EXIT_PARTIAL if failed or problems or len(refs) < len(req.refs) else EXIT_OK


def _explain_face(
    crop, box, ref_tensor, ref_tiles, restore, masks, settings, req, out: Path, name: str, explain
) -> dict:
    import torch

    from ented_cli.explain.picture import explanation_picture
    from ented_cli.imaging.atomic import write_atomic

    t0 = time.perf_counter()
    lq = _to_tensor(crop, ref_tensor.device)
    if hasattr(restore, "anchor"):  # guided weights: the warp is found on this face's clean images
        restore.anchor(lq, ref_tensor)
    with ProgressBar("explaining", settings.steps, req.quiet) as step:
        results = explain(restore, lq, ref_tensor, masks, settings, on_step=lambda i: step(name))
    with torch.no_grad():
        restored = _to_bgr_uint8(restore(lq[None], ref_tensor[None])[0])
    shown = "face" if "face" in results else next(iter(results))
    faces = [np.uint8(np.clip(crop, 0, 1) * 255 + 0.5), *ref_tiles]
    picture = explanation_picture(faces, restored, results, shown, masks[shown])
    ok, png = cv2.imencode(".png", picture)
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 BGR array
        raise EntedError(f"{out}: could not encode the picture")
    write_atomic(out, png.tobytes())
    return {
        "box": box,
        "picture": str(out),
        "seconds": round(time.perf_counter() - t0, 2),
        "settings": {
            "steps": settings.steps,
            "samples": settings.samples,
            "seed": settings.seed,
            "cells": settings.cells,
            "noise_cells": settings.noise_cells,
            "target_sigma": settings.target_sigma,
            "b": settings.b,
            "border": settings.border,
            "fidelity": req.fidelity,
        },
        "regions": {k: r.to_json(maps=req.maps) for k, r in results.items()},
    }
