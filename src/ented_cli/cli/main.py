"""The `ented` command line. Heavy modules (torch, onnxruntime, dlib) are imported inside the
commands, so `ented --help` answers instantly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ented_cli import __version__
from ented_cli.cli import options as opt
from ented_cli.cli.messages import error as _error
from ented_cli.cli.messages import warn as _warn
from ented_cli.cli.options import EXIT_CODES_HELP, log
from ented_cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EntedError
from ented_cli.model.threads import quiet_openmp_waits


class EntedGroup(click.Group):
    """Turns EntedError into a one-line message and its documented exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EntedError as e:
            _error(str(e))
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            _error("interrupted")
            ctx.exit(EXIT_INTERRUPTED)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # a bug: one line by default, the traceback with -v
            log.debug("traceback of the internal error:", exc_info=True)
            _error(
                f"internal error ({type(e).__name__}: {e}); rerun with -v for the traceback "
                "and please report it"
            )
            ctx.exit(EXIT_FAILURE)


@click.group(
    cls=EntedGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, "-V", "--version", prog_name="ented")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Restore degraded face photos with a good photo of the same person (ENTED)."""
    if ctx.invoked_subcommand != "train":
        # Before any command imports torch, which reads it once: OpenMP threads that spin while
        # they wait steal the cores other processes need (docs/benchmarks.md). A user's own
        # OMP_WAIT_POLICY wins; training keeps OpenMP's default.
        quiet_openmp_waits()


class ThresholdOption(opt.Option):
    """--match-threshold: its help shows identity.MATCH_THRESHOLD, imported only when the help is
    printed (identity.py needs numpy, and `ented --help` loads click only)."""

    def get_help_record(self, ctx: click.Context):
        from ented_cli.faces.identity import MATCH_THRESHOLD

        flags, text = super().get_help_record(ctx)
        return flags, text.replace("{threshold}", f"{MATCH_THRESHOLD:g}")


# --------------------------------------------------------------------------------------- restore
CLUSTER = "Cluster options (ented restore --cluster)"


@main.command(
    cls=opt.Command,
    epilog=EXIT_CODES_HELP,
    short_help="Restore faces in photos and videos, with or without references.",
)
@click.argument("inputs", nargs=-1)
@click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="Output file, folder (mirrors input folders), or - for stdout.  [default: results/]",
)
@opt.refs_option
@click.option(
    "--ref-dir",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Reference gallery: one sub-folder per person, or loose photos (one person each).",
)
@click.option(
    "--pairs",
    type=click.Path(path_type=Path),
    metavar="CSV",
    help="CSV of input,ref rows for scripted batches (ref may list several files separated by ';').",
)
@click.option(
    "--faces",
    type=click.Choice(["all", "largest", "center", "match"]),
    default="all",
    show_default=True,
    help="Which faces to restore; 'match' restores only faces that match a reference.",
)
@click.option(
    "--aligned",
    is_flag=True,
    help="Inputs are already aligned face crops (FFHQ-style, any size): no detection or paste-back.",
)
@click.option(
    "--min-face",
    type=click.FloatRange(min=0),
    default=16.0,
    show_default=True,
    metavar="PX",
    help="Ignore faces smaller than this (pixels).",
)
@click.option(
    "--unmatched",
    type=click.Choice(["blind", "skip"]),
    default="blind",
    show_default=True,
    help="Faces that match no reference: restore them without one, or leave them untouched.",
)
@click.option(
    "--match-threshold",
    type=click.FloatRange(-1, 1),
    default=None,
    metavar="SIM",
    cls=ThresholdOption,
    help="Identity similarity needed to pair a face with a reference; -1 always pairs.  "
    "[default: {threshold}]",
)
@opt.fidelity_option
@click.option(
    "-s",
    "--upscale",
    type=click.FloatRange(min=0.1, max=8),
    default=1.0,
    show_default=True,
    help="Scale the whole output image by this factor.",
)
@click.option(
    "-R", "--recursive", is_flag=True, help="Look for images in sub-folders of input folders too."
)
@click.option("--suffix", default=None, metavar="TEXT", help="Add _TEXT to output file names.")
@click.option(
    "--ext",
    type=click.Choice(["jpg", "png", "webp", "tif", "bmp"]),
    default=None,
    help="Output format.  [default: same as the input]",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=95,
    show_default=True,
    help="JPEG/WebP quality.",
)
@click.option(
    "--no-colour-match",
    "colour_match",
    flag_value=False,
    default=True,
    help="Keep the network's colours instead of matching the original photo's.",
)
@click.option(
    "--keep-detail/--no-keep-detail",
    default=True,
    show_default=True,
    help="On faces larger than the network's 256 px, keep the photo's own finest detail.",
)
@click.option(
    "--guard/--no-guard",
    default=True,
    show_default=True,
    help="Do no harm: keep the input face when restoring it with a reference made it less like "
    'that person (reported as "guard": "kept_input").',
)
@click.option(
    "--save-faces", is_flag=True, help="Also save each aligned face, before|after, under faces/."
)
@click.option(
    "--save-cmp",
    is_flag=True,
    help="Also save, beside each output NAME.EXT, NAME_cmp.jpg (the photo before|after, "
    "labelled) and NAME_cmp_faces.jpg (each restored face's aligned crop before|after|"
    "reference, numbered as in --json); .png when the output is lossless.",
)
@click.option(
    "--no-mark",
    "mark",
    flag_value=False,
    default=True,
    help="Do not mark re-encoded outputs with 'ented VERSION' in their Software tag (EXIF, TIFF, "
    "PNG text); copies of unchanged inputs are never marked.",
)
@click.option(
    "--skip-existing",
    is_flag=True,
    help="Skip inputs whose output file already exists (resume a batch).",
)
@click.option(
    "--cluster",
    metavar="ADDRESS|auto|local",
    cls=opt.Option,
    section=CLUSTER,
    help="Run on a Ray cluster: its address, auto (the one this machine is part of) or local "
    '(a new one on this machine). Needs pip install "ented[cluster]".',
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    cls=opt.Option,
    section=CLUSTER,
    help="Generator workers (one model each) on the cluster.  [default: as many as it holds]",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=0.0,
    cls=opt.Option,
    section=CLUSTER,
    help="GPUs each generator worker takes (0.5 puts two on one GPU); 0 runs them on CPUs.",
)
@opt.max_pixels_option
@opt.video_options
@opt.model_options
@opt.threads_option
@opt.backend_option
@opt.batch_size_option
@opt.json_lines_option
@opt.quiet_option
@opt.verbose_option
def restore(**options):
    """Restore the faces in INPUTS (files, folders, quoted globs, or - for stdin): photos and
    videos (mp4, mov, mkv, webm, avi; sound is copied untouched, subtitles and other streams
    are copied, converted, or named in a note when the output format cannot hold them).

    --ref is repeatable: several photos of one person, or of several people.

    \b
    Examples:
      ented restore old.jpg --ref good.jpg -o fixed.jpg
      ented restore scans/ -R --ref-dir family/ -o restored/ --json > report.jsonl
      ented restore "album/*.png" --faces largest -w 0.7 -s 2 -o out/
      cat old.jpg | ented restore - --ref good.jpg -o - > fixed.jpg
      ented restore --pairs jobs.csv -o out/
      ented restore archive/ -R -o restored/ --cluster auto --skip-existing --json > report.jsonl
      ented restore clip.mp4 --ref face.jpg -o fixed.mp4 --start 1:00 --end 1:30
    """
    from ented_cli.cli.restore import RestoreRequest, run_restore

    fields = RestoreRequest.__dataclass_fields__
    request = RestoreRequest(**{k: v for k, v in options.items() if k in fields})
    sys.exit(run_restore(request, error=_error, warn=lambda m: _warn(m, options["quiet"])))


# --------------------------------------------------------------------------------------- weights
@main.group()
def weights() -> None:
    """Inspect the weight sets ented can use."""


@weights.command("list")
def weights_list() -> None:
    """List the weight sets found (bundled weights/ and ENTED_WEIGHTS_DIR)."""
    from ented_cli.model.weight_lookup import list_weight_sets

    sets = list_weight_sets()
    if not sets:
        _warn("no weight sets found; train one with `ented train` or pass --weights")
    else:
        click.echo("name\tarchitecture\tsize\tshards\timages seen\tmanifest")
    for ws in sets:
        extra = ws.info.get("extra", {}) or {}
        size = ws.total_bytes / 2**20
        click.echo(
            f"{ws.name}\t{ws.architecture}\t{size:.1f} MiB\t{len(ws.shards)} shard(s)\t"
            f"{extra.get('images_seen', '?')} images seen\t{ws.manifest or ws.shards[0]}"
        )


@weights.command("verify")
@click.argument("spec", required=False)
@opt.download_option
def weights_verify(spec, download) -> None:
    """Check sizes and sha256 of a weight set (default: the one `restore` would use)."""
    from ented_cli.model.weight_lookup import resolve_weights
    from ented_cli.model.weights import verify_weight_set

    ws = resolve_weights(spec, download=download)
    problems = verify_weight_set(ws)
    for p in problems:
        _error(p)
    if problems:
        sys.exit(EXIT_FAILURE)
    click.echo(f"{ws.name}: {len(ws.shards)} shard(s) OK ({ws.total_bytes / 2**20:.1f} MiB)")


@weights.command("path")
@click.argument("spec", required=False)
def weights_path(spec) -> None:
    """Print where the weight set's manifest (or file) is."""
    from ented_cli.model.weight_lookup import resolve_weights

    ws = resolve_weights(spec)
    click.echo(str(ws.manifest or ws.shards[0]))


