"""How every command talks on stderr: `ented: error: ...`, `ented: warning: ...`, one line each.

Control characters (a newline in a file name) and undecodable bytes (a Latin-1 name on a UTF-8
system) are escaped, so every message stays one printable line that still names the file.
"""

from __future__ import annotations

import click

_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(32), 127)}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_ESCAPES.update({c: f"\\x{c - 0xDC00:02x}" for c in range(0xDC80, 0xDD00)})


def one_line(message: str) -> str:
    return message.translate(_ESCAPES)


def error(message: str) -> None:
    click.echo(f"ented: error: {one_line(message)}", err=True)


def warn(message: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(f"ented: warning: {one_line(message)}", err=True)


def note(message: str, quiet: bool = False) -> None:
    if not quiet:
        click.echo(f"ented: {one_line(message)}", err=True)
