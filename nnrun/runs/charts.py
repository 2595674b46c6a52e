"""Pictures of a run: learning curves (from metrics.csv) and a classifier's confusion
matrix, drawn with matplotlib's Agg backend (imported lazily: `--help` and `check`
stay fast). Written to the run directory's plots/ folder."""

from __future__ import annotations

import csv
import json
import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nnrun.config.errors import ConfigError
from nnrun.config.files import atomic_write

CURVES = "learning_curves.png"
DPI = 110
CONFUSION = "confusion_matrix.png"


def new_figure(figsize: tuple[float, float]):
    """A matplotlib Figure on an Agg canvas, without pyplot: no global figure manager
    to close, and about 0.5 s less to import (pyplot loads every backend's machinery)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Path) -> None:
    """`fig` into `path` (its format from the suffix) whole or not at all, as every run
    file: a kill while drawing leaves the previous picture, never half a PNG."""
    path = Path(path)
    with atomic_write(path, f"write {path.name}") as tmp:
        fig.savefig(tmp, dpi=DPI, format=path.suffix.lstrip(".").lower() or "png")


def save_bytes(data: bytes, path: Path) -> None:
    """A picture already rendered (save_figure's bytes) into `path`, as save_figure."""
    path = Path(path)
    with atomic_write(path, f"write {path.name}") as tmp, open(tmp, "wb") as f:
        f.write(data)


def rendered(fig, fmt: str = "png") -> bytes:
    """`fig` as the bytes save_figure writes."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format=fmt)
    return buffer.getvalue()


def read_metrics(path: Path) -> dict[str, list[float]]:
    """metrics.csv as columns of floats (an empty cell, or "nan", is NaN)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ConfigError(f"cannot read metrics: {exc.strerror}", where=str(path)) from None
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                number = float(value) if value not in ("", None) else math.nan
            except ValueError:
                number = math.nan
            columns.setdefault(key, []).append(number)
    return columns


def curve_quantities(columns: dict[str, list[float]]) -> list[str]:
    """The quantities to draw, one panel each: loss first, then each metric (a `val_`
    column is drawn in its quantity's panel; `epoch` and `lr` are not drawn)."""
    names = [k for k in columns if k not in ("epoch", "lr") and not k.startswith("val_")]
    names += [k[4:] for k in columns if k.startswith("val_") and k[4:] not in names]
    return sorted(names, key=lambda k: (k != "loss", not k.endswith("loss")))


# ---------------------------------------------------------------- learning curves

LOG_SPAN = 30.0   # values spanning more than ~1.5 decades are drawn on a log axis


@dataclass(frozen=True)
class Mark:
    """A vertical line across every panel at `epoch` (the best epoch, an early stop)."""

    epoch: int
    label: str
    colour: str
    dashes: tuple[float, float]


def log_scale(values: Iterable[float]) -> bool:
    """Whether a panel's values want a log axis: all finite ones positive and the largest
    more than LOG_SPAN times the smallest (NaN and inf are left out; a zero or a negative
    value keeps the axis linear)."""
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > LOG_SPAN


def read_run_info(run: Path) -> dict:
    """run.json as a dict; {} when it is missing or unreadable (a picture never fails on
    it)."""
    try:
        info = json.loads((Path(run) / "run.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def best_epoch(run: Path, info: dict, columns: dict[str, list[float]]
               ) -> tuple[int, str, float | None] | None:
    """(epoch, monitor, value) of checkpoints/best.h5: run.json's `best`, else best.h5's
    attributes, else the lowest val_loss (else loss) in metrics.csv; None if none."""
    best = info.get("best")
    if isinstance(best, dict) and isinstance(best.get("epoch"), int):
        return best["epoch"], str(best.get("monitor") or "val_loss"), best.get("value")
    from nnrun.runs.rundir import best_record

    record = best_record(Path(run) / "checkpoints" / "best.h5")
    if record is not None:
        return record["epoch"], record["monitor"] or "val_loss", record["value"]
    monitor = "val_loss" if "val_loss" in columns else "loss"
    pairs = [(v, e) for v, e in zip(columns.get(monitor, []), columns.get("epoch", []))
             if math.isfinite(v)]
    return (int(min(pairs)[1]), monitor, min(pairs)[0]) if pairs else None


def stop_epoch(info: dict, last_epoch: int) -> tuple[int, str] | None:
    """(epoch, what) when training ended before fit.epochs: an EarlyStopping stop, an
    interrupt, a divergence or a failure (run.json's status and stop_reason); None for a
    run that completed, or is still running."""
    reason, status = str(info.get("stop_reason") or ""), info.get("status")
    if "EarlyStopping" in reason:
        what = "early stop"
    elif status in ("interrupted", "diverged", "failed"):
        what = status
    else:
        return None
    found = re.findall(r"(?:after|at|during) epoch (\d+)", reason)   # the last one: an
    # EarlyStopping reason names its best epoch first, "(after epoch N)" at the end
    epoch = int(found[-1]) if found else info.get("epochs_completed") or last_epoch
    return (min(int(epoch), last_epoch), what) if epoch else None


def curve_marks(run: Path, columns: dict[str, list[float]]) -> list[Mark]:
    """The best epoch (best.h5's) and, when training ended early, the stop epoch."""
    info = read_run_info(run)
    last = int(max((e for e in columns.get("epoch", []) if math.isfinite(e)), default=0))
    marks = []
    best = best_epoch(run, info, columns)
    if best is not None:
        epoch, monitor, value = best
        shown = f", {monitor} {value:.4g}" if isinstance(value, (int, float)) else ""
        marks.append(Mark(epoch, f"best: epoch {epoch}{shown}", "#2ca02c", (5, 3)))
    stop = stop_epoch(info, last)
    if stop is not None:
        epoch, what = stop
        marks.append(Mark(epoch, f"{what}: epoch {epoch}", "#7f7f7f", (2, 2)))
    return marks


def curves_figure(columns: dict[str, list[float]], title: str, marks: Sequence[Mark] = ()):
    """The learning curves as a matplotlib figure: a panel per quantity (train and
    validation), on a log axis where the values span more than two decades, with a
    dashed vertical line per mark."""
    from matplotlib.ticker import MaxNLocator

    epochs = columns["epoch"]
    quantities = curve_quantities(columns)
    cols = min(len(quantities), 3)
    nrows = math.ceil(len(quantities) / cols)
    fig = new_figure((5.2 * cols, 3.8 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    marker = "o" if len(epochs) <= 30 else None
    for ax, name in zip(axes.flat, quantities):
        keys = [k for k in (name, f"val_{name}") if k in columns]
        for key, label, colour in ((name, "train", "#1f77b4"),
                                   (f"val_{name}", "validation", "#d62728")):
            if key in columns:
                ax.plot(epochs, columns[key], label=label, color=colour, linewidth=1.8,
                        marker=marker, markersize=3)
        log = log_scale(v for k in keys for v in columns[k])
        if log:
            ax.set_yscale("log", nonpositive="mask")
        for mark in marks:
            ax.axvline(mark.epoch, color=mark.colour, linestyle=(0, mark.dashes),
                       linewidth=1.3, label=mark.label)
        ax.set_title(name, fontsize=12)
        ax.set_xlabel("epoch", fontsize=11)
        ax.set_ylabel(f"{name} (log scale)" if log else name, fontsize=11)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        ax.grid(True, alpha=0.3, which="major")
        ax.legend(fontsize=9)
        ax.tick_params(labelsize=10)
        if len(epochs) == 1:
            ax.set_xlim(0.5, 1.5)
    for ax in list(axes.flat)[len(quantities):]:
        ax.axis("off")
    fig.suptitle(wrap_title(title, int(5.2 * cols * 8)), fontsize=13)
    fig.tight_layout()
    return fig


def plot_learning_curves(run: Path, output: Path | None = None) -> Path:
    """Draw loss and each metric per epoch (train and validation) from the run's
    metrics.csv into `output` (default RUN/plots/learning_curves.png), with the best
    epoch and an early stop marked (curve_marks)."""
    run = Path(run)
    output = Path(output) if output is not None else run / "plots" / CURVES
    fig = curves_figure_of(run)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, output)
    return output


def curves_figure_of(run: Path):
    """The learning-curves figure of a run (a ConfigError before its first epoch)."""
    columns = read_metrics(run / "metrics.csv")
    if not columns.get("epoch"):
        raise ConfigError("no epochs in metrics.csv yet: nothing to draw",
                          where=str(run / "metrics.csv"))
    return curves_figure(columns, f"{run.name}: learning curves", curve_marks(run, columns))


# ---------------------------------------------------------------- titles


def shorten_path(text: str, width: int) -> str:
    """`text` when it fits in `width` characters, else a path's last parts that fit
    after "…/" (a last part alone too long keeps its end: "…name.csv")."""
    if len(text) <= width:
        return text
    parts = text.split("/")
    kept = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + len(kept) + 3 > width:
            break
        kept = f"{part}/{kept}"
    if len(kept) + 2 <= width and len(parts) > 1:
        return f"…/{kept}"
    return "…" + text[len(text) - max(width - 1, 1):]


def wrap_title(text: str, width: int) -> str:
    """`text` in lines of at most `width` characters, broken between words only (never
    at a hyphen or inside a path); a word (a path) longer than a line is shortened to
    its last parts (shorten_path)."""
    words = [shorten_path(w, width) for w in text.split(" ")]
    return textwrap.fill(" ".join(words), width, break_long_words=False,
                         break_on_hyphens=False)


def plot_confusion_matrix(matrix, labels: list[str], output: Path, *,
                          title: str = "confusion matrix") -> Path:
    """Draw a confusion matrix (rows: true class, columns: predicted), counts in cells."""
    import numpy as np

    matrix = np.asarray(matrix)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    size = min(max(3.5, 0.6 * n + 2.5), 14)
    fig = new_figure((size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=labels)
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel("predicted class", fontsize=11)
    ax.set_ylabel("true class", fontsize=11)
    ax.set_title(wrap_title(title, int((size + 1) * 9)), fontsize=12)
    if n <= 30:
        peak = matrix.max() if matrix.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=10,
                        color="white" if peak and matrix[i, j] > peak / 2 else "black")
    fig.tight_layout()
    save_figure(fig, output)
    return output
