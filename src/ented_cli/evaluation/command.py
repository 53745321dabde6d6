"""`ented eval`: score restorations on a benchmark folder (click only; heavy imports inside)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ented_cli.cli import options as opt

EVAL_EPILOG = """\b
Exit codes: 0 every triplet scored; 1 failure (nothing scored);
2 usage error (e.g. an empty benchmark); 3 some triplets failed (the rest were scored);
130 interrupted (Ctrl-C)."""


@click.command("eval", cls=opt.Command, epilog=EVAL_EPILOG)
@click.argument("bench_dir", metavar="[DIR]", required=False, type=click.Path(path_type=Path))
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Triplets as CSV rows degraded,reference,gt (';' between several references; paths "
    "relative to the CSV).  [default: DIR/triplets.csv when present]",
)
@click.option(
    "--synthesize",
    type=click.Path(path_type=Path),
    metavar="SRC",
    help="Build the benchmark from clean photos: a folder of person folders, or a CSV with a "
    "path (or aligned) column and an identity (or person) column.",
)
@click.option("--split", metavar="NAME", help="With a --synthesize CSV: keep rows of this split.")
@click.option(
    "--level",
    type=click.Choice(["mild", "medium", "severe", "random"]),
    default="medium",
    show_default=True,
    help="--synthesize degradation: a fixed level (down-sampling of a 256 face: mild ×2, "
    "medium ×4, severe ×12), or training's random mix (seeded).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of --level random (person i gets seed + i); fixed levels need none.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="Score only the first N triplets/people.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("eval-results"),
    show_default=True,
    help="Folder for report.md, report.json, contact_sheet.png (and benchmark/ with --synthesize).",
)
@opt.model_options
@opt.threads_option
@opt.fidelity_option
@opt.batch_size_option
@click.option(
    "--fid-min-images",
    type=click.IntRange(min=2),
    default=100,
    show_default=True,
    metavar="N",
    help="Compute FID only with at least N images (fewer give unreliable numbers).",
)
@click.option(
    "--sheet-rows",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    metavar="N",
    help="Rows of the contact sheet (the first N triplets).",
)
@click.option(
    "--save-outputs",
    is_flag=True,
    help="Also write the restorations under OUT/restored/METHOD/ (blind, ented, wrong_ref, "
    "classical).",
)
@click.option(
    "--wrong-ref/--no-wrong-ref",
    default=True,
    show_default=True,
    help="Score the wrong_ref row: the model given another person's reference (one more "
    "model run per face).",
)
@click.option(
    "--classical/--no-classical",
    default=True,
    show_default=True,
    help="Score the classical row: landmark warp of the reference + detail transfer, no "
    "learning (about 0.1 s per face).",
)
@click.option(
    "--guard/--no-guard",
    default=True,
    show_default=True,
    help="Score the model rows as `ented restore` delivers them: the do-no-harm guard keeps "
    "the input of a face the network does not make sharper, or makes less like its reference. "
    "--no-guard scores the network's raw outputs.",
)
@opt.quiet_option
def eval_command(**options) -> None:
    """Score the restorer on (degraded, reference, ground truth) triplets of aligned faces.

    \b
    A benchmark folder DIR holds aligned square face crops (FFHQ-style template, as
    `ented restore --aligned` expects; any size, e.g. 512 for CelebA-Test), matched by stem:
      DIR/degraded/NAME.png    the degraded input (may be smaller than the ground truth)
      DIR/reference/NAME.jpg   a good photo of the same person,
        or DIR/reference/NAME/   a folder of several photos of that person
      DIR/gt/NAME.png          the ground truth
    or a CSV (--csv FILE, or DIR/triplets.csv) with columns degraded,reference,gt.

    \b
    Five rows are scored in the same run: input (the degraded image, bicubic),
    blind (the model without a reference), ented (with the reference), so the
    reference's contribution (ented - blind) is a number; wrong_ref (the model given
    another person's reference: the next triplet's, skipping the same person), which
    shows whether the weights use whose face it is (ented - wrong_ref); and classical
    (no learning: the reference warped onto the input's 68 landmarks, its fine detail
    added to the input's coarse one), the bar a learned model must clear.
    --no-wrong-ref / --no-classical leave those rows out. The model rows pass through
    `ented restore`'s do-no-harm guard (report.json: guard_kept_input) unless --no-guard.
    The model runs at 256 px; all
    metrics are computed at the ground truth's resolution (outputs resized bicubically,
    by area averaging when shrinking), on 8-bit RGB:
    PSNR, SSIM, LPIPS-VGG, identity cosine (dlib) to the ground truth and to the reference,
    and FID when there are at least 100 images (needs `pip install "ented[eval]"`).
    The Markdown table goes to stdout; OUT gets report.md, report.json (per image, settings,
    weights sha256, timing) and contact_sheet.png.

    \b
    --synthesize SRC builds the benchmark from clean photos (first photo of each person
    degraded, second one as the reference), writes it to OUT/benchmark/ (degraded PNGs and
    a triplets.csv naming the source photos, which are not copied) and scores it.

    \b
    Examples:
      ented eval my-bench/ -o results/
      ented eval --csv pairs.csv --weights runs/mine/ented.json --device cuda
      ented eval --synthesize photos/ --level severe --limit 50
      ented eval --synthesize data/celeba-wild.csv --split val -o eval-val/
    """
    from ented_cli.cli.messages import error, note, warn
    from ented_cli.evaluation.runner import EvalRequest, run_eval

    quiet = options["quiet"]
    code = run_eval(
        EvalRequest(**options),
        error=error,
        warn=lambda m: warn(m, quiet),
        note=lambda m: note(m, quiet),
        echo=click.echo,
    )
    sys.exit(code)
