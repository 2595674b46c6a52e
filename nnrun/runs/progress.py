"""The progress bar `nnrun train` shows on a terminal (rich). Imported only where the
output may be a terminal (report.EpochReporter): piped output gets plain lines, and
the per-epoch reporter then needs no rich (issue 21: about 60 ms of the path to the
first epoch)."""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class EtaOrEnd(TimeRemainingColumn):
    """`eta 0:00:02` while training runs; how it ended once it has."""

    def render(self, task) -> Text:
        end = task.fields.get("end")
        if end:
            return Text(end, style="progress.remaining")
        return Text.assemble("eta ", super().render(task))


def start_bar(stream: TextIO, force_terminal: bool | None,
              epochs: int) -> tuple[Progress, TaskID] | None:
    """A started bar of `epochs` on `stream` and its task, or None where rich finds the
    stream no terminal."""
    console = Console(file=stream, force_terminal=force_terminal)
    if not console.is_terminal:
        return None
    progress = Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(bar_width=30),
                        TimeElapsedColumn(), EtaOrEnd(), console=console, transient=False)
    task = progress.add_task("train", total=epochs, end=None)
    progress.start()
    return progress, task
