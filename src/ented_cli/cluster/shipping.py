"""What the driver sends to the workers: once per run, the `Shipment` (weights, options, the
reference galleries and the crops their features come from), put in Ray's object store and read
by each worker when it starts; once per input, a packed `ImageJob`.

References are read, detected, aligned and embedded once, on the driver, by the pipeline's own
`ReferenceLibrary`; no worker opens a reference photo.
"""

from __future__ import annotations

import os
import pickle
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ented_cli.model.weights import WeightSet
from ented_cli.pipeline.batch import ImageJob
from ented_cli.pipeline.library import reference_key
from ented_cli.pipeline.references import ReferenceFace, ReferenceGallery
from ented_cli.pipeline.restore import RestoreOptions


class ReferenceCrops:
    """The driver's restorer: it runs no network. It knows the weights the workers will load,
    and keeps the aligned crop of every reference the library encodes (`add_reference`), so
    that the workers encode exactly those pixels."""

    batch_size = 1

    def __init__(self, weights: WeightSet) -> None:
        self.weights = weights
        self.crops: dict[str, np.ndarray] = {}

    def add_reference(self, key: Any, face: np.ndarray) -> None:
        self.crops[key] = np.asarray(face, np.float32)

    def restore(self, faces, references, fidelity):  # pragma: no cover - a wiring mistake
        raise RuntimeError("the driver of a cluster run restores nothing; its workers do")


@dataclass
class Shipment:
    """Everything a worker needs besides its inputs, sent once per run."""

    weights: WeightSet  # resolved on the driver: every worker loads the same files
    options: RestoreOptions
    device: str
    dtype: str
    batch_size: int | None  # faces per generator run (None: the device's default)
    threads: int  # CPU threads per worker (network and detector)
    backend: str | None  # what runs the generator (--backend; model/onnx_engine.py)
    cwd: str  # relative input and output paths are relative to the driver's folder
    galleries: list[ReferenceGallery | None]  # a job names its gallery by index
    references: list[tuple[ReferenceFace, np.ndarray]]  # each reference and its float crop

    @classmethod
    def build(
        cls,
        galleries: list[ReferenceGallery | None],
        crops: ReferenceCrops,
        **settings: Any,
    ) -> Shipment:
        # One entry per photo: a person's photo may sit in several galleries (--pairs rows).
        faces = {reference_key(f): f for g in galleries if g is not None for f in g.faces}
        references = [(f, crops.crops[key]) for key, f in faces.items()]
        return cls(cwd=os.getcwd(), galleries=galleries, references=references, **settings)


def pack_job(job: ImageJob, gallery: int = 0) -> bytes:
    """One input between two stages (maybe two machines). Its start time travels as wall-clock
    time, so `timing_ms.total` still spans every stage."""
    started = time.time() - (time.perf_counter() - job.t0) if job.t0 else None
    return pickle.dumps((job, gallery, started), protocol=5)


def unpack_job(data: bytes) -> tuple[ImageJob, int]:
    # Written by pack_job in this run's own processes, never read from elsewhere.
    job, gallery, started = pickle.loads(data)
    if started is not None:
        job.t0 = time.perf_counter() - (time.time() - started)
    return job, gallery
