"""Model diagrams (`nnrun plot`, the founding notes' `plot(model, to_file=...)`): boxes
with layer name, type and shapes, arrows for connections. Drawn with matplotlib (no
graphviz binary needed); `.dot` writes Graphviz text for those who have it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nnrun.errors import ConfigError
from nnrun.model import Model, format_shape

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
    fig.savefig(path, dpi=110)
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
        from nnrun.rundir import write_atomic

        write_atomic(output, to_dot(nodes, rankdir=rankdir, show_shapes=show_shapes,
                                    name=name))
    else:
        draw(nodes, output, rankdir=rankdir, show_shapes=show_shapes)
    return output
