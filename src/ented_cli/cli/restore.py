"""`ented restore`: turns command-line choices into pipeline jobs and reports.

stdout carries data only (image bytes for `-o -`, JSON Lines for `--json`); messages and the
progress bar go to stderr.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ented_cli.cli.progress import ProgressBar
from ented_cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, UsageError
from ented_cli.paths import (
    DEFAULT_MAX_PIXELS,
    STDIN_EXT,
    InputItem,
    expand_inputs,
    file_key,
    input_paths,
    is_video_file,
    normalise_ext,
    plan_output,
    sniff_ext,
    sniff_video,
    unique_path,
)
from ented_cli.pipeline.report import ERROR, NO_FACE, SKIPPED, ImageReport


@dataclass
class RestoreRequest:
    inputs: tuple[str, ...]
    output: str | None
    refs: tuple[Path, ...]
    ref_dir: Path | None
    pairs: Path | None
    faces: str
    aligned: bool
    min_face: float
    unmatched: str
    match_threshold: float | None
    fidelity: float
    upscale: float
    batch_size: int | None
    device: str
    dtype: str
    weights: str | None
    download: bool
    recursive: bool
    suffix: str | None
    ext: str | None
    quality: int
    colour_match: bool
    keep_detail: bool
    guard: bool
    save_faces: bool
    save_cmp: bool
    skip_existing: bool
    as_json: bool
    quiet: bool
    cluster: str | None = None  # --cluster ADDRESS|auto|local: the run goes to Ray (cluster/)
    workers: int | None = None  # --workers: generator workers on the cluster
    gpus_per_worker: float = 0.0
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # larger inputs are refused before decoding
    verbose: bool = False  # tracebacks of internal errors (the CLI routes them to stderr)
    threads: int | None = None  # --threads / ENTED_THREADS; None: auto (model/threads.py)
    backend: str | None = None  # --backend / ENTED_BACKEND (model/onnx_engine.py)
    mark: bool = True  # --no-mark: no "ented <version>" Software tag in the files it encodes
    # Videos (video/settings.py): encoder, the part to restore, tracking, steadying.
    codec: str = "auto"
    crf: int | None = None
    preset: str = "medium"
    detect_every: int = 5
    start: float | None = None
    end: float | None = None
    steady: bool = True


def _unusable_reference(path) -> str:
    """Why a --ref that is not a regular file cannot be used, and the fix, in one line."""
    if Path(path).is_dir():
        return f"{path}: reference is a folder; pass it with --ref-dir instead of --ref"
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return f"{path}: reference is a symbolic link loop; fix or remove the link"
            return f"{path}: reference is a broken symbolic link; point it at an existing photo"
    if os.path.exists(path):
        return f"{path}: reference is not a regular file (a pipe, device or socket); pass a photo"
    return f"{path}: reference not found; check the --ref path"


def _reference_files(req: RestoreRequest, error: Callable[[str], None]) -> tuple[list, list, dict]:
    """(person, path) of the --ref files and of the --ref-dir gallery, checked before any work:
    a --ref that is missing, not a file or not a readable image is a usage error (exit 2), so a
    typo never turns into a batch restored without its reference. Also the --ref photos as
    read for that check, by `file_key`, for the reference library."""
    from ented_cli.errors import InputError
    from ented_cli.imaging.read import read_image
    from ented_cli.pipeline.references import collect_reference_files

    problems, decoded = [], {}
    for path in req.refs:
        if not Path(path).is_file():
            problems.append(_unusable_reference(path))
            continue
        try:
            decoded[file_key(path)] = read_image(path, max_pixels=req.max_pixels)
        except InputError as e:
            problems.append(f"{e} (a --ref must be a photo ented can read)")
    if problems:  # every one of them, so that one run shows all the typos
        for message in problems[:-1]:
            error(message)
        raise UsageError(problems[-1])
    try:
        loose = collect_reference_files(list(req.refs), None)
        gallery = collect_reference_files([], req.ref_dir) if req.ref_dir else []
    except InputError as e:
        raise UsageError(str(e)) from None
    return loose, gallery, decoded


def _unused_references(
    loose_faces: list, reports: list[ImageReport], threshold: float
) -> list[str]:
    """A line for each --ref person who was paired with no face of a batch's photos (for one
    photo, its own line already said so)."""
    with_faces = [r for r in reports if r.faces]
    if len(with_faces) < 2:
        return []
    paired = {f.person for r in with_faces for f in r.faces if f.person is not None}
    paths: dict[str, list[str]] = {}
    for face in loose_faces:
        paths.setdefault(face.person, []).append(str(face.path))
    return [
        f"{', '.join(files)}: this reference matched no face in {len(with_faces)} photo(s) "
        f"(threshold {threshold:.2f}); check that it shows the same person, or lower "
        "--match-threshold"
        for person, files in paths.items()
        if person not in paired
    ]


def _pairs_items(
    req: RestoreRequest,
) -> tuple[list[InputItem], dict[str, list[Path]], list[str]]:
    """The --pairs inputs, their references, and a line for each row naming a missing file."""
    from ented_cli.pipeline.references import read_pairs_csv

    table = read_pairs_csv(req.pairs)
    items, refs_of = [], {}
    for input_path, ref_paths in table.pairs:
        video = is_video_file(input_path)
        item = InputItem(input_path, str(input_path), Path(input_path.name), video=video)
        if file_key(input_path) not in refs_of:
            items.append(item)
        refs_of[file_key(input_path)] = ref_paths
    return items, refs_of, table.problems


def _check_request(req: RestoreRequest, items: list[InputItem]) -> None:
    if req.output == "-" and req.as_json:
        raise UsageError(
            "-o - and --json both want stdout; write the image to a file or drop --json"
        )
    if req.output == "-" and sys.stdout.isatty():
        raise UsageError(
            "-o -: refusing to write image data to a terminal; redirect stdout (> out.png)"
        )
    if req.output == "-" and (req.save_faces or req.save_cmp):
        raise UsageError("--save-faces/--save-cmp need an output file or folder, not -o -")
    if req.faces == "match" and not (req.refs or req.ref_dir or req.pairs):
        raise UsageError("--faces match needs references: add --ref, --ref-dir or --pairs")
    if sum(item.is_stdin for item in items) and req.pairs:
        raise UsageError("- (stdin) cannot be combined with --pairs")
    if req.cluster or req.workers or req.gpus_per_worker:
        from ented_cli.cluster.runner import check_request

        check_request(req, items)
    if req.start is not None and req.end is not None and req.end <= req.start:
        raise UsageError(f"--end {req.end:g} s is not after --start {req.start:g} s")


def run_restore(
    req: RestoreRequest, error: Callable[[str], None], warn: Callable[[str], None]
) -> int:
    # Fast checks first: a typo should not wait for the model to load.
    notes: list[str] = []
    items, missing = (
        expand_inputs(req.inputs, req.recursive, notes, videos=True) if req.inputs else ([], [])
    )
    for message in notes:  # e.g. sub-folders left out without -R
        warn(message)
    refs_of: dict[str, list[Path]] = {}
    if req.pairs:
        pair_items, refs_of, missing_rows = _pairs_items(req)
        items += pair_items
        missing += missing_rows
    if not items and not missing:
        raise UsageError("no inputs given; pass image files, folders, globs, - or --pairs CSV")
    _check_request(req, items)
    loose_refs, gallery_refs, decoded_refs = _reference_files(req, error)

    failures = len(missing)
    for message in missing:
        error(message)
    if not items:
        return EXIT_FAILURE

    # Read before planning, so that stdin's output keeps its format (results/stdin.jpg).
    stdin_data = sys.stdin.buffer.read() if any(item.is_stdin for item in items) else None
    if stdin_data and sniff_video(stdin_data):
        raise UsageError("-: stdin holds a video; ented reads videos from files, pass its path")
    stdin_ext = sniff_ext(stdin_data or b"") or STDIN_EXT
    taken = input_paths(items)
    many = len(items) > 1
    planned: list[tuple[InputItem, Path | str]] = []
    skipped: list[ImageReport] = []
    for item in items:
        out = plan_output(
            item, req.output, many=many, suffix=req.suffix, ext=req.ext, stdin_ext=stdin_ext
        )
        if out != "-":
            out = unique_path(Path(out), taken)
            if req.skip_existing and out.exists():
                skipped.append(ImageReport(item.display, str(out), status=SKIPPED))
                continue
        planned.append((item, out))
    if req.as_json:
        for report in skipped:
            _print_json(report)
    if not planned:
        warn("every output already exists (--skip-existing); nothing to do")
        _print_summary(skipped, failures, req.quiet)
        return EXIT_OK if not failures else EXIT_PARTIAL

    from ented_cli.imaging.read import CMYK_NOTE
    from ented_cli.pipeline.batch import make_job
    from ented_cli.pipeline.library import merge_same_person
    from ented_cli.pipeline.references import ReferenceGallery
    from ented_cli.pipeline.writer import OutputWriter

    pipeline = _build_pipeline(req, warn)
    library, ref_errors = pipeline.references, []
    global_gallery, loose_faces = None, []
    if loose_refs or gallery_refs:
        # A --ref the user named must be used: one that cannot (no face) stops the run here,
        # before any input, rather than leaving every photo restored blind (exit 2).
        loose_faces = library.faces(loose_refs, ref_errors, decoded_refs)
        if ref_errors:
            for message in ref_errors[:-1]:
                error(message)
            raise UsageError(ref_errors[-1])
        # Loose --ref files of one person become one person; gallery folders already say who is who.
        loose_faces = merge_same_person(loose_faces, pipeline.threshold)
        global_gallery = ReferenceGallery(loose_faces + library.faces(gallery_refs, ref_errors))
    galleries: dict[tuple, ReferenceGallery] = {}

    def gallery_for(item: InputItem) -> ReferenceGallery | None:
        if item.path is not None and file_key(item.path) in refs_of:
            files = tuple(refs_of[file_key(item.path)])
            if files not in galleries:  # the refs of one CSV row are photos of one person
                galleries[files] = ReferenceGallery(
                    library.faces([("paired", p) for p in files], ref_errors)
                )
            return galleries[files]
        return global_gallery

    for message in ref_errors:
        error(message)
    failures += len(ref_errors)
    if global_gallery is not None and len(global_gallery) == 0:
        warn("no usable reference face; restoring without references")

    jobs = [make_job(item, out, req.fidelity) for item, out in planned if not item.video]
    for job in jobs:
        if job.item.is_stdin:
            job.raw = stdin_data
    writer = OutputWriter(pipeline.opt, stdout_ext=normalise_ext(req.ext) if req.ext else None)
    done, reported, cmyk_told = 0, len(ref_errors), False
    with ProgressBar("restoring", len(jobs), req.quiet, unit="images") as advance:
        for job in _runner(req, pipeline, writer).run(jobs, gallery_for):
            for message in job.report.warnings:  # e.g. only the first frame was used
                if message.endswith(CMYK_NOTE):  # once per run: an archive of prints has many
                    if cmyk_told:
                        continue
                    cmyk_told, message = True, f"{message} (and so for every CMYK input)"
                warn(message)
            for message in ref_errors[reported:]:  # references of --pairs rows load lazily
                error(message)
            failures += len(ref_errors) - reported
            reported = len(ref_errors)
            if job.report.status == ERROR:
                error(job.report.error)
                failures += 1
            elif job.report.status == NO_FACE:
                warn(
                    f"{job.item.display}: no face found; wrote an unchanged copy to {job.report.output}"
                )
            else:
                done += 1
            if req.as_json:
                _print_json(job.report)
            advance(job.item.display)
    reports = [j.report for j in jobs]
    videos = [(item, out) for item, out in planned if item.video]
    if videos:  # after the photos: each video is a stream of its own, batched inside
        video_reports, video_failures = _restore_videos(
            req, pipeline, videos, gallery_for, warn, error
        )
        for message in ref_errors[reported:]:
            error(message)
        failures += video_failures + len(ref_errors) - reported
        done += sum(r.status not in (ERROR, NO_FACE) for r in video_reports)
        reports += video_reports
    for message in _unused_references(loose_faces, reports, pipeline.threshold):
        warn(message)
    _print_summary([*skipped, *reports], failures, req.quiet)
    if failures and not done and not any(r.status == NO_FACE for r in reports):
        return EXIT_FAILURE
    return EXIT_PARTIAL if failures else EXIT_OK


def _restore_videos(req: RestoreRequest, pipeline, planned, gallery_for, warn, error):
    """Each video in turn, with a bar of its frames; returns the reports and the failures."""
    from ented_cli.cli.progress import FramesBar
    from ented_cli.video.runner import VideoOptions, VideoRunner
    from ented_cli.video.settings import EncodeSettings

    encode = EncodeSettings(req.codec, req.crf, req.preset)
    options = VideoOptions(encode, req.detect_every, req.start, req.end, req.steady)
    runner = VideoRunner(pipeline, options)
    reports, failures = [], 0
    for item, out in planned:
        with FramesBar(item.display, req.quiet) as step:
            report = runner.run(item, out, gallery_for(item), req.fidelity, progress=step)
        for message in report.warnings:
            warn(message)
        if report.status == ERROR:
            error(report.error)
            failures += 1
        if req.as_json:
            _print_json(report)
        reports.append(report)
    return reports, failures


def _print_json(report: ImageReport) -> None:
    sys.stdout.write(json.dumps(report.to_json()) + "\n")
    sys.stdout.flush()


def _print_summary(reports: list[ImageReport], failures: int, quiet: bool) -> None:
    """One line on stderr for people and for scripts' logs alike, unless -q."""
    if not quiet:
        line = summary_line([r.to_json() for r in reports], failures)
        print(f"ented: {line}", file=sys.stderr)