# ----------------------------------------------------------------------------------------- train
@main.command(short_help="Train ENTED (resumable; works under torchrun).")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Training config (TOML), e.g. configs/ented-256.toml.",
)
@click.option("--out-dir", default=None, help="Override the config's out_dir.")
@click.option("--data-root", default=None, help="Override the config's data_root.")
@click.option(
    "--max-minutes", type=float, default=None, help="Stop (and checkpoint) after this many minutes."
)
@click.option(
    "--resume-from",
    default=None,
    help="Start stage 2 from a weight set (e.g. weights/ented-256-preview.json); new modules start fresh.",
)
@click.option(
    "--profile",
    "profile_steps",
    type=click.IntRange(1),
    default=None,
    help="Do not train: time N steps by part, against the first preview's trainer, and print both.",
)
def train(config_path, out_dir, data_root, max_minutes, resume_from, profile_steps) -> None:
    """Train ENTED (two stages; resumes from OUT_DIR/checkpoint.pt). Works under torchrun."""
    from ented_cli.train.config import TrainConfig
    from ented_cli.train.trainer import Trainer

    if profile_steps is not None:
        from ented_cli.train.profile import run_profile

        click.echo(run_profile(config_path, profile_steps, data_root))
        return

    overrides = {
        k: v
        for k, v in {
            "out_dir": out_dir,
            "data_root": data_root,
            "max_minutes": max_minutes,
            "resume_from": resume_from,
        }.items()
        if v is not None
    }
    Trainer(TrainConfig.load(config_path, overrides)).run()


