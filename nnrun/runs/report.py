"""What a person reads: the Keras-style summary table, per-epoch progress lines, and
model diagrams (`nnrun plot`, the founding notes' `plot(model, to_file=...)`: boxes
with layer name, type and shapes, arrows for connections; drawn with matplotlib, no
graphviz binary needed, or written as Graphviz `.dot` text).

Tables are rendered with rich; on a terminal training shows a progress bar,
elsewhere one plain line per epoch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
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

from nnrun.config.errors import ConfigError
from nnrun.nn.model import Model, format_shape


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


def classification_tables(report: dict[str, Any]) -> list[Table]:
    """A classifier's per-class precision/recall/F1 (with macro and weighted averages)
    and its confusion matrix (rows: true class, columns: predicted)."""
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
    matrix = Table(title="confusion matrix", caption="rows: true class, columns: predicted",
                   box=box.SIMPLE_HEAVY)
    matrix.add_column("true \\ pred")
    for label in report["classes"]:
        matrix.add_column(label, justify="right")
    for label, counts in zip(report["classes"], report["confusion_matrix"]):
        matrix.add_row(label, *(str(c) for c in counts))
    return [scores, matrix]


# ---------------------------------------------------------------- diagrams

FORMATS = (".png", ".svg", ".pdf", ".dot")


@dataclass
class Node:
    name: str
    type: str
    inbound: tuple[str, ...]
    input_shapes: list[tuple]
    output_shape: tuple

    def label(self, show_shapes: bool) -> list[str]:
        lines = [f"{self.name}: {self.type}"]
        if show_shapes:
            if self.input_shapes:
                shown = ", ".join(format_shape(s) for s in self.input_shapes)
                lines.append(f"input: {shown}")
            lines.append(f"output: {format_shape(self.output_shape)}")
        return lines


def graph_nodes(model: Model) -> list[Node]:
    """The model's inputs and layers as diagram nodes, inputs first, then layers in
    definition order, each with the names it takes."""
    shapes = dict(model.input_shapes)
    shapes.update({i.name: i.output_shape for i in model.infos})
    nodes = [Node(n, "InputLayer", (), [], model.input_shapes[n]) for n in model.input_names]
    for info, refs in zip(model.infos, model.wiring):
        nodes.append(Node(info.name, info.type, tuple(refs), [shapes[r] for r in refs],
                          info.output_shape))
    return nodes


def levels(nodes: list[Node]) -> dict[str, int]:
    """Each node's depth: 0 for inputs, else one more than its deepest input."""
    depth: dict[str, int] = {}
    pending = list(nodes)
    while pending:
        for node in list(pending):
            if all(r in depth for r in node.inbound):
                depth[node.name] = 1 + max((depth[r] for r in node.inbound), default=-1)
                pending.remove(node)
    return depth


