"""A progress bar for batches, on stderr and only when stderr is a terminal (scripts and logs
get clean output)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def rate_column(unit: str):
    """A rich column with the bar's speed: "0.42 images/s" (rich measures it over the last 30 s)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.2f} {unit}/s" if task.speed else f"... {unit}/s")

    return Rate()


class ProgressBar:
    """`with ProgressBar("restoring", n, quiet) as step: ... step(name)` advances it by one."""

    def __init__(self, what: str, total: int, quiet: bool, unit: str | None = None):
        self.enabled = total > 1 and not quiet and sys.stderr.isatty()
        self.what, self.total = what, total
        self.unit = unit  # e.g. "images": also show the rate (a cluster's, all workers together)

    def __enter__(self) -> Callable[[str], None]:
        if not self.enabled:
            return lambda name: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        rate = [rate_column(self.unit)] if self.unit else []
        self.bar = Progress(
            TextColumn(self.what),
            BarColumn(),
            MofNCompleteColumn(),
            *rate,
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True),
        )
        self.bar.__enter__()
        task = self.bar.add_task("", total=self.total)
        return lambda name: self.bar.update(task, advance=1, description=name)

    def __exit__(self, *exc) -> bool:
        if self.enabled:
            self.bar.__exit__(*exc)
        return False


class FramesBar:
    """`with FramesBar("clip.mp4", quiet) as step: ... step(done, total)`: a video's frames, with
    frames/s and the time left (total 0: not known, the bar just counts)."""

    def __init__(self, name: str, quiet: bool):
        self.enabled = not quiet and sys.stderr.isatty()
        self.name = name

    def __enter__(self) -> Callable[[int, int], None]:
        if not self.enabled:
            return lambda done, total: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task) -> Text:
                return Text(f"{task.speed:5.1f} frames/s" if task.speed else "  ... frames/s")

        self.bar = Progress(
            TextColumn(self.name),
            BarColumn(),
            MofNCompleteColumn(),
            Rate(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.bar.__enter__()
        task = self.bar.add_task("", total=None)

        def step(done: int, total: int) -> None:
            self.bar.update(task, completed=done, total=max(total, done) if total else None)

        return step

    def __exit__(self, *exc) -> bool:
        if self.enabled:
            self.bar.__exit__(*exc)
        return False
