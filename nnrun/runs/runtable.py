"""The `nnrun runs` table: which columns (a default set, or `--columns`), in a stable
order, and how they fit a width. A column that does not fit is left out and named,
never cut: `hidden` says which. Rendered with rich; jax-free."""

from __future__ import annotations

import io
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from nnrun.config.errors import ConfigError

# What a person compares first: the run, how it ended, how long it trained, its best
# epoch and the monitored value there, the last epoch's loss, the wall time.
DEFAULT_COLUMNS = ("name", "status", "epochs", "best_epoch", "best_value", "final_loss",
                   "wall_seconds")
# A tune directory's trial counts: a default column after status when one is listed.
TRIALS = "trials"
# Left out first when the default columns do not fit (name never is).
HIDE_FIRST = ("final_loss", "wall_seconds", TRIALS, "epochs", "best_epoch", "best_value",
              "status")
ALIASES = {"time": "wall_seconds", "best": "best_value"}
_LABELS = {"best_epoch": "best epoch", "wall_seconds": "time"}
_TEXT = ("name", "status", TRIALS, "monitor", "started")
# --json's fields that are no column: a run's or tune's kind, a tune's counts and best
_NOT_COLUMNS = ("kind", "trial_counts", "best_trial")


def metric_order(key: str) -> tuple:
    """loss, then the other metrics by name; val_ of each after; final_ ones last."""
    final = key.startswith("final_")
    base = key[6:] if final else key
    val = base.startswith("val_")
    base = base[4:] if val else base
    return final, val, base != "loss", base


def _trials(rows: list[dict[str, Any]]) -> list[str]:
    """[TRIALS] when a tune directory with trial counts is listed, else []."""
    return [TRIALS] if any(row.get(TRIALS) is not None for row in rows) else []


def default_columns(rows: list[dict[str, Any]]) -> list[str]:
    """DEFAULT_COLUMNS, with `trials` after status when a tune directory is listed."""
    return [*DEFAULT_COLUMNS[:2], *_trials(rows), *DEFAULT_COLUMNS[2:]]


def all_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every column, in order: the default ones, the metrics at the best epoch, the
    final ones, the monitor and the start time (`trials` only with a tune directory)."""
    fixed = ("name", "status", TRIALS, "epochs", "best_epoch", "monitor", "best_value",
             "wall_seconds", "started", *_NOT_COLUMNS)
    metrics = sorted({k for row in rows for k in row if k not in fixed}, key=metric_order)
    return ["name", "status", *_trials(rows), "epochs", "best_epoch", "monitor",
            "best_value", *metrics, "wall_seconds", "started"]


def choose_columns(rows: list[dict[str, Any]], spec: str | None) -> tuple[list[str], bool]:
    """`--columns`: None (the default set), `all`, `+KEY,+KEY` (added to the default
    set) or `KEY,KEY,...` (exactly those, in that order). Returns the column keys and
    whether the person chose their order (then the rightmost are left out first)."""
    if not spec:
        return default_columns(rows), False
    if spec.strip() == "all":
        return all_columns(rows), False
    items = [s.strip() for s in spec.split(",") if s.strip()]
    adding = all(s.startswith("+") for s in items)
    known = [*all_columns(rows), *([] if _trials(rows) else [TRIALS]), *ALIASES]
    chosen: list[str] = default_columns(rows) if adding else []
    for item in items:
        key = item.lstrip("+")
        if rows and key not in known:
            from nnrun.config.registry import unknown_name_message

            raise ConfigError(unknown_name_message("column", key, known), where="--columns")
        key = ALIASES.get(key, key)
        if key not in chosen:
            chosen.append(key)
    return chosen, not adding


def _monitors(rows: list[dict[str, Any]]) -> set[str]:
    return {r["monitor"] for r in rows if r.get("monitor")}


def label(key: str, rows: list[dict[str, Any]]) -> str:
    """A column's header: `best val_loss` for the monitored value when every run
    monitors the same quantity, `final loss` for final_loss."""
    if key == "best_value":
        monitors = _monitors(rows)
        return f"best {next(iter(monitors))}" if len(monitors) == 1 else "best"
    if key.startswith("final_"):
        return f"final {key[6:]}"
    return _LABELS.get(key, key)


def wall(seconds: float | None) -> str:
    """Wall time at the resolution run.json's stamps have (a second)."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 1:
        return "<1s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def cell(key: str, row: dict[str, Any], mixed_monitors: bool = False) -> str:
    value = row.get(key)
    if key == "wall_seconds":
        return wall(value)
    if value is None:
        return "-"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    if key == "best_value" and mixed_monitors and row.get("monitor"):
        text += f" ({row['monitor']})"
    return text


def build_table(rows: list[dict[str, Any]], columns: list[str], title: str) -> Table:
    """The table of these columns; every value whole (the name folds, nothing is cut),
    as plain text (a `[` in a run's name is no markup)."""
    mixed = len(_monitors(rows)) > 1
    table = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left")
    for key in columns:
        text = key in _TEXT
        table.add_column(label(key, rows), justify="left" if text else "right",
                         no_wrap=key != "name", overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell(key, row, mixed)) for key in columns))
    return table


def natural_width(table: Table) -> int:
    console = Console(width=100_000, file=io.StringIO())
    return Measurement.get(console, console.options, table).maximum


def fit_table(rows: list[dict[str, Any]], columns: list[str], title: str,
              width: int | None, chosen_order: bool = False) -> tuple[Table, list[str]]:
    """The table with as many columns as fit `width` (None: all of them), and the keys
    of those left out: for the default set in HIDE_FIRST's order, else the rightmost
    first; `name` stays (it folds onto more lines if even it alone is too wide)."""
    original, columns = list(columns), list(columns)
    if chosen_order:
        candidates = [c for c in reversed(columns) if c != "name"]
    else:
        candidates = [c for c in reversed(columns) if c not in HIDE_FIRST and c != "name"]
        candidates += [c for c in HIDE_FIRST if c in columns]
    hidden: list[str] = []
    table = build_table(rows, columns, title)
    while width is not None and natural_width(table) > width and candidates:
        drop = candidates.pop(0)
        columns.remove(drop)
        hidden.append(drop)
        table = build_table(rows, columns, title)
    return table, sorted(hidden, key=original.index)


def hidden_note(hidden: list[str]) -> str:
    """One line naming the columns left out, as --columns takes them."""
    names = ", ".join("time" if k == "wall_seconds" else k for k in hidden)
    s = "" if len(hidden) == 1 else "s"
    return f"{len(hidden)} column{s} hidden: {names}; --columns to choose"
