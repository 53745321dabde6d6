"""`ented restore --cluster`: the driver's side. It plans the run like a single machine (inputs,
outputs, `--skip-existing`, references: cli/restore.py), ships what the workers need once,
streams the inputs through the Ray Data plan of cluster/stages.py and collects every report here,
as each photo is written, for the progress bar, `--json` and the summary.

    ClusterRunner(request, driver_pipeline(...)).run(jobs, gallery_for)   # like BatchRunner.run
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ented_cli.cluster.connect import (
    ClusterInfo,
    check_address,
    connected,
    data_only_stdout,
    import_ray,
)
from ented_cli.cluster.shipping import ReferenceCrops, Shipment, pack_job, unpack_job
from ented_cli.errors import EntedError, UsageError
from ented_cli.paths import InputItem
from ented_cli.pipeline.batch import GalleryFor, ImageJob
from ented_cli.pipeline.restore import RestoreOptions, RestorePipeline

# Rows per block of the input list: one block is read by one Prepare call, so blocks of one
# photo let every Prepare worker start at once; past this many photos they grow, so the driver
# does not hand Ray millions of blocks.
MAX_BLOCKS = 10_000
GPU_FACES_PER_RUN = 16  # images per Generate call on a GPU (the restorer's own GPU default)
# A run whose stderr is a log, not a terminal (no bar), says how far it is this often (seconds).
PROGRESS_EVERY_S = 60.0


def check_request(req: Any, items: Sequence[InputItem]) -> None:
    """Usage errors of a cluster run, found before any model loads."""
    if not req.cluster:
        if req.workers or req.gpus_per_worker:
            raise UsageError("--workers and --gpus-per-worker need --cluster ADDRESS|auto|local")
        return
    import_ray()  # a missing extra is a usage error that says how to install it
    check_address(req.cluster)
    if req.output == "-":
        raise UsageError("-o -: a cluster writes files; give an output folder for --cluster")
    videos = [item.display for item in items if getattr(item, "video", False)]
    if videos:
        raise UsageError(
            f"{videos[0]}: videos are restored on one machine; run them without --cluster"
        )


def driver_pipeline(weights_spec: str | None, options: RestoreOptions, download: bool = False):
    """The driver's pipeline: the real detector and identity network for the references, and no
    generator (the workers load it). The weights are resolved here, so a wrong --weights stops
    the run before any cluster starts."""
    from ented_cli.faces.detect import FaceDetector
    from ented_cli.faces.identity import IdentityEncoder
    from ented_cli.model.weight_lookup import resolve_weights

    crops = ReferenceCrops(resolve_weights(weights_spec, download=download))
    return RestorePipeline(crops, FaceDetector(), IdentityEncoder(), options)


class ClusterRunner:
    def __init__(
        self,
        req: Any,
        pipeline: RestorePipeline,
        note: Callable[[str], None] = lambda message: None,
    ):
        if not isinstance(pipeline.restorer, ReferenceCrops):
            raise TypeError("ClusterRunner needs driver_pipeline(...), which loads no generator")
        self.req, self.pipeline, self.note = req, pipeline, note
        self.threads = req.threads or 1  # per worker: a cluster is filled with workers, not threads
        self.gpus = float(req.gpus_per_worker or 0)
        self.info: ClusterInfo | None = None
        self.workers = 0

    def run(self, jobs: Sequence[ImageJob], gallery_for: GalleryFor) -> Iterator[ImageJob]:
        """Yields each job once, as its output is written (or it failed), in the order the
        cluster finishes them."""
        galleries, marks = _galleries(jobs, gallery_for)
        # A local cluster gets the logical CPUs its workers reserve, whatever the cores.
        local_workers = self.req.workers or max(1, (os.cpu_count() or 1) // (self.threads + 2))
        local_cpus = max(os.cpu_count() or 1, local_workers * (self.threads + 2))
        address = self.req.cluster
        verbose = self.req.verbose
        with data_only_stdout() as stdout, connected(address, local_cpus, verbose) as info:
            import ray

            self.info = info
            self.workers = self._workers(info)
            shipment = ray.put(self._shipment(galleries))
            rows = [
                {"index": i, "job": pack_job(j, g)} for i, (j, g) in enumerate(zip(jobs, marks))
            ]
            dataset = self._plan(ray, rows, [shipment])
            seen: set[int] = set()
            start = told = time.perf_counter()
            logged = not sys.stderr.isatty()  # a terminal has the progress bar
            try:
                for row in dataset.iter_rows():
                    i = int(row["index"])
                    if i in seen:  # never expected: a retried stage re-emitting a row
                        continue
                    seen.add(i)
                    jobs[i].report = unpack_job(row["job"])[0].report
                    with stdout.data():  # the caller prints its --json line now
                        yield jobs[i]
                    if logged and time.perf_counter() - told >= PROGRESS_EVERY_S:
                        told = time.perf_counter()
                        rate = len(seen) / (told - start)
                        self.note(f"cluster: {len(seen)}/{len(jobs)} image(s), {rate:.2f} images/s")
            except EntedError:
                raise
            except Exception as e:  # Ray's own failure (a stage that cannot start, a lost node)
                raise EntedError(
                    f"the cluster run stopped ({type(e).__name__}: {str(e).splitlines()[0]}); "
                    f"the {len(seen)} finished output(s) are kept: rerun with --skip-existing "
                    "to go on (-v shows the workers' logs)"
                ) from None
            for i, job in enumerate(jobs):
                if i not in seen:  # never expected either; said rather than lost
                    job.report.fail(f"{job.item.display}: no result came back from the cluster")
                    with stdout.data():
                        yield job
            seconds = time.perf_counter() - start
            self.note(
                f"cluster: {len(seen)} image(s) in {seconds:.1f} s, "
                f"{len(seen) / max(seconds, 1e-9):.2f} images/s on {info.nodes} node(s), "
                f"{self.workers} generator worker(s)"
            )

    def _workers(self, info: ClusterInfo) -> int:
        """--workers, or as many as the cluster holds; a usage error when it cannot hold them."""
        if self.gpus:
            if info.gpus < self.gpus:
                raise UsageError(
                    f"--gpus-per-worker {self.gpus:g}: the cluster has {info.gpus:g} GPU(s)"
                )
            workers = self.req.workers or int(info.gpus // self.gpus)
            need = workers * self.gpus
            short = info.gpus < need or info.cpus < workers + 2
        else:
            workers = self.req.workers or max(1, int(info.cpus // (self.threads + 2)))
            need = workers * (self.threads + 2)
            short = info.cpus < need
        if short:
            raise UsageError(
                f"--workers {workers}: the cluster has {info.cpus:g} CPU(s) and {info.gpus:g} "
                f"GPU(s), too few for {workers} generator(s) and their reading and writing "
                "workers; lower --workers or --threads"
            )
        return workers

    def _shipment(self, galleries) -> Shipment:
        req, crops = self.req, self.pipeline.restorer
        device = req.device if req.device != "auto" or not self.gpus else "cuda"
        return Shipment.build(
            galleries,
            crops,
            weights=crops.weights,
            options=self.pipeline.opt,
            device=device,
            dtype=req.dtype,
            batch_size=req.batch_size,
            threads=self.threads,
            backend=req.backend,
        )

    def _plan(self, ray, rows: list[dict], shipment: list):
        """read → detect → align → pair on CPU workers, the generator on its own workers (one
        model each, GPUs if asked), paste → write on CPU workers; Ray streams the photos
        through them, holding back the stages ahead when the object store fills."""
        from ray.data import ActorPoolStrategy, DataContext

        from ented_cli.cluster.stages import Finish, Generate, Prepare

        context = DataContext.get_current()
        context.enable_progress_bars = False  # the CLI draws its own, in images
        context.print_on_execution_start = False
        context.execution_options.preserve_order = False  # a slow photo holds back no other

        n = self.workers
        side = n if not self.gpus else max(n, int((self.info.cpus - n) // 2))
        common = {"batch_format": "numpy", "fn_constructor_args": (shipment,)}
        per_call = self.req.batch_size or (GPU_FACES_PER_RUN if self.gpus else 1)
        if self.gpus:
            generate = {"num_gpus": self.gpus, "num_cpus": 1}
        else:
            generate = {"num_cpus": self.threads}
        blocks = max(1, min(len(rows), MAX_BLOCKS))
        return (
            ray.data.from_items(rows, override_num_blocks=blocks)
            .map_batches(
                Prepare,
                batch_size=1,
                compute=ActorPoolStrategy(min_size=1, max_size=side),
                num_cpus=1,
                **common,
            )
            .map_batches(
                Generate,
                batch_size=per_call,
                compute=ActorPoolStrategy(size=n),
                **generate,
                **common,
            )
            .map_batches(
                Finish,
                batch_size=1,
                compute=ActorPoolStrategy(min_size=1, max_size=side),
                num_cpus=1,
                **common,
            )
        )


def _galleries(jobs: Sequence[ImageJob], gallery_for: GalleryFor) -> tuple[list[Any], list[int]]:
    """The distinct galleries of the run (the --ref/--ref-dir one, one per --pairs row) and, for
    each job, which of them it uses. The --pairs references load here, on the driver."""
    galleries: list[Any] = []
    index: dict[int, int] = {}
    marks = []
    for job in jobs:
        gallery = gallery_for(job.item)
        if id(gallery) not in index:
            index[id(gallery)] = len(galleries)
            galleries.append(gallery)
        marks.append(index[id(gallery)])
    return galleries, marks
