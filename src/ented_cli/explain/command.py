"""`ented explain` (click only at import time; torch is imported when the command runs)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ented_cli.explain import REGIONS

EXPLAIN_EPILOG = """\b
Exit codes: 0 every input explained (or had no face); 1 failure (bad weights, no
usable reference, every input failed); 2 usage error; 3 some inputs or references
failed (the others were explained); 130 interrupted (Ctrl-C)."""


@click.command("explain", epilog=EXPLAIN_EPILOG)
@click.argument("inputs", nargs=-1)
@click.option(
    "-r",
    "--ref",
    "refs",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Reference photo given to the network (repeatable: each gets its own map).",
)
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
@click.option(
    "-w",
    "--fidelity",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Fidelity the network restores with (as in `ented restore`).",
)
@click.option(
    "--weights",
    metavar="PATH|NAME|hf://",
    envvar="ENTED_WEIGHTS",
    help="Weight set to explain (env ENTED_WEIGHTS).  [default: bundled ented-256-preview]",
)
@click.option("--download", is_flag=True, help="Allow fetching hf:// weights from the network.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
    default="auto",
    show_default=True,
    help="Compute precision (auto: float32 on CPU, float16 on GPU).",
)
@click.option("--json", "as_json", is_flag=True, help="Write one JSON line per input to stdout.")
@click.option("--maps", is_flag=True, help="With --json: include every cell's entropy (the maps).")
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress bar or warnings (errors are still printed)."
)
@click.option("-v", "--verbose", is_flag=True, help="Show the traceback of internal errors.")
def explain_command(
    inputs,
    refs,
    output,
    aligned,
    faces,
    region,
    steps,
    samples,
    seed,
    fidelity,
    weights,
    download,
    device,
    dtype,
    as_json,
    maps,
    quiet,
    verbose,
) -> None:
    """Show which input pixels and which reference pixels a restored face relies on.

    \b
    For each face, learns how much low-frequency noise every 16 px cell of the
    degraded face and of each reference can take before the restored region changes
    (Cheng et al., CVPR 2020). Cells that take little noise are knowledge points;
    R = reference points / (reference points + input points): 0 = the network
    ignores the reference, 1 = the region comes from the reference only.
    The picture shows input | reference(s) | restored with their heat maps and a bar
    of R per region; see docs/explain.md.

    \b
    Examples:
      ented explain old.jpg --ref good.jpg -o explained/
      ented explain face.png --ref ref.png --aligned --region all --json > r.jsonl
      ented explain old.jpg --ref good.jpg --steps 60 --samples 4 --device cuda
    """
    from ented_cli.cli.main import _show_tracebacks
    from ented_cli.cli.messages import error, warn
    from ented_cli.explain.runner import ExplainRequest, run_explain

    _show_tracebacks(verbose)
    request = ExplainRequest(
        inputs=inputs,
        refs=refs,
        output=output,
        aligned=aligned,
        faces=faces,
        region=region,
        steps=steps,
        samples=samples,
        seed=seed,
        fidelity=fidelity,
        weights=weights,
        download=download,
        device=device,
        dtype=dtype,
        as_json=as_json,
        maps=maps,
        quiet=quiet,
    )
    sys.exit(run_explain(request, error=error, warn=lambda m: warn(m, quiet)))
