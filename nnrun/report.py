"""What a person reads: the Keras-style summary table and per-epoch progress lines.

Tables are rendered with rich; on a terminal training shows a progress bar,
elsewhere one plain line per epoch.
"""

from __future__ import annotations

import io
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from nnrun.model import Model, format_shape


def readable_size(n_bytes: float) -> str:
    """Keras's memory-size format: 84.00 B, 2.61 MB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.2f} GB"


def summary_table(model: Model, name: str, expand_nested: bool = False
                  ) -> tuple[Table, list[str], dict[str, int]]:
    """The Keras 3 summary: a table plus the total/trainable/non-trainable lines. With
    `expand_nested`, a nested model's layers follow its row, indented (as Keras's
    `summary(expand_nested=True)`)."""
    table = Table(box=box.HEAVY_HEAD, show_lines=True)
    table.add_column("Layer (type)", no_wrap=True)
    table.add_column("Output Shape", no_wrap=True)
    table.add_column("Param #", justify="right", no_wrap=True)
    graph = model.spec.is_graph
    if graph:   # Keras 3's functional summary: input rows and a "Connected to" column
        table.add_column("Connected to", no_wrap=True)
        for input_name in model.input_names:
            table.add_row(f"{input_name} (InputLayer)",
                          format_shape(model.input_shapes[input_name]), "0", "-")
    counts = model.count_params()
    for info in model.infos:
        trainable, fixed = counts[info.name]
        row = [f"{info.name} ({info.type})", format_shape(info.output_shape),
               f"{trainable + fixed:,}"]
        if graph:
            row.append(", ".join(f"{ref}[0][0]" for ref in info.inbound))
        table.add_row(*row)
        layer = next(x for x in model.layers if x.name == info.name)
        if expand_nested and getattr(layer, "nested", False):
            _nested_rows(table, layer.model_for_summary(), graph, depth=1)
    trainable = sum(t for t, _ in counts.values())
    fixed = sum(f for _, f in counts.values())
    totals = {"total": trainable + fixed, "trainable": trainable, "non_trainable": fixed}
    lines = [
        f" Total params: {totals['total']:,} ({readable_size(4 * totals['total'])})",
        f" Trainable params: {trainable:,} ({readable_size(4 * trainable)})",
        f" Non-trainable params: {fixed:,} ({readable_size(4 * fixed)})",
    ]
    return table, [f'Model: "{name}"'] + lines, totals


def _nested_rows(table: Table, inner: Model, graph: bool, depth: int) -> None:
    counts = inner.count_params()
    for info in inner.infos:
        row = [f"{'  ' * depth}└ {info.name} ({info.type})", format_shape(info.output_shape),
               f"{sum(counts[info.name]):,}"]
        table.add_row(*row, *([""] if graph else []))
        layer = next(x for x in inner.layers if x.name == info.name)
        if getattr(layer, "nested", False):
            _nested_rows(table, layer.model_for_summary(), graph, depth + 1)


def summary_text(model: Model, name: str, width: int = 100, expand_nested: bool = False
                 ) -> str:
    """The summary as plain text (for summary.txt and non-terminal output)."""
    table, lines, _ = summary_table(model, name, expand_nested)
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None)
    console.print(lines[0])
    console.print(table)
    for line in lines[1:]:
        console.print(line, highlight=False)
    return buf.getvalue()


def format_logs(logs: dict[str, float]) -> str:
    """`loss: 0.1234 - accuracy: 0.9500 - val_loss: ...` as Keras prints."""
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


class EpochReporter:
    """Per-epoch output: a rich progress bar on a terminal, plain lines otherwise."""

    def __init__(self, epochs: int, stream: TextIO, *, quiet: bool = False,
                 force_terminal: bool | None = None):
        self.epochs, self.stream, self.quiet = epochs, stream, quiet
        self.console = Console(file=stream, force_terminal=force_terminal)
        self.progress: Progress | None = None
        if not quiet and self.console.is_terminal:
            self.progress = Progress(TextColumn("epoch"), MofNCompleteColumn(),
                                     BarColumn(bar_width=30), TimeElapsedColumn(),
                                     TextColumn("eta"), TimeRemainingColumn(),
                                     console=self.console, transient=False)
            self.task = self.progress.add_task("train", total=epochs)
            self.progress.start()

    def epoch_end(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        if self.quiet:
            return
        line = f"Epoch {epoch}/{self.epochs} - {seconds:.3f}s - {format_logs(logs)}"
        if self.progress is not None:  # the epoch's line above a bar of the whole run
            self.progress.console.print(line, highlight=False, soft_wrap=True)
            self.progress.update(self.task, completed=epoch)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def metrics_table(values: dict[str, Any], title: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAVY)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in values.items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    return table