@main.command("export", short_help="Export a training checkpoint as a weight set.")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.option("--name", required=True, help="Weight set name, e.g. ented-256-preview.")
@click.option(
    "-o", "--out-dir", default="weights", show_default=True, type=click.Path(path_type=Path)
)
def export(checkpoint, name, out_dir) -> None:
    """Export a training checkpoint's EMA generator as fp16 safetensors shards + manifest."""
    from ented_cli.train.export import export_checkpoint

    click.echo(str(export_checkpoint(checkpoint, out_dir, name)))


@main.command("prepare-data", short_help="Turn photos of people into aligned training crops.")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Share of people held out for validation.",
)
@click.option("--size", type=int, default=256, show_default=True, help="Aligned crop size.")
def prepare_data(src, dst, val_fraction, size) -> None:
    """Turn SRC (one sub-folder of photos per person) into aligned crops + DST/faces.csv for training."""
    from ented_cli.train.prepare import prepare_dataset

    summary = prepare_dataset(
        src, dst, val_fraction=val_fraction, size=size, progress=lambda m: click.echo(m, err=True)
    )
    click.echo(json.dumps(summary))


# ---------------------------------------------------------------------- eval/bench/explain/serve
# Defined in their own packages; these modules import only click at load time.
from ented_cli.bench.command import bench_command  # noqa: E402
from ented_cli.evaluation.command import eval_command  # noqa: E402
from ented_cli.explain.command import explain_command  # noqa: E402
from ented_cli.web.command import serve_command  # noqa: E402

# One line each in `ented --help` (click cuts a longer first docstring sentence with "...").
eval_command.short_help = "Score the restorer on benchmark triplets."
bench_command.short_help = "Time the generator and the whole pipeline."
explain_command.short_help = "Show which input and reference pixels a result uses."
serve_command.short_help = "Restore photos in a web page on this computer."
main.add_command(eval_command)
main.add_command(bench_command)
main.add_command(explain_command)
main.add_command(serve_command)


if __name__ == "__main__":  # pragma: no cover
    main()
