"""Runs side by side: `nnrun runs` (one row per run directory: status, epochs, the best
epoch (`best_of`) with its monitored value and metrics, the final ones, wall time) and
`nnrun diff` (the config values a person changed, old -> new, and the final metrics'
differences). Reads run.json, metrics.csv, config.yaml and best.h5's attributes only;
jax-free."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from nnrun.config.errors import ConfigError
from nnrun.runs import rundir
from nnrun.runs.charts import read_metrics


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _seconds(stamp: str | None) -> float | None:
    try:
        return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")) if stamp else None
    except (ValueError, TypeError):
        return None


def _finite(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def best_of(run: Path, info: dict | None = None,
            columns: dict[str, list[float]] | None = None) -> dict[str, Any] | None:
    """The run's best epoch as {"epoch", "monitor", "value"}: run.json's `best` (the
    epoch of checkpoints/best.h5), else best.h5's own attributes, else (a run without
    best.h5) the epoch of the lowest val_loss, or loss, in metrics.csv. The value is
    the monitored quantity at that epoch (metrics.csv first). None if nothing says."""
    run = Path(run)
    info = _read_json(run / "run.json") if info is None else info
    if columns is None:
        columns = read_metrics(run / "metrics.csv") if (run / "metrics.csv").is_file() else {}
    record = info.get("best")
    if not (isinstance(record, dict) and isinstance(record.get("epoch"), int)):
        record = None
        if (run / "checkpoints" / "best.h5").is_file():
            record = rundir.best_record(run / "checkpoints" / "best.h5")
    if record is None:
        monitor = "val_loss" if "val_loss" in columns else "loss"
        values, epochs = columns.get(monitor, []), columns.get("epoch", [])
        i = min((i for i in range(min(len(values), len(epochs))) if _finite(values[i])),
                key=lambda i: values[i], default=None)
        return None if i is None else {"epoch": int(epochs[i]), "monitor": monitor,
                                       "value": values[i]}
    best = {"epoch": record["epoch"], "monitor": record.get("monitor"),
            "value": record.get("value")}
    at = _at_epoch(columns, best["epoch"])
    if best["monitor"] in at:
        best["value"] = at[best["monitor"]]
    return best


def _at_epoch(columns: dict[str, list[float]], epoch: int) -> dict[str, float]:
    """metrics.csv's row of one epoch (the last such row, after a resume), without
    `epoch` and `lr`; empty if the epoch is not there."""
    epochs = columns.get("epoch", [])
    i = next((i for i in reversed(range(len(epochs))) if epochs[i] == epoch), None)
    if i is None:
        return {}
    return {k: v[i] for k, v in columns.items() if k not in ("epoch", "lr") and i < len(v)}


def run_row(run: Path) -> dict[str, Any]:
    """One run's row: name, status, epochs, the best epoch (best_of) with its monitor,
    that monitor's value and every metric at that epoch, each metric's final value
    (`final_loss`, `final_val_loss`, ...), and the wall time in seconds."""
    info = _read_json(run / "run.json")
    columns = read_metrics(run / "metrics.csv") if (run / "metrics.csv").is_file() else {}
    epochs = columns.get("epoch", [])
    best = best_of(run, info, columns)
    row: dict[str, Any] = {"name": run.name, "status": info.get("status", "unknown"),
                           "epochs": info.get("epochs_completed", len(epochs)),
                           "best_epoch": best["epoch"] if best else None,
                           "monitor": best["monitor"] if best else None,
                           "best_value": best["value"] if best else None}
    if best is not None:
        row.update(_at_epoch(columns, best["epoch"]))
    final = final_metrics(run, columns, info)
    row.update({f"final_{k}": v for k, v in final.items()})
    start, end = _seconds(info.get("started")), _seconds(info.get("finished"))
    row["wall_seconds"] = end - start if start is not None and end is not None else None
    row["started"] = info.get("started")
    return row


def list_runs(root: Path, sort: str | None = None) -> list[dict[str, Any]]:
    """The rows of every run directory under `root` (runs/latest skipped), sorted by
    `sort` (a row key; `-key` for descending; runs without the key last), else by start."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError("no such runs directory", where=str(root))
    rows = [run_row(p) for p in sorted(root.iterdir())
            if p.is_dir() and not p.is_symlink() and rundir.is_run_dir(p)]
    key = sort or "started"
    descending = key.startswith("-")
    key = key.lstrip("-")
    if rows and sort and not any(key in row for row in rows):
        known = sorted({k for row in rows for k in row})
        from nnrun.config.registry import unknown_name_message

        raise ConfigError(unknown_name_message("column", key, known), where="--sort")
    present = [r for r in rows if r.get(key) is not None]
    absent = [r for r in rows if r.get(key) is None]
    present.sort(key=lambda r: (isinstance(r[key], str), r[key]), reverse=descending)
    return present + absent


def _config(target: Path) -> dict:
    """A run's config.yaml, or a config file resolved as a run would save it."""
    if target.is_file():
        from nnrun.config.spec import load_spec

        return load_spec(target).resolved
    if not rundir.is_run_dir(target):
        raise ConfigError("not a run directory (no config.yaml in it) nor a config file",
                          where=str(target))
    try:
        return yaml.safe_load((target / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config.yaml: {exc}", where=str(target)) from None


def final_metrics(run: Path, columns: dict[str, list[float]] | None = None,
                  info: dict | None = None) -> dict[str, float]:
    """The last epoch's loss and metrics (metrics.csv, else run.json's `final`)."""
    if columns is None:
        columns = read_metrics(run / "metrics.csv") if (run / "metrics.csv").is_file() else {}
    if columns.get("epoch"):
        return {k: v[-1] for k, v in columns.items() if k not in ("epoch", "lr")}
    info = _read_json(run / "run.json") if info is None else info
    return dict(info.get("final") or {})


def diff_runs(run_a: Path, run_b: Path) -> dict[str, Any]:
    """What differs between two runs (or config files): the config values a person
    changed (config_diff.diff_configs: layers matched by name, defaults left out) and
    each final metric of either run with its difference (b - a; two runs only)."""
    from nnrun.runs.config_diff import diff_configs

    config = diff_configs(_config(Path(run_a)), _config(Path(run_b)))
    both_runs = Path(run_a).is_dir() and Path(run_b).is_dir()
    fa, fb = (final_metrics(run_a), final_metrics(run_b)) if both_runs else ({}, {})
    metrics = {}
    for key in [*fa, *(k for k in fb if k not in fa)]:
        a, b = fa.get(key), fb.get(key)
        delta = b - a if a is not None and b is not None else None
        metrics[key] = {"a": a, "b": b, "delta": delta}
    return {"a": str(run_a), "b": str(run_b), "config": config, "metrics": metrics}
