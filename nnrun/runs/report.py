"""What a person reads: the Keras-style summary table, per-epoch progress lines and
what `nnrun evaluate` prints (model diagrams are in `nnrun.runs.diagram`).

Tables are rendered with rich; on a terminal training shows a progress bar,
elsewhere one plain line per epoch.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any, TextIO

from nnrun.nn.model import Model, format_shape

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

# rich is imported where it is used: the per-epoch reporter of a training whose output
# is not a terminal prints plain lines without it, so rich's import (about 60-75 ms)
# moves to summary.txt's table, written while the epoch program compiles (issue 21)


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
    from rich import box
    from rich.table import Table

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
        layer = model.layer(info.name)
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
        layer = inner.layer(info.name)
        if getattr(layer, "nested", False):
            _nested_rows(table, layer.model_for_summary(), graph, depth + 1)


def summary_text(model: Model, name: str, width: int = 100, expand_nested: bool = False
                 ) -> str:
    """The summary as plain text (for summary.txt and non-terminal output)."""
    from rich.console import Console

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
        self.progress = None
        if not quiet and _may_be_terminal(stream, force_terminal):
            from nnrun.runs.progress import start_bar

            bar = start_bar(stream, force_terminal, epochs)
            if bar is not None:
                self.progress, self.task = bar

    def epoch_end(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        if self.quiet:
            return
        line = f"Epoch {epoch}/{self.epochs} - {seconds:.3f}s - {format_logs(logs)}"
        if self.progress is not None:  # the epoch's line above a bar of the whole run
            self.progress.console.print(line, highlight=False, soft_wrap=True)
            self.progress.update(self.task, completed=epoch)
        else:
            print(line, file=self.stream, flush=True)

    def close(self, outcome: str = "completed", epoch: int | None = None) -> None:
        """Stop the bar where training stopped (`epoch` completed), the time left
        replaced by how it ended (api.training.TrainResult.outcome)."""
        if self.progress is not None:
            if epoch is not None:
                self.progress.update(self.task, completed=epoch)
            self.progress.update(self.task, end=ENDINGS.get(outcome, outcome))
            self.progress.stop_task(self.task)
            self.progress.stop()
            self.progress = None


ENDINGS = {"completed": "done", "stopped_early": "stopped early"}


def _may_be_terminal(stream: TextIO, force_terminal: bool | None) -> bool:
    """False wherever rich's Console would find `stream` no terminal, decided without
    importing rich: no FORCE_COLOR or TTY_COMPATIBLE in the environment (rich then
    decides) and a stream that is not a tty (rich's last test). True: ask rich
    (progress.start_bar)."""
    if force_terminal is not None:
        return force_terminal
    if "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ:
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:   # a closed stream, as rich treats it
        return False


def metrics_table(values: dict[str, Any], title: str | None = None) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAVY)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in values.items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    return table


def classification_tables(report: dict[str, Any]) -> list[Table | Text]:
    """A classifier's per-class precision/recall/F1 (with macro and weighted averages)
    and its confusion matrix (rows: true class, columns: predicted), that note a line
    of its own after it (a table's caption wraps at the table's width)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    scores = Table(title="per class", box=box.SIMPLE_HEAVY)
    for column in ("class", "precision", "recall", "f1", "support"):
        scores.add_column(column, justify="left" if column == "class" else "right")
    for row in report["per_class"]:
        scores.add_row(row["class"], *(f"{row[k]:.4f}" for k in ("precision", "recall", "f1")),
                       str(row["support"]))
    total = sum(row["support"] for row in report["per_class"])
    for name, avg in report["averages"].items():
        scores.add_row(f"{name} avg", *(f"{avg[k]:.4f}" for k in ("precision", "recall", "f1")),
                       str(total), style="dim" if name == "weighted" else None)
    matrix = Table(title="confusion matrix", box=box.SIMPLE_HEAVY)
    matrix.add_column("true \\ pred")
    for label in report["classes"]:
        matrix.add_column(label, justify="right")
    for label, counts in zip(report["classes"], report["confusion_matrix"]):
        matrix.add_row(label, *(str(c) for c in counts))
    return [scores, matrix, Text("rows: true class, columns: predicted class", style="dim")]


def data_line(result: dict[str, Any], width: int) -> Text:
    """`nnrun evaluate`'s first line: which data, as `test data: PATH`, a path too long
    for `width` cut to its last parts ("…/own/fruit_test.csv"), never broken inside."""
    from rich.text import Text

    from nnrun.runs.charts import shorten_path

    head = f"{result['data']} data: "
    source = shorten_path(str(result["source"]), max(width - len(head) - 1, 12))
    return Text(head, style="bold") + Text(source)
