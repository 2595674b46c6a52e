"""The commands over finished runs: `runs` (a table of run directories) and `diff` (two
runs' config and final-metric differences); registered on the `nnrun` group by
`nnrun.cli`. Jax-free."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from nnrun.cli.common import handle_errors

FIXED_COLUMNS = ("name", "status", "epochs", "best_epoch")


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


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def _console():
    """The terminal's width on a terminal; elsewhere (a pipe, a file) wide enough that
    no column is cut."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=250)


@click.command("runs")
@click.argument("runs_dir", metavar="[DIR]", required=False, default="runs",
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--sort", "sort", metavar="KEY",
              help="Sort by a column (name, status, epochs, val_loss, a metric, "
                   "wall_seconds, started); -KEY for descending. Default: start time.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@handle_errors
def runs_cmd(runs_dir: Path, sort: str | None, as_json: bool, debug: bool) -> None:
    """A table of the runs in DIR (default runs/): status, epochs, the best epoch's
    val_loss and metrics, wall time."""
    from nnrun.runs.runlist import list_runs

    rows = list_runs(runs_dir, sort)
    if as_json:
        click.echo(json.dumps({"runs_dir": str(runs_dir), "runs": _plain(rows)}))
        return
    from rich import box
    from rich.table import Table

    metric_keys: list[str] = []
    for row in rows:
        metric_keys += [k for k in row if k not in (*FIXED_COLUMNS, "wall_seconds", "started")
                        and k not in metric_keys]
    metric_keys.sort(key=lambda k: (not k.startswith("val_"), not k.endswith("loss"), k))
    table = Table(title=f"runs in {runs_dir}", box=box.SIMPLE_HEAVY)
    for column in (*FIXED_COLUMNS, *metric_keys, "wall time"):
        table.add_column(column, justify="left" if column in ("name", "status") else "right",
                         no_wrap=True, min_width=len(column))
    for row in rows:
        table.add_row(*(_cell(row.get(k)) for k in (*FIXED_COLUMNS, *metric_keys)),
                      _wall(row.get("wall_seconds")))
    _console().print(table)


@click.command("diff")
@click.argument("run_a", metavar="RUN_A", type=click.Path(exists=True, file_okay=False,
                                                          path_type=Path))
@click.argument("run_b", metavar="RUN_B", type=click.Path(exists=True, file_okay=False,
                                                          path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@handle_errors
def diff_cmd(run_a: Path, run_b: Path, as_json: bool, debug: bool) -> None:
    """What differs between two runs: config values (dotted paths, old -> new) and the
    final epoch's loss and metrics."""
    from nnrun.runs.runlist import diff_runs

    result = diff_runs(run_a, run_b)
    if as_json:
        click.echo(json.dumps(_plain(result)))
        return
    from rich import box
    from rich.table import Table

    console = _console()
    if result["config"]:
        table = Table(title="config", box=box.SIMPLE_HEAVY)
        for column in ("path", "old", "new"):
            table.add_column(column)
        for item in result["config"]:
            old = "(absent)" if item["change"] == "added" else json.dumps(item["old"])
            new = "(absent)" if item["change"] == "removed" else json.dumps(item["new"])
            table.add_row(item["path"], old, f"→ {new}")
        console.print(table)
    else:
        console.print("config: identical")
    table = Table(title="final metrics", box=box.SIMPLE_HEAVY)
    for column in ("metric", "a", "b", "b - a"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, m in result["metrics"].items():
        delta = "-" if m["delta"] is None else f"{m['delta']:+.4g}"
        table.add_row(key, _cell(m["a"]), _cell(m["b"]), delta)
    console.print(table)
