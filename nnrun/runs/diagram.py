"""Model diagrams (`nnrun plot`, the founding notes' `plot(model, to_file=...)`): a box
per input and layer with its name and type, activation, parameter count and shapes,
arrows for connections; drawn with matplotlib (no graphviz binary needed), or written
as Graphviz `.dot` text. A long model wraps into bands side by side, so the picture
stays within MAX_FLOW along its flow."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.nn.model import Model, format_shape

FORMATS = (".png", ".svg", ".pdf", ".dot")


@dataclass
class Node:
    name: str
    type: str
    inbound: tuple[str, ...]
    input_shapes: list[tuple]
    output_shape: tuple
    activation: str | None = None
    params: tuple[int, int] = (0, 0)   # trainable, non-trainable

    def label(self, show_shapes: bool) -> list[str]:
        lines = [f"{self.name}: {self.type}"]
        about = [f"activation: {self.activation}"] if self.activation else []
        trainable, fixed = self.params
        if trainable + fixed:
            about.append(f"{trainable + fixed:,} params"
                         + (f" ({fixed:,} non-trainable)" if fixed else ""))
        if about:
            lines.append(" · ".join(about))
        if show_shapes:
            if self.input_shapes:
                shown = ", ".join(format_shape(s) for s in self.input_shapes)
                lines.append(f"input: {shown}")
            lines.append(f"output: {format_shape(self.output_shape)}")
        return lines


def activation_name(value: Any) -> str | None:
    """A layer's `activation` argument as shown in a box: its name (a mapping's `name`);
    None for none or linear."""
    if isinstance(value, dict):
        value = value.get("name", value.get("class_name"))
    return None if value in (None, "linear") or not isinstance(value, str) else value


def graph_nodes(model: Model) -> list[Node]:
    """The model's inputs and layers as diagram nodes, inputs first, then layers in
    definition order, each with the names it takes, its activation and parameters."""
    shapes = dict(model.input_shapes)
    shapes.update({i.name: i.output_shape for i in model.infos})
    counts = model.count_params()
    nodes = [Node(n, "InputLayer", (), [], model.input_shapes[n]) for n in model.input_names]
    for info, refs in zip(model.infos, model.wiring):
        activation = activation_name(model.layer(info.name).args.get("activation"))
        nodes.append(Node(info.name, info.type, tuple(refs), [shapes[r] for r in refs],
                          info.output_shape, activation, counts[info.name]))
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


GAP_FLOW, GAP_SIDE, GAP_BANDS = 0.6, 0.4, 0.8   # inches between boxes and between bands
# The longest a diagram grows along its flow (inches; 1,540 px tall at 110 dpi top to
# bottom): a longer model wraps into bands side by side (rows, left to right).
MAX_FLOW = {"TB": 14.0, "LR": 28.0}


@dataclass
class Layout:
    """Where the boxes go, in inches, along the flow (`along`, from the start) and
    across it (`across`): bands of `per_band` levels each, side by side across."""

    box: tuple[float, float]      # a box's (along, across) size
    per_band: int
    band_span: float              # a band's boxes, across
    offset: float                 # where band 0 starts, across
    size: tuple[float, float]     # the figure's (along, across) size

    def band_start(self, band: int) -> float:
        return self.offset + band * (self.band_span + GAP_BANDS)

    def place(self, level: int, j: int, count: int) -> tuple[float, float]:
        """(along, across) centre of the j-th of `count` nodes of a level."""
        band, row = divmod(level, self.per_band)
        step = self.box[1] + GAP_SIDE
        across = self.band_start(band) + (self.band_span - (count * step - GAP_SIDE)) / 2
        return GAP_FLOW + row * (self.box[0] + GAP_FLOW) + self.box[0] / 2, \
            across + j * step + self.box[1] / 2

    def route(self, source: int, target: int, start: tuple[float, float],
              end: tuple[float, float]) -> list[tuple[float, float]]:
        """The points of an edge from level `source` to level `target`: straight within
        a band; to a later band, out of the source into the gap after it, along the
        gutter after the source's band, into the gap before the target and into it (no
        box is crossed)."""
        (a0, c0), (a1, c1) = start, end
        half = self.box[0] / 2
        band = source // self.per_band
        if band == target // self.per_band:
            return [(a0 + half, c0), (a1 - half, c1)]
        gutter = self.band_start(band) + self.band_span + GAP_BANDS / 2
        out, into = a0 + half + GAP_FLOW / 2, a1 - half - GAP_FLOW / 2
        return [(a0 + half, c0), (out, c0), (out, gutter), (into, gutter), (into, c1),
                (a1 - half, c1)]


def layout(nodes: list[Node], depth: dict[str, int], *, rankdir: str,
           show_shapes: bool) -> Layout:
    """Box sizes from the longest label; as many bands as keep the flow within
    MAX_FLOW, the levels shared evenly between them."""
    labels = [n.label(show_shapes) for n in nodes]
    lines, chars = max(map(len, labels)), max(len(t) for label in labels for t in label)
    w, h = 0.095 * chars + 0.4, 0.28 * lines + 0.25   # inches
    box = (h, w) if rankdir == "TB" else (w, h)
    n_levels = max(depth.values()) + 1
    width = max(Counter(depth.values()).values())
    fits = max(1, int((MAX_FLOW[rankdir] - GAP_FLOW) // (box[0] + GAP_FLOW)))
    bands = math.ceil(n_levels / fits)
    per_band = math.ceil(n_levels / bands)
    band_span = width * (box[1] + GAP_SIDE) - GAP_SIDE
    across = bands * band_span + (bands - 1) * GAP_BANDS + 2 * GAP_SIDE
    along = per_band * (box[0] + GAP_FLOW) + GAP_FLOW
    least = (2.0, 3.0) if rankdir == "TB" else (3.0, 2.0)
    return Layout(box, per_band, band_span, GAP_SIDE + max(least[1] - across, 0) / 2,
                  (max(along, least[0]), max(across, least[1])))


def diagram_figure(nodes: list[Node], *, rankdir: str = "TB", show_shapes: bool = True,
                   title: str | None = None):
    """The diagram as a matplotlib figure (Agg): boxes in levels along the flow, a long
    model wrapped into bands (layout)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    depth = levels(nodes)
    plan = layout(nodes, depth, rankdir=rankdir, show_shapes=show_shapes)
    along_size, across_size = plan.size

    def xy(point: tuple[float, float]) -> tuple[float, float]:
        along, across = point
        return (across, along_size - along) if rankdir == "TB" else \
            (along, across_size - across)

    fig_w, fig_h = (across_size, along_size) if rankdir == "TB" else (along_size, across_size)
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, fig_w)
    ax.set_ylim(0, fig_h)
    ax.axis("off")
    box_w, box_h = (plan.box[1], plan.box[0]) if rankdir == "TB" else plan.box
    by_level: dict[int, list[Node]] = {}
    for node in nodes:
        by_level.setdefault(depth[node.name], []).append(node)
    centre = {node.name: plan.place(level, j, len(row))
              for level, row in by_level.items() for j, node in enumerate(row)}
    for node in nodes:
        x, y = xy(centre[node.name])
        colour = "#fdf1dc" if node.type == "InputLayer" else "#eef3fb"
        ax.add_patch(FancyBboxPatch((x - box_w / 2, y - box_h / 2), box_w, box_h,
                                    boxstyle="round,pad=0.02,rounding_size=0.08",
                                    facecolor=colour, edgecolor="#44546a", linewidth=1.2))
        text = node.label(show_shapes)
        top = y + 0.14 * (len(text) - 1)
        ax.text(x, top, text[0], ha="center", va="center", fontsize=10, fontweight="bold")
        for k, line in enumerate(text[1:], start=1):
            ax.text(x, top - 0.28 * k, line, ha="center", va="center", fontsize=9,
                    family="monospace")
    for node in nodes:
        for ref in node.inbound:
            route = plan.route(depth[ref], depth[node.name], centre[ref], centre[node.name])
            points = [xy(p) for p in route]
            if len(points) > 2:
                ax.plot(*zip(*points[:-1]), color="#44546a", linewidth=1.2)
            ax.annotate("", xy=points[-1], xytext=points[-2],
                        arrowprops={"arrowstyle": "-|>", "color": "#44546a", "lw": 1.2,
                                    "shrinkA": 0 if len(points) > 2 else 2, "shrinkB": 2})
    if title:
        fig.suptitle(title, fontsize=9, y=0.995, va="top", color="#44546a")
    return fig


def draw(nodes: list[Node], path: Path, *, rankdir: str = "TB", show_shapes: bool = True,
         title: str | None = None) -> None:
    """Render the diagram with matplotlib (Agg) to `path` (.png, .svg or .pdf)."""
    import matplotlib.pyplot as plt

    from nnrun.runs.charts import save_figure

    fig = diagram_figure(nodes, rankdir=rankdir, show_shapes=show_shapes, title=title)
    try:
        save_figure(fig, path)
    finally:
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