def to_dot(nodes: list[Node], *, rankdir: str = "TB", show_shapes: bool = True,
           name: str = "model") -> str:
    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {quote(name)} {{", f"  rankdir={rankdir};",
             '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", '
             'fontname="Helvetica"];']
    for node in nodes:
        label = "\\n".join(node.label(show_shapes)).replace('"', '\\"')
        lines.append(f'  {quote(node.name)} [label="{label}"];')
    for node in nodes:
        for ref in node.inbound:
            lines.append(f"  {quote(ref)} -> {quote(node.name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw(nodes: list[Node], path: Path, *, rankdir: str = "TB", show_shapes: bool = True,
         title: str | None = None) -> None:
    """Render the diagram with matplotlib (Agg) to `path` (.png, .svg or .pdf)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    from nnrun.runs.charts import save_figure

    depth = levels(nodes)
    by_level: dict[int, list[Node]] = {}
    for node in nodes:
        by_level.setdefault(depth[node.name], []).append(node)
    n_levels, width = max(by_level) + 1, max(len(v) for v in by_level.values())
    lines = max(len(n.label(show_shapes)) for n in nodes)
    chars = max(len(line) for n in nodes for line in n.label(show_shapes))
    box_w, box_h = 0.095 * chars + 0.4, 0.28 * lines + 0.25   # inches
    gap_main, gap_side = 0.6, 0.4
    if rankdir == "TB":
        fig_w = width * (box_w + gap_side) + gap_side
        fig_h = n_levels * (box_h + gap_main) + gap_main
    else:
        fig_w = n_levels * (box_w + gap_main) + gap_main
        fig_h = width * (box_h + gap_side) + gap_side
    fig = plt.figure(figsize=(max(fig_w, 3), max(fig_h, 2)))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, max(fig_w, 3))
    ax.set_ylim(0, max(fig_h, 2))
    ax.axis("off")
    centre: dict[str, tuple[float, float]] = {}
    for level, row in by_level.items():
        for j, node in enumerate(row):
            if rankdir == "TB":
                span = len(row) * (box_w + gap_side) - gap_side
                x = (max(fig_w, 3) - span) / 2 + j * (box_w + gap_side) + box_w / 2
                y = max(fig_h, 2) - gap_main - level * (box_h + gap_main) - box_h / 2
            else:
                span = len(row) * (box_h + gap_side) - gap_side
                x = gap_main + level * (box_w + gap_main) + box_w / 2
                y = max(fig_h, 2) - (max(fig_h, 2) - span) / 2 - j * (box_h + gap_side) \
                    - box_h / 2
            centre[node.name] = (x, y)
            colour = "#fdf1dc" if node.type == "InputLayer" else "#eef3fb"
            ax.add_patch(FancyBboxPatch((x - box_w / 2, y - box_h / 2), box_w, box_h,
                                        boxstyle="round,pad=0.02,rounding_size=0.08",
                                        facecolor=colour, edgecolor="#44546a", linewidth=1.2))
            text = node.label(show_shapes)
            ax.text(x, y + (0.14 if len(text) > 1 else 0) * (len(text) - 1), text[0],
                    ha="center", va="center", fontsize=10, fontweight="bold")
            for k, line in enumerate(text[1:], start=1):
                ax.text(x, y + 0.14 * (len(text) - 1) - 0.28 * k, line, ha="center",
                        va="center", fontsize=9, family="monospace")
    for node in nodes:
        for ref in node.inbound:
            (x0, y0), (x1, y1) = centre[ref], centre[node.name]
            if rankdir == "TB":
                start, end = (x0, y0 - box_h / 2), (x1, y1 + box_h / 2)
            else:
                start, end = (x0 + box_w / 2, y0), (x1 - box_w / 2, y1)
            ax.annotate("", xy=end, xytext=start,
                        arrowprops={"arrowstyle": "-|>", "color": "#44546a", "lw": 1.2,
                                    "shrinkA": 2, "shrinkB": 2})
    if title:
        fig.suptitle(title, fontsize=9, y=0.995, va="top", color="#44546a")
    save_figure(fig, path)
    plt.close(fig)


def plot_model(model: Model, output: Path, *, rankdir: str = "TB", show_shapes: bool = True,
               name: str = "model") -> Path:
    """Write the diagram of `model` to `output`; the format is the file's extension."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"unsupported diagram format {suffix or '(none)'!r}; use one of "
                          f"{', '.join(FORMATS)}", where=str(output))
    if rankdir not in ("TB", "LR"):
        raise ConfigError(f"expected TB or LR, got {rankdir!r}", where="--rankdir")
    nodes = graph_nodes(model)
    if suffix == ".dot":
        from nnrun.runs.rundir import write_atomic

        write_atomic(output, to_dot(nodes, rankdir=rankdir, show_shapes=show_shapes,
                                    name=name))
    else:
        draw(nodes, output, rankdir=rankdir, show_shapes=show_shapes)
    return output
