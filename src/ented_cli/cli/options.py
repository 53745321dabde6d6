"""Options that several commands share (`restore`, `eval`, `bench`, `explain`), each declared
once here as a decorator; `model_options` stacks the four that pick and run the network.

Imports only click (and the pure-Python ented_cli.paths, errors, model.threads and
video.settings), so `ented --help` stays free of torch.
Shared options carry a `section`: `Command` lists them under that heading in --help, after the
command's own options."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import ClassVar

import click

from ented_cli.errors import UsageError
from ented_cli.model.threads import parse_threads
from ented_cli.paths import DEFAULT_MAX_PIXELS
from ented_cli.video.settings import (
    CODECS,
    DEFAULT_CRF,
    DEFAULT_DETECT_EVERY,
    DEFAULT_PRESET,
    PRESETS,
)

EXIT_CODES_HELP = """\b
Exit codes: 0 every input restored or copied; 1 failure (nothing done);
2 usage error (also a missing or unusable --ref); 3 some inputs failed (the others were written);
130 interrupted (Ctrl-C; finished outputs are kept)."""

MODEL = "Model options"
REPORTING = "Reporting options"
VIDEO = "Video options"

# Tracebacks go to this logger at DEBUG level; `-v` shows them, by default they stay hidden.
log = logging.getLogger("ented")


class Option(click.Option):
    """A click option that names the --help section it is listed under (None: "Options")."""

    def __init__(self, *args, section: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.section = section


class Command(click.Command):
    """A command whose --help lists its own options first, then each section of shared ones."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and isinstance(param, click.Option):
                section = getattr(param, "section", None) or "Options"
                sections.setdefault(section, []).append(record)
        for name, records in sections.items():
            if records:
                with formatter.section(name):
                    formatter.write_dl(records)


class PixelCount(click.ParamType):
    """A pixel count: 108000000, 108M, 1.5G, 500K; 0 means no limit."""

    name = "PIXELS"
    _UNITS: ClassVar[dict[str, float]] = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("P")  # "100MP" reads as 100M
        unit = text[-1:] if text[-1:] in self._UNITS else ""
        try:
            count = float(text[: len(text) - len(unit)]) * self._UNITS[unit]
        except ValueError:
            self.fail(f"{value!r} is not a pixel count (e.g. 100M, 250000000, 0 for no limit)")
        if count < 0:
            self.fail(f"{value!r}: a pixel count cannot be negative")
        return int(count)


class ThreadCount(click.ParamType):
    """A thread count of 1 or more, or "auto" (None)."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        try:
            return parse_threads(value, "")
        except UsageError:
            self.fail(f"{value!r}: use a whole number of threads (1 or more), or auto")


class TimeOffset(click.ParamType):
    """A time in a video: seconds (90, 12.5) or [HH:]MM:SS[.s] (1:30, 01:02:03.5)."""

    name = "TIME"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        try:
            seconds = 0.0
            for part in str(value).strip().split(":"):
                seconds = seconds * 60 + float(part)
        except ValueError:
            self.fail(f"{value!r} is not a time; use seconds (90) or [HH:]MM:SS (1:30)")
        if seconds < 0:
            self.fail(f"{value!r}: a time cannot be negative")
        return seconds


def _show_tracebacks(ctx: click.Context, param: click.Parameter, verbose: bool) -> bool:
    """The -v callback: route the `ented` logger's tracebacks to stderr."""
    if verbose and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ented: debug: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
    return verbose


def _option(*decls: str, section: str | None = None, **attrs):
    return click.option(*decls, cls=Option, section=section, **attrs)


def _stack(*decorators):
    """One decorator applying several; their options appear in --help in the order given."""

    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


