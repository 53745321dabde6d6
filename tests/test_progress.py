"""The progress bar: shown on a terminal, never in pipes and logs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import EXAMPLES

pytestmark = pytest.mark.slow

pty = pytest.importorskip("pty")  # POSIX only

# The installed command, run by this interpreter (the venv need not be on PATH).
ENTED = [sys.executable, "-m", "ented_cli"]


def two_photos(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("astronaut_degraded.jpg", "grace_hopper.jpg"):
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


def run_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run `ented` with stdout and stderr on a pseudo-terminal; return (exit code, what it shows)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*ENTED, *args],
        stdout=slave,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.wait(timeout=300), shown.decode("utf-8", "replace")


def test_a_batch_on_a_terminal_shows_a_progress_bar(tmp_path):
    code, shown = run_on_a_terminal(
        ["restore", str(two_photos(tmp_path)), "-o", str(tmp_path / "out")]
    )
    assert code == 0, shown
    assert "restoring" in shown and "2/2" in shown
    assert "images/s" in shown  # the rate, also of a whole cluster (--cluster)


def test_a_batch_in_a_pipe_or_with_quiet_shows_no_bar(tmp_path):
    folder = two_photos(tmp_path)
    piped = subprocess.run(
        [*ENTED, "restore", str(folder), "-o", str(tmp_path / "piped")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert "restoring" not in piped.stderr and "2/2" not in piped.stderr
    code, shown = run_on_a_terminal(["restore", str(folder), "-q", "-o", str(tmp_path / "quiet")])
    assert code == 0 and "2/2" not in shown
