"""The three stages of a cluster run, each a Ray Data actor class around the single-machine
pipeline's own steps (`BatchRunner.prepare_job`, `restore_window`, `finish_job`), so a photo
gets the same pixels, the same report and the same failure policy as on one machine:

    Prepare    CPU   read → detect → select → align → pair (detector, identity network)
    Generate   GPU   the generator on the faces of several photos at once, the do-no-harm
               or CPU check; one model per actor
    Finish     CPU   paste back → encode → atomic write → the report

Each actor loads its models once and reads the run's `Shipment` once from the object store.
A row between the stages is {"index": input number, "job": a packed ImageJob}.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ented_cli.cluster.shipping import Shipment, pack_job, unpack_job
from ented_cli.pipeline.batch import BatchRunner, ImageJob


class _Stage:
    def __init__(self, shipment: list) -> None:
        import ray

        # A list around the reference, so that Ray hands over the reference and the shipment
        # is fetched here, once per actor, from the object store.
        self.shipment: Shipment = ray.get(shipment[0])
        if os.path.isdir(self.shipment.cwd):  # relative paths mean what they meant to the driver
            os.chdir(self.shipment.cwd)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        jobs = [unpack_job(data) for data in batch["job"]]
        self.run(jobs)
        packed = [pack_job(job, gallery) for job, gallery in jobs]
        return {"index": batch["index"], "job": np.array(packed, dtype=object)}

    def run(self, jobs: list[tuple[ImageJob, int]]) -> None:
        raise NotImplementedError


class Prepare(_Stage):
    """Reads and analyses one photo at a time, like the single machine's `prepare_job`."""

    def __init__(self, shipment: list) -> None:
        super().__init__(shipment)
        from ented_cli.faces.detect import FaceDetector
        from ented_cli.faces.identity import IdentityEncoder
        from ented_cli.pipeline.restore import RestorePipeline

        s = self.shipment
        detector = FaceDetector(threads=s.threads)
        pipeline = RestorePipeline(None, detector, IdentityEncoder(), s.options)  # no network
        self.runner = BatchRunner(pipeline, workers=0)

    def run(self, jobs: list[tuple[ImageJob, int]]) -> None:
        galleries = self.shipment.galleries
        for job, gallery in jobs:
            self.runner.prepare_job(job, lambda item, g=gallery: galleries[g])


class Generate(_Stage):
    """The generator, with every reference of the run encoded once when the actor starts."""

    def __init__(self, shipment: list) -> None:
        super().__init__(shipment)
        import ray

        from ented_cli.faces.identity import IdentityEncoder
        from ented_cli.model.restorer import EntedRestorer
        from ented_cli.pipeline.library import reference_key
        from ented_cli.pipeline.restore import RestorePipeline

        s = self.shipment
        self.notes: list[str] = []  # the restorer's warnings, handed to the next report
        restorer = EntedRestorer(
            s.weights,
            s.device,
            s.dtype,
            s.batch_size,
            warn=self.notes.append,
            threads=s.threads,
            backend=s.backend,
        )
        for face, crop in s.references:  # keys made here: the worker's own view of the paths
            restorer.add_reference(reference_key(face), crop)
        if ray.get_runtime_context().was_current_actor_reconstructed and restorer.batch_size > 1:
            # Its process died (killed, or by the node's memory monitor): come back smaller.
            restorer.batch_size //= 2
            self.notes.append(
                f"a generator worker restarted after its process died; it now runs "
                f"--batch-size {restorer.batch_size}"
            )
        pipeline = RestorePipeline(restorer, None, IdentityEncoder(), s.options)
        self.runner = BatchRunner(pipeline, workers=0)

    def run(self, jobs: list[tuple[ImageJob, int]]) -> None:
        window = [job for job, _ in jobs]
        self.runner.restore_window(window)  # out of memory halves the batch (EntedRestorer)
        if self.notes:
            window[0].report.warnings.extend(self.notes)
            self.notes.clear()


class Finish(_Stage):
    """Pastes back and writes one photo at a time, like the single machine's `finish_job`."""

    def __init__(self, shipment: list) -> None:
        super().__init__(shipment)
        from ented_cli.pipeline.restore import RestorePipeline
        from ented_cli.pipeline.writer import OutputWriter

        s = self.shipment
        encoder = None
        if s.options.report_identity:  # --json: identity before/after of blind faces too
            from ented_cli.faces.identity import IdentityEncoder

            encoder = IdentityEncoder()
        pipeline = RestorePipeline(None, None, encoder, s.options)
        self.runner = BatchRunner(pipeline, OutputWriter(s.options), workers=0)

    def run(self, jobs: list[tuple[ImageJob, int]]) -> None:
        for job, _ in jobs:
            self.runner.finish_job(job)
