"""`ented explain` (click only at import time; torch is imported when the command runs)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ented_cli.cli import options as opt
from ented_cli.explain import REGIONS

EXPLAIN_EPILOG = """\b
Exit codes: 0 every input explained (or had no face); 1 failure (bad weights, no
usable reference, every input failed); 2 usage error; 3 some inputs or references
failed (the others were explained); 130 interrupted (Ctrl-C)."""


@click.command("explain", cls=opt.Command, epilog=EXPLAIN_EPILOG)
@click.argument("inputs", nargs=-1)
@opt.refs_option
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("explained"),
    show_default=True,
    help="Folder for the pictures (INPUT.png, or INPUT_faceN.png).",
)
@click.option(
    "--aligned",
    is_flag=True,
    help="Inputs and references are already aligned face crops (FFHQ-style, any size).",
)
@click.option(
    "--faces",
    type=click.Choice(["all", "largest", "center"]),
    default="largest",
    show_default=True,
    help="Which faces of each input to explain.",
)
@click.option(
    "--region",
    type=click.Choice([*REGIONS, "all"]),
    default="face",
    show_default=True,
    help="Output region to explain; 'all' measures every region (5x the time) for the bar chart.",
)
@click.option(
    "--steps",
    type=click.IntRange(1, 10_000),
    default=30,
    show_default=True,
    help="Optimisation steps of the noise levels.",
)
@click.option(
    "--samples",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Noise draws per step.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the noise (same seed, same maps).",
)
@opt.fidelity_option
@opt.max_pixels_option
@opt.model_options
@opt.json_lines_option
@click.option(
    "--maps",
    is_flag=True,
    help="With --json: include every cell's entropy (the maps); with --compare, every "
    "checkpoint's knowledge points.",
)
@click.option(
    "--compare",
    nargs=2,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="RUN_A RUN_B",
    default=None,
    help="Compare two training runs (folders of checkpoints in training order) by the three "
    "hypotheses of Cheng et al.: knowledge points, learning speed, stability. INPUTS are the "
    "faces measured (default: examples/ and two London faces); no --ref.",
)
@opt.quiet_option
@opt.verbose_option
def explain_command(verbose: bool, **options) -> None:
    """Show which input pixels and which reference pixels a restored face relies on.

    \b
    For each face, learns how much low-frequency noise every 16 px cell of the
    degraded face and of each reference can take before the restored region changes
    (Cheng et al., CVPR 2020). Cells that take little noise are knowledge points;
    R = reference points / (reference points + input points): 0 = the network
    ignores the reference, 1 = the region comes from the reference only.
    The picture shows input | reference(s) | restored with their heat maps and a bar
    of R per region; see docs/explain.md. Several --ref photos are given to the network
    together, and each gets its own map.

    \b
    Examples:
      ented explain old.jpg --ref good.jpg -o explained/
      ented explain face.png --ref ref.png --aligned --region all --json > r.jsonl
      ented explain old.jpg --ref good.jpg --steps 60 --samples 4 --device cuda
      ented explain --compare runs/kd-distilled runs/kd-data
    """
    from ented_cli.cli.messages import error, warn
    from ented_cli.explain.runner import ExplainRequest, run_explain

    del verbose  # the -v option's callback has already routed tracebacks to stderr
    quiet = options["quiet"]
    runs = options.pop("compare")
    if runs:
        sys.exit(_compare(runs, options, lambda m: warn(m, quiet)))
    sys.exit(run_explain(ExplainRequest(**options), error=error, warn=lambda m: warn(m, quiet)))


def _compare(runs, options: dict, warn) -> int:
    from ented_cli.cli.messages import error
    from ented_cli.errors import UsageError
    from ented_cli.explain.compare import CompareRequest, run_compare

    if options["refs"]:
        raise UsageError("--compare measures each run blind; leave out --ref")
    keep = {"inputs", "aligned", "faces", "steps", "samples", "seed", "fidelity", "device"}
    keep |= {"dtype", "as_json", "maps", "max_pixels", "quiet"}
    request = CompareRequest(runs=tuple(runs), **{k: options[k] for k in keep})
    return run_compare(request, error=error, warn=warn)
