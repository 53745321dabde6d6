"""`ented bench`: time the generator and the whole pipeline (click only; heavy imports inside)."""

from __future__ import annotations

import click


@click.command("bench")
def bench_command() -> None:
    """Faces/s, latency and peak memory of the generator and of the whole pipeline."""
    raise click.UsageError("ented bench is not implemented yet")
