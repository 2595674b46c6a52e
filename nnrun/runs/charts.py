"""Pictures of a run: learning curves (from metrics.csv) and a classifier's confusion
matrix, drawn with matplotlib's Agg backend (imported lazily: `--help` and `check`
stay fast). Written to the run directory's plots/ folder."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from nnrun.config.errors import ConfigError
from nnrun.config.files import atomic_write

CURVES = "learning_curves.png"
CONFUSION = "confusion_matrix.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """`fig` into `path` (its format from the suffix) whole or not at all, as every run
    file: a kill while drawing leaves the previous picture, never half a PNG."""
    path = Path(path)
    with atomic_write(path, f"write {path.name}") as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".").lower() or "png")


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


def plot_learning_curves(run: Path, output: Path | None = None) -> Path:
    """Draw loss and each metric per epoch (train and validation) from the run's
    metrics.csv into `output` (default RUN/plots/learning_curves.png)."""
    run = Path(run)
    columns = read_metrics(run / "metrics.csv")
    epochs = columns.get("epoch", [])
    if not epochs:
        raise ConfigError("no epochs in metrics.csv yet: nothing to draw",
                          where=str(run / "metrics.csv"))
    output = Path(output) if output is not None else run / "plots" / CURVES
    output.parent.mkdir(parents=True, exist_ok=True)
    quantities = curve_quantities(columns)
    plt = _pyplot()
    cols = min(len(quantities), 3)
    nrows = math.ceil(len(quantities) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.8 * nrows), squeeze=False)
    marker = "o" if len(epochs) <= 30 else None
    for ax, name in zip(axes.flat, quantities):
        for key, label, colour in ((name, "train", "#1f77b4"),
                                   (f"val_{name}", "validation", "#d62728")):
            if key in columns:
                ax.plot(epochs, columns[key], label=label, color=colour, linewidth=1.8,
                        marker=marker, markersize=3)
        ax.set_title(name, fontsize=12)
        ax.set_xlabel("epoch", fontsize=11)
        ax.set_ylabel(name, fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=10)
        ax.tick_params(labelsize=10)
        if len(epochs) == 1:
            ax.set_xlim(0.5, 1.5)
    for ax in list(axes.flat)[len(quantities):]:
        ax.axis("off")
    fig.suptitle(f"{run.name}: learning curves", fontsize=13)
    fig.tight_layout()
    save_figure(fig, output)
    plt.close(fig)
    return output


def plot_confusion_matrix(matrix, labels: list[str], output: Path, *,
                          title: str = "confusion matrix") -> Path:
    """Draw a confusion matrix (rows: true class, columns: predicted), counts in cells."""
    import numpy as np

    matrix = np.asarray(matrix)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    n = len(labels)
    size = min(max(3.5, 0.6 * n + 2.5), 14)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=labels)
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel("predicted class", fontsize=11)
    ax.set_ylabel("true class", fontsize=11)
    ax.set_title(title, fontsize=12)
    if n <= 30:
        peak = matrix.max() if matrix.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=10,
                        color="white" if peak and matrix[i, j] > peak / 2 else "black")
    fig.tight_layout()
    save_figure(fig, output)
    plt.close(fig)
    return output