def summary_line(reports: list[dict], failures: int) -> str:
    """One line for people: what happened to the batch and where the results are."""
    count = {
        status: sum(r["status"] == status for r in reports)
        for status in ("restored", "unchanged", "no_face", "skipped")
    }
    faces = [f for r in reports for f in r.get("faces", []) if f["restored"]]
    with_ref = sum(f["mode"] == "reference" for f in faces)
    videos = [r for r in reports if r.get("kind") == "video"]
    count["restored"] -= sum(r["status"] == "restored" for r in videos)
    parts = []
    if len(videos) < len(reports) or not videos:
        parts.append(
            f"{count['restored']} image(s) restored ({len(faces)} face(s), {with_ref} with a "
            "reference)"
        )
    if videos:
        tracks = [t for r in videos for t in r.get("tracks", []) if t["restored"]]
        done = sum(r["status"] == "restored" for r in videos)
        parts.append(
            f"{done} video(s) restored ({len(tracks)} face track(s), "
            f"{sum(t['mode'] == 'reference' for t in tracks)} with a reference)"
        )
    if count["unchanged"]:
        sharp = sum(
            f.get("guard_reason") == "already_sharp" for r in reports for f in r.get("faces", [])
        )
        why = f" ({sharp} face(s) already sharp; --no-guard restores them)" if sharp else ""
        parts.append(f"{count['unchanged']} left unchanged{why}")
    if count["no_face"]:
        parts.append(f"{count['no_face']} without a face")
    parts.append(f"{failures} failed")
    if count["skipped"]:
        parts.append(f"{count['skipped']} skipped")
    outputs = [r["output"] for r in reports if r.get("output") not in (None, "-")]
    # commonpath turns "." into "", which would read "results in /".
    folder = os.path.commonpath([os.path.dirname(o) or "." for o in outputs]) if outputs else ""
    where = f"; results in {folder or '.'}/" if outputs else ""
    return ", ".join(parts) + where