# ----------------------------------------------------------------------------------------- model
weights_option = _option(
    "--weights",
    metavar="PATH|NAME|hf://",
    envvar="ENTED_WEIGHTS",
    section=MODEL,
    help="Weight set to use (env ENTED_WEIGHTS).  [default: bundled ented-256-preview]",
)
download_option = _option(
    "--download",
    is_flag=True,
    section=MODEL,
    help="Allow fetching hf:// weights from the network (offline otherwise).",
)
device_option = _option(
    "--device",
    default="auto",
    show_default=True,
    section=MODEL,
    help="auto, cpu, cuda, cuda:N or mps.",
)
dtype_option = _option(
    "--dtype",
    type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
    default="auto",
    show_default=True,
    section=MODEL,
    help="Compute precision (auto: float32 on CPU, float16 on GPU).",
)
batch_size_option = _option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    section=MODEL,
    help="Faces per generator run.  [default: 1 on CPU, 16 on GPU]",
)
threads_option = _option(
    "--threads",
    type=ThreadCount(),
    default="auto",
    show_default=True,
    envvar="ENTED_THREADS",
    section=MODEL,
    help="CPU threads for the network on --device cpu (env ENTED_THREADS). auto: the cores "
    "other processes leave free (OMP_NUM_THREADS if set).",
)
backend_option = _option(
    "--backend",
    # (the names of model/onnx_engine.py's BACKENDS: that module imports torch, --help must not)
    type=click.Choice(["torch", "onnxruntime", "auto"]),
    default="torch",
    show_default=True,
    envvar="ENTED_BACKEND",
    section=MODEL,
    help="What runs the generator (env ENTED_BACKEND). onnxruntime: about 1.5x faster on a CPU, "
    'the same faces to one 8-bit level; needs pip install "ented[onnx]". auto: onnxruntime '
    "where it can run.",
)
model_options = _stack(weights_option, download_option, device_option, dtype_option)

# ------------------------------------------------------------------------------------- restoring
fidelity_option = _option(
    "-w",
    "--fidelity",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="0: lean on the reference and the learned face prior; 1: stay closest to the input photo.",
)
refs_option = _option(
    "-r",
    "--ref",
    "refs",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Reference photo of the person (repeatable).",
)
max_pixels_option = _option(
    "--max-pixels",
    type=PixelCount(),
    default=DEFAULT_MAX_PIXELS,
    envvar="ENTED_MAX_PIXELS",
    help="Refuse images larger than this (checked before decoding; 0 = no limit; env "
    "ENTED_MAX_PIXELS). Restoring needs at most about 35 bytes of memory per pixel.  "
    f"[default: {DEFAULT_MAX_PIXELS // 10**6}M]",
)

# ----------------------------------------------------------------------------------------- video
video_options = _stack(
    _option(
        "--codec",
        type=click.Choice(CODECS),
        default="auto",
        show_default=True,
        section=VIDEO,
        help="Video codec of restored videos; auto: VP9 for .webm, H.264 otherwise.",
    ),
    _option(
        "--crf",
        type=click.IntRange(0, 63),
        default=None,
        section=VIDEO,
        help="Constant quality, lower is better and bigger.  [default: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_CRF.items())
        + "]",
    ),
    _option(
        "--preset",
        type=click.Choice(PRESETS),
        default=DEFAULT_PRESET,
        show_default=True,
        section=VIDEO,
        help="Encoder speed: slower presets make smaller files of the same quality.",
    ),
    _option(
        "--detect-every",
        type=click.IntRange(min=1),
        default=DEFAULT_DETECT_EVERY,
        show_default=True,
        metavar="N",
        section=VIDEO,
        help="Look for faces every N frames and follow them by optical flow in between.",
    ),
    _option(
        "--start",
        type=TimeOffset(),
        default=None,
        section=VIDEO,
        help="Restore the part of each video from this time (seconds or [HH:]MM:SS); the "
        "output is that part.",
    ),
    _option(
        "--end",
        type=TimeOffset(),
        default=None,
        section=VIDEO,
        help="Restore the part up to this time (seconds or [HH:]MM:SS).",
    ),
    _option(
        "--steady/--no-steady",
        default=True,
        show_default=True,
        section=VIDEO,
        help="Blend each restored face with its previous frame where the face is still, so it "
        "does not shimmer.",
    ),
)

# ------------------------------------------------------------------------------------- reporting
json_lines_option = _option(
    "--json",
    "as_json",
    is_flag=True,
    section=REPORTING,
    help="Write one JSON line per input to stdout.",
)
quiet_option = _option(
    "-q",
    "--quiet",
    is_flag=True,
    section=REPORTING,
    help="No progress bar, notes or warnings (errors are still printed).",
)
verbose_option = _option(
    "-v",
    "--verbose",
    is_flag=True,
    callback=_show_tracebacks,
    section=REPORTING,
    help="Show the traceback of internal errors (for bug reports).",
)
