"""`ented bench`: time the generator and the whole pipeline (click only; heavy imports inside)."""

from __future__ import annotations

from pathlib import Path

import click

from ented_cli.cli import options as opt

BENCH_EPILOG = """\b
Exit codes: 0 measured; 1 failure (e.g. no weights); 2 usage error.
Numbers from a busy machine are noisy: ratios (vs batch 1, vs sequential) are measured in the
same run and hold up better than absolute speeds."""


def _batch_sizes(ctx, param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        sizes = tuple(sorted({int(v) for v in value.split(",") if v.strip()}))
    except ValueError:
        raise click.BadParameter("use whole numbers separated by commas, e.g. 1,4,16") from None
    if not sizes or sizes[0] < 1:
        raise click.BadParameter("use batch sizes of 1 or more, e.g. 1,4,16")
    return sizes


@click.command("bench", cls=opt.Command, epilog=BENCH_EPILOG)
@click.option(
    "--config",
    metavar="PRESET",
    help="Time a model preset (tiny, ented-256-preview, ented-256) with random weights instead: "
    "valid timings, meaningless pictures.",
)
@click.option(
    "--batch-sizes",
    callback=_batch_sizes,
    metavar="N,N,...",
    help="Batch sizes to time the generator alone at (--batch-size is the pipeline's).  "
    "[default: 1,2,4,8,16,32,64; --quick: 1,4]",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    help="Timed runs per measurement (median for the generator, best for the pipeline).  "
    "[default: 3; --quick: 1]",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    help="Untimed runs before each generator measurement.  [default: 1]",
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0),
    help="Stop repeating a generator measurement after this long (one run always counts).  "
    "[default: 10; --quick: 2]",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Photos for the whole-pipeline run, repeated to --count.  [default: the bundled "
    "examples, with examples/astronaut.png as the reference]",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    metavar="N",
    help="Images per pipeline pass.  [default: 12, or 3 batches on a GPU; --quick: 3]",
)
@click.option(
    "--ref",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Reference photo for the pipeline run (faces are paired with it by identity).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Threads reading and analysing photos ahead of the network, timed against the "
    "sequential pipeline (0: sequential only).",
)
@click.option(
    "--part",
    type=click.Choice(["all", "generator", "pipeline"]),
    default="all",
    show_default=True,
    help="Time the generator alone, the whole pipeline, or both.",
)
@click.option(
    "--video",
    is_flag=True,
    help="Time `ented restore` on a video instead: frames/s by stage and the restored faces' "
    "flicker against the input's, tracked (detection every 5 frames, steadied) and detecting "
    "every frame.",
)
@click.option(
    "--clip",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="With --video: your own clip.  [default: a 720p clip of an example face, made here]",
)
@click.option(
    "--frames",
    type=click.IntRange(min=2),
    metavar="N",
    help="With --video: frames of the clip made here.  [default: 60; --quick: 20]",
)
@click.option("--quick", is_flag=True, help="A fast run: fewer batch sizes, images and repeats.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Also write every number, with the machine and settings, to FILE as JSON.",
)
@opt.model_options
@opt.threads_option
@opt.backend_option
@opt.batch_size_option
@opt.quiet_option
def bench_command(json_path: Path | None, quiet: bool, **options) -> None:
    """Faces/s, latency and peak memory of the generator and of the whole pipeline.

    The generator is timed alone at each batch size, with a cached reference and blind. The
    whole pipeline (decode, detect, align, identity, restore, paste, encode) runs on real
    photos, sequential and with worker threads, and its time is broken down by stage so the
    slowest stage is named. Peak memory is the process's resident set (reset per
    measurement on Linux) and, on a GPU, torch's allocator peak. --device auto times the CPU,
    and the GPU too when there is one.

    \b
    Examples:
      ented bench                                   # the weights `ented restore` uses
      ented bench --quick --json bench.json
      ented bench --device cuda --batch-sizes 1,16,64 --part generator
      ented bench --images my-photos/ --ref me.jpg --count 40
      ented bench --config ented-256 --quick        # an architecture, random weights
      ented bench --part generator --quick --threads 1   # CPU threads (default: auto)
      ented bench --video --ref me.jpg --clip holiday.mp4   # a video: fps and flicker
      ented bench --part generator --backend onnxruntime   # the generator on ONNX Runtime
    """
    from ented_cli.bench.report import render, write_json
    from ented_cli.bench.runner import BenchRequest, run_bench

    given = {k: v for k, v in options.items() if v is not None}
    if options["quick"]:
        given = {**BenchRequest.quick_defaults(), **given}
    result = run_bench(BenchRequest(**given), note=_note(quiet))
    click.echo(render(result))
    if json_path is not None:
        write_json(result, json_path)
        if not quiet:
            click.echo(f"ented: bench: wrote {json_path}", err=True)


def _note(quiet: bool):
    def note(message: str) -> None:
        if not quiet:
            click.echo(f"ented: bench: {message}", err=True)

    return note
