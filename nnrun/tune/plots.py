"""Pictures of a search, written to TUNE_DIR/plots/: the optimization history (each
trial's value and the best so far), the parameter importances, and a parallel-
coordinates plot of the complete trials. Drawn with matplotlib's object API on the Agg
canvas (no pyplot, imported lazily) and saved atomically, as a run's charts are."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnrun.runs.charts import log_scale, save_figure, wrap_title

HISTORY = "history.png"
IMPORTANCES = "importances.png"
PARALLEL = "parallel.png"
NO_IMPORTANCES = "parameter importances need at least 2 complete trials and 2 dimensions"
LABEL_CHARS = 12   # a choice's tick label is cut to this many characters


def draw_plots(tune_dir: Path, rows: list[dict], space: list[dict], metric: str, mode: str,
               importances: dict[str, float] | None) -> list[Path]:
    """history.png, importances.png and parallel.png in tune_dir/plots/ (each written
    whole or not at all); their paths. `rows`: one per trial ({"trial", "state" as
    trials.csv says it: complete, pruned, failed or running, "value", "params"});
    `space`: one per dimension ({"key", "kind", "values"}); `mode`: "min" or "max";
    `importances`: key -> share, None where there are none."""
    folder = Path(tune_dir) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    figures = ((HISTORY, history_figure(rows, metric, mode)),
               (IMPORTANCES, importances_figure(importances, metric)),
               (PARALLEL, parallel_figure(rows, space, metric, mode)))
    paths = []
    for name, fig in figures:
        save_figure(fig, folder / name)
        paths.append(folder / name)
    return paths


def number(value: Any) -> float | None:
    """`value` as a finite float; None for None, NaN, inf or anything not a number."""
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def best_so_far(values: Sequence[Any], mode: str) -> list[float]:
    """The running best of `values` (the lowest for mode "min", the highest for "max"),
    one per value; None and NaN are skipped, and NaN stands before the first number."""
    better = max if mode == "max" else min
    best, out = None, []
    for value in values:
        value = number(value)
        if value is not None:
            best = value if best is None else better(best, value)
        out.append(math.nan if best is None else best)
    return out


def short_names(keys: Sequence[str]) -> list[str]:
    """Each key's last part after the last '.', or as many last parts as it takes to tell
    it apart from the others ("units", or "dense_1.units" beside "dense_2.units")."""
    out = []
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if sum(k == tail or k.endswith("." + tail) for k in keys) == 1:
                break
        out.append(tail)
    return out


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _note(ax, text: str, width: int = 60) -> None:
    ax.text(0.5, 0.5, wrap_title(text, width), transform=ax.transAxes, ha="center",
            va="center", fontsize=11, color="#555555", zorder=6,
            bbox={"facecolor": "white", "edgecolor": "#cccccc", "pad": 6})


# ---------------------------------------------------------------- history


def history_figure(rows: list[dict], metric: str, mode: str):
    """Each trial's value by trial number (complete: dots; pruned: hollow grey; failed:
    an x at the bottom) and the best complete value so far as a step line."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(8.0, 4.6)
    ax = fig.add_subplot()
    by_state: dict[str, list[tuple[int, float | None]]] = {}
    for row in rows:
        by_state.setdefault(row.get("state"), []).append((row["trial"], number(row.get("value"))))
    complete = [(t, v) for t, v in by_state.get("complete", []) if v is not None]
    pruned = [(t, v) for t, v in by_state.get("pruned", []) if v is not None]
    if complete:
        ax.scatter(*zip(*complete), s=28, color="#1f77b4", zorder=3,
                   label=f"complete ({len(by_state['complete'])})")
    if pruned:
        ax.scatter(*zip(*pruned), s=28, facecolors="none", edgecolors="#8c8c8c",
                   linewidths=1.1, zorder=2, label=f"pruned ({len(by_state['pruned'])})")
    failed = [t for t, _ in by_state.get("failed", [])]
    if failed:
        ax.scatter(failed, [0.02] * len(failed), marker="x", s=22, color="#d62728",
                   transform=ax.get_xaxis_transform(), zorder=3, clip_on=False,
                   label=f"failed ({len(failed)})")
    if complete:
        trials, values = zip(*complete)
        best = best_so_far(values, mode)
        last = max(row["trial"] for row in rows)
        ax.plot(list(trials) + [last], best + best[-1:], drawstyle="steps-post",
                color="#2ca02c", linewidth=1.8, zorder=4,
                label=f"best so far ({best[-1]:.4g})")
    values = [v for _, v in complete + pruned]
    if log_scale(values):
        ax.set_yscale("log", nonpositive="mask")
    if failed:                              # room below the values for the x marks
        low, high = ax.get_ylim()
        if ax.get_yscale() == "log":
            ax.set_ylim(low / (high / low) ** 0.06, high)
        else:
            ax.set_ylim(low - 0.06 * (high - low), high)
    if not complete:
        _note(ax, "no complete trials yet" if rows else "no trials yet")
    ax.set_title(f"optimization history: {metric} ({mode}imize)", fontsize=12)
    ax.set_xlabel("trial", fontsize=11)
    ax.set_ylabel(metric, fontsize=11)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9, loc="best")
    return fig


