"""`ented serve` (click only at import time: Starlette, uvicorn and torch load when it runs)."""

from __future__ import annotations

import re

import click

from ented_cli.cli import options as opt
from ented_cli.cli.messages import note, warn

SERVE_EPILOG = """\b
Exit codes: 0 stopped with Ctrl-C; 1 failure (bad weights, the web extra missing);
2 usage error (a port in use, a bad --host or --token)."""


def _token(ctx, param, value: str | None) -> str | None:
    # It travels in a link and a cookie: URL-safe characters only, and not guessable.
    if value is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{12,}", value):
        raise click.BadParameter("use at least 12 letters, digits or - _ . ~")
    return value


@click.command("serve", cls=opt.Command, epilog=SERVE_EPILOG)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. The default is this computer only; 0.0.0.0 lets other "
    "computers in, and then a token is required.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on (0: any free port; the link printed has it).",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the web browser.")
@click.option(
    "--token",
    callback=_token,
    envvar="ENTED_TOKEN",
    metavar="TEXT",
    help="Secret that the page's link must carry (env ENTED_TOKEN).  [default: none on "
    "127.0.0.1; a random one on any other address]",
)
@click.option(
    "--max-upload",
    "max_upload_mb",
    type=click.FloatRange(min=1),
    default=200.0,
    show_default=True,
    metavar="MB",
    help="Largest upload: the photos and references of one request together.",
)
@click.option(
    "--queue",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    metavar="N",
    help="Requests that may wait for the model; more are told the server is busy.",
)
@click.option(
    "--keep",
    "keep_minutes",
    type=click.FloatRange(min=0.5),
    default=30.0,
    show_default=True,
    metavar="MIN",
    help="Remove results this long after the page last asked for them (at once when the "
    "page is closed, a minute after everything was downloaded).",
)
@opt.fidelity_option
@opt.max_pixels_option
@opt.model_options
@opt.threads_option
@opt.batch_size_option
@opt.quiet_option
@opt.verbose_option
def serve_command(quiet: bool, verbose: bool, **options) -> None:
    """Restore photos in a web page on this computer: drop in old photos and good photos of
    the same people, compare before and after, download the results. Nothing leaves this
    computer.

    \b
    Examples:
      ented serve --open
      ented serve --port 9000 --device cuda
      ented serve --host 0.0.0.0 --token my-family-secret-2024
    """
    from ented_cli.web.server import ServeRequest, run_serve

    request = ServeRequest(**options)
    run_serve(request, note=lambda m: note(m, quiet), warn=lambda m: warn(m, quiet))