def _runner(req: RestoreRequest, pipeline, writer):
    """The batch runner of this machine, or the cluster's (`--cluster`): same jobs, same reports."""
    from ented_cli.pipeline.batch import BatchRunner

    if not req.cluster:
        return BatchRunner(pipeline, writer)
    from ented_cli.cli.messages import note
    from ented_cli.cluster.runner import ClusterRunner

    return ClusterRunner(req, pipeline, note=lambda message: note(message, req.quiet))


def _build_pipeline(req: RestoreRequest, warn: Callable[[str], None]):
    from ented_cli.pipeline.restore import RestoreOptions, RestorePipeline

    options = RestoreOptions(
        faces=req.faces,
        aligned=req.aligned,
        min_face=req.min_face,
        fidelity=req.fidelity,
        upscale=req.upscale,
        unmatched=req.unmatched,
        match_threshold=req.match_threshold,
        colour_match=req.colour_match,
        keep_detail=req.keep_detail,
        guard=req.guard,
        save_faces=req.save_faces,
        save_cmp=req.save_cmp,
        quality=req.quality,
        mark=req.mark,
        report_identity=req.as_json,
        max_pixels=req.max_pixels,
    )
    if req.cluster:  # the driver reads the references; the workers load the generator
        from ented_cli.cluster.runner import driver_pipeline

        return driver_pipeline(req.weights, options, download=req.download)
    return RestorePipeline.from_weights(
        req.weights,
        options,
        device=req.device,
        dtype=req.dtype,
        batch_size=req.batch_size,
        download=req.download,
        warn=warn,
        threads=req.threads,
        backend=req.backend,
    )