# ---------------------------------------------------------------- importances


def importances_figure(importances: dict[str, float] | None, metric: str):
    """A bar per parameter, the largest on top, its share printed at the bar's end; a
    figure that says why when there are none."""
    items = sorted((importances or {}).items(), key=lambda kv: kv[1])
    fig = _figure(7.0, 1.6 + 0.45 * max(len(items), 2))
    ax = fig.add_subplot()
    ax.set_title(f"parameter importances for {metric}", fontsize=12)
    if not items:
        ax.set_axis_off()
        _note(ax, NO_IMPORTANCES, 80)
        return fig
    names = short_names([k for k, _ in items])
    shares = [number(v) or 0.0 for _, v in items]
    ax.barh(range(len(items)), shares, color="#1f77b4", height=0.6)
    ax.set_yticks(range(len(items)), labels=names, fontsize=10)
    for i, share in enumerate(shares):
        ax.text(share, i, f" {share:.3f}", va="center", ha="left", fontsize=9)
    ax.set_xlim(0, max(max(shares), 1e-9) * 1.18)
    ax.set_xlabel("importance", fontsize=11)
    ax.grid(True, axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


# ---------------------------------------------------------------- parallel coordinates


def _choice_index(choices: Sequence[Any], value: Any) -> int | None:
    for i, choice in enumerate(choices):
        if choice == value and type(choice) is type(value):
            return i
    text = json.dumps(value, sort_keys=True, default=str)
    for i, choice in enumerate(choices):
        if json.dumps(choice, sort_keys=True, default=str) == text or choice == value:
            return i
    return None


def _scale(lo: float, hi: float, value: float, log: bool) -> float:
    if log:
        lo, hi, value = math.log(lo), math.log(hi), math.log(value)
    return 0.5 if hi == lo else min(max((value - lo) / (hi - lo), 0.0), 1.0)


def axis_position(dim: dict, value: Any) -> float | None:
    """`value` on dimension `dim`'s axis, in [0, 1]: a choice at evenly spaced positions
    (its index), a number between the bounds (loguniform: on a log scale); None when it
    has no place there (a missing value, an unknown choice, a non-positive log value)."""
    if dim["kind"] == "choice":
        i = _choice_index(dim["values"], value)
        n = len(dim["values"])
        return None if i is None else (0.5 if n == 1 else i / (n - 1))
    value, lo, hi = number(value), number(dim["values"][0]), number(dim["values"][-1])
    log = dim["kind"] == "loguniform"
    if value is None or lo is None or hi is None or (log and min(value, lo, hi) <= 0):
        return None
    return _scale(lo, hi, value, log)


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else \
        f"{value:.3g}" if isinstance(value, float) else json.dumps(value, default=str)
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"


def axis_ticks(dim: dict) -> list[tuple[float, str]]:
    """(position, label) of an axis's tick labels: each choice (every k-th of many), or
    the bounds and the middle (geometric for loguniform) in real units."""
    values = dim["values"]
    if not values:
        return []
    if dim["kind"] == "choice":
        step = max(1, math.ceil(len(values) / 20))
        return [(axis_position(dim, v), _label(v)) for v in values[::step]]
    lo, hi = float(values[0]), float(values[-1])
    log = dim["kind"] == "loguniform" and lo > 0 and hi > 0
    mid = math.sqrt(lo * hi) if log else (lo + hi) / 2
    return [(p, f"{v:.3g}") for p, v in ((0.0, lo), (0.5, mid), (1.0, hi))
            if hi != lo or p == 0.5]


def _metric_axis(values: list[float], metric: str) -> dict:
    """The metric's axis as a dimension: its bounds are the complete trials' values."""
    lo, hi = min(values), max(values)
    kind = "loguniform" if log_scale(values) else "uniform"
    return {"key": metric, "kind": kind, "values": [lo, hi]}


def parallel_figure(rows: list[dict], space: list[dict], metric: str, mode: str):
    """An axis per dimension and a last one for the metric; each complete trial a line
    through its values, coloured by its value, the best one on top and thicker."""
    import matplotlib
    from matplotlib.collections import LineCollection
    from matplotlib.colors import LogNorm, Normalize

    done = [r for r in rows if r.get("state") == "complete" and number(r.get("value")) is not None]
    axes = [*space, _metric_axis([number(r["value"]) for r in done], metric)] if done else \
        [*space, {"key": metric, "kind": "uniform", "values": []}]
    width = min(max(7.0, 1.7 * len(axes) + 1.5), 26.0)
    fig = _figure(width, 5.2)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_xlim(-0.35, len(axes) - 0.75)
    ax.set_ylim(-0.04, 1.04)
    lines, values = [], []
    for row in done:
        points = [axis_position(d, row["params"].get(d["key"])) for d in space]
        if None not in points:
            value = number(row["value"])
            points.append(axis_position(axes[-1], value))
            lines.append((row, list(enumerate(points)), value))
    _draw_axes(ax, axes, short_names([d["key"] for d in space]) + [metric], width)
    if not lines:
        _note(ax, "no complete trials to draw yet")
        fig.suptitle(f"parallel coordinates: {metric}", fontsize=12)
        return fig
    sign = -1 if mode == "max" else 1
    lines.sort(key=lambda line: -sign * line[2])          # the best last, on top
    values = [line[2] for line in lines]
    norm = (LogNorm if axes[-1]["kind"] == "loguniform" else Normalize)(min(values),
                                                                          max(values))
    cmap = matplotlib.colormaps["viridis" if mode != "max" else "viridis_r"]
    colours = cmap(norm(values))
    ax.add_collection(LineCollection([pts for _, pts, _ in lines[:-1]], colors=colours[:-1],
                                     linewidths=1.2, alpha=0.75, zorder=2))
    best_row, best_pts, best_value = lines[-1]
    ax.plot(*zip(*best_pts), color=colours[-1], linewidth=3.2, zorder=3,
            solid_capstyle="round", label=f"best: trial {best_row['trial']} "
                                          f"({best_value:.4g})")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.01), fontsize=9, frameon=False)
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(mappable, ax=ax, fraction=0.03, pad=0.02).set_label(metric, fontsize=10)
    trials = f"{len(lines)} complete trial" + ("s" if len(lines) != 1 else "")
    fig.suptitle(f"parallel coordinates: {trials}, coloured by {metric} ({mode}imize)",
                 fontsize=12)
    return fig


def _draw_axes(ax, axes: list[dict], titles: list[str], width: float) -> None:
    """The vertical axes with their tick labels and titles (slanted where they would
    run into each other)."""
    spacing = width / (len(axes) + 0.6)                 # inches between two axes
    slant = max(len(t) for t in titles) * 0.085 > 0.9 * spacing
    top = ax.get_xaxis_transform()
    for x, (dim, title) in enumerate(zip(axes, titles)):
        colour = "#222222" if x == len(axes) - 1 else "#555555"
        ax.plot([x, x], [0, 1], color=colour, linewidth=1.2, zorder=1)
        for y, label in axis_ticks(dim):
            ax.plot([x - 0.02, x], [y, y], color=colour, linewidth=1, zorder=1)
            ax.text(x - 0.04, y, label, ha="right", va="center", fontsize=8, color=colour,
                    zorder=5, bbox={"facecolor": "white", "edgecolor": "none",
                                    "alpha": 0.85, "pad": 0.5})
        ax.text(x, 1.02, title, transform=top, fontsize=10, fontweight="bold",
                ha="left" if slant else "center", va="bottom",
                rotation=25 if slant else 0, rotation_mode="anchor")
