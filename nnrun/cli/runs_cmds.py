"""The commands over finished runs: `runs` (a table of run directories) and `diff` (two
runs' config and final-metric differences); registered on the `nnrun` group by
`nnrun.cli`. Jax-free."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import click

from nnrun.cli.common import handle_errors


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _width() -> int | None:
    """The width to fit: the terminal's, or COLUMNS when set; None elsewhere (a pipe,
    a file), where every chosen column is printed whatever the width."""
    from rich.console import Console

    console = Console()
    if console.is_terminal or os.environ.get("COLUMNS", "").strip().isdigit():
        return console.width
    return None


def _console(width: int | None = None):
    """A console of this width; without one, the terminal's, or on a pipe wide enough
    that nothing is cut."""
    from rich.console import Console

    if width is not None:
        return Console(width=width)
    console = Console()
    return console if console.is_terminal else Console(width=250)


def _runs_dir(arg: Path | None, option: Path | None) -> Path:
    from nnrun.config.errors import ConfigError

    if arg is not None and option is not None and arg != option:
        raise ConfigError(f"two runs directories ({arg} and --runs-dir {option}); give one",
                          where="--runs-dir")
    return arg or option or Path("runs")


RUNS_DIR = click.option("--runs-dir", "runs_dir_option", default=None,
                        type=click.Path(file_okay=False, path_type=Path),
                        help="Where run directories live (default runs).")


@click.command("runs")
@click.argument("runs_dir", metavar="[DIR]", required=False, default=None,
                type=click.Path(file_okay=False, path_type=Path))
@RUNS_DIR
@click.option("--sort", "sort", metavar="KEY",
              help="Sort by a column (name, status, epochs, best_epoch, best, a metric such "
                   "as val_loss or final_loss, time, started); -KEY for descending. "
                   "Default: start time.")
@click.option("--columns", metavar="KEYS",
              help="The columns, comma-separated: KEY,KEY,... exactly these; +KEY,+KEY "
                   "added to the default ones; all. Keys: those of --json (a metric at the "
                   "best epoch such as val_accuracy, final_accuracy, monitor, started, "
                   "trials, ...), time, best.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (every field).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@handle_errors
def runs_cmd(runs_dir: Path | None, runs_dir_option: Path | None, sort: str | None,
             columns: str | None, as_json: bool, debug: bool) -> None:
    """A table of the runs in DIR (default runs/): name, status, epochs, the best epoch
    and the monitored value there, the final loss, wall time. A tune directory (nnrun
    tune) is one row: its trial counts and its best trial's values; DIR a tune
    directory lists its kept trials. Columns that do not fit the terminal are left out
    and named (--columns to choose)."""
    from nnrun.runs.runlist import list_runs
    from nnrun.runs.runtable import (
        ALIASES,
        choose_columns,
        fit_table,
        hidden_note,
        natural_width,
    )

    runs_dir = _runs_dir(runs_dir, runs_dir_option)
    if sort:   # --sort time, --sort -best
        sort = sort[:len(sort) - len(sort.lstrip("-"))] + ALIASES.get(sort.lstrip("-"),
                                                                       sort.lstrip("-"))
    rows = list_runs(runs_dir, sort)
    chosen, ordered = choose_columns(rows, columns)
    if as_json:
        click.echo(json.dumps({"runs_dir": str(runs_dir), "runs": _plain(rows)}))
        return
    if not rows:
        click.echo(f"no runs in {runs_dir}")
        return
    width = _width()
    table, hidden = fit_table(rows, chosen, f"runs in {runs_dir}", width, ordered)
    console = _console(width or max(natural_width(table), 40))
    console.print(table)
    if hidden:
        console.print(hidden_note(hidden), highlight=False)


def _located(arg: Path, runs_dir: Path | None) -> Path:
    """RUN as given, else a run of that name in --runs-dir (or runs/); a tune directory
    stands for its best trial's run."""
    from nnrun.config.errors import ConfigError
    from nnrun.runs import rundir

    root = runs_dir or Path("runs")
    if not arg.exists() and not arg.is_absolute() and (root / arg).exists():
        arg = root / arg
    if not arg.exists():
        raise ConfigError(f"no such run directory or config file (nor {root / arg})",
                          where=str(arg))
    return rundir.tune_target(arg)


@click.command("diff")
@click.argument("run_a", metavar="RUN_A", type=click.Path(path_type=Path))
@click.argument("run_b", metavar="RUN_B", type=click.Path(path_type=Path))
@RUNS_DIR
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@handle_errors
def diff_cmd(run_a: Path, run_b: Path, runs_dir_option: Path | None, as_json: bool,
             debug: bool) -> None:
    """What differs between two runs: the config values changed (layers matched by
    name; arguments at their defaults on both sides left out; an added or removed layer
    is one row), and the final epoch's loss and metrics. RUN is a run directory, a
    run's name in --runs-dir (default runs/, e.g. latest), or a config file (its config
    alone) or a tune directory (its best trial's run)."""
    from nnrun.runs.config_diff import show
    from nnrun.runs.runlist import diff_runs

    result = diff_runs(_located(run_a, runs_dir_option), _located(run_b, runs_dir_option))
    if as_json:
        click.echo(json.dumps(_plain(result)))
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    console = _console(_width())
    if result["config"]:
        table = Table(title="config", box=box.SIMPLE_HEAVY)
        for column in ("path", "old", "new"):
            table.add_column(column, overflow="fold")
        for item in result["config"]:
            layer = item.get("layer", False)
            old = "(absent)" if item["change"] == "added" else show(item["old"], layer)
            new = "(absent)" if item["change"] == "removed" else show(item["new"], layer)
            table.add_row(Text(item["path"]), Text(old), Text(f"→ {new}"))
        console.print(table)
    else:
        console.print("config: identical")
    if not result["metrics"]:
        return
    table = Table(title="final metrics", box=box.SIMPLE_HEAVY)
    for column in ("metric", "a", "b", "b - a"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, m in result["metrics"].items():
        delta = "-" if m["delta"] is None else f"{m['delta']:+.4g}"
        table.add_row(Text(key), _cell(m["a"]), _cell(m["b"]), delta)
    console.print(table)
