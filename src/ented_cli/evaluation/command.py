"""`ented eval`: score restorations on a benchmark folder (click only; heavy imports inside)."""

from __future__ import annotations

import click


@click.command("eval")
def eval_command() -> None:
    """Score the restorer on a folder of (degraded, reference, ground truth) triplets."""
    raise click.UsageError("ented eval is not implemented yet")
