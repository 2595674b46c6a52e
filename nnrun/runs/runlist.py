"""Runs side by side: `nnrun runs` (one row per run directory: status, epochs, the best
epoch (`best_of`) with its monitored value and metrics, the final ones, wall time; one
per tune directory: its trial counts and its best trial's row, `tune_row`) and
`nnrun diff` (the config values a person changed, old -> new, and the final metrics'
differences). Reads run.json, metrics.csv, config.yaml, best.h5's attributes and tune.json
only;
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
    row: dict[str, Any] = {"name": run.name, "kind": "run",
                           "status": info.get("status", "unknown"),
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


# the best trial's row fields a tune row takes (the others are the tune's own)
_TUNE_OWN = ("name", "kind", "status", "monitor", "best_value", "wall_seconds", "started")


def trials_text(counts: Any) -> str | None:
    """tune.json's trial counts in a cell: `64 (40 done, 20 pruned, 4 failed)` (the
    planned total, then the states that have trials)."""
    if not isinstance(counts, dict):
        return None
    states = (("complete", "done"), ("pruned", "pruned"), ("failed", "failed"),
              ("running", "running"))
    parts = [f"{counts[k]} {word}" for k, word in states
             if isinstance(counts.get(k), int) and counts[k] > 0]
    total = counts.get("total")
    inner = ", ".join(parts) or "none yet"
    return f"{total} ({inner})" if isinstance(total, int) else inner


def tune_row(tune_dir: Path) -> dict[str, Any]:
    """A tune directory's row (`nnrun tune`, runs/<name>-tune-<stamp>/): status
    `tune <status>`, `trials` (trials_text), the metric searched as the monitor and the
    best trial's score as best_value, the best trial's epochs, best epoch and metrics
    (at that epoch and final) from its run's row, the search's wall time. A tune.json
    that cannot be read gives status `unknown`."""
    tune_dir = Path(tune_dir)
    record = rundir.read_tune_json(tune_dir)
    row: dict[str, Any] = {"name": tune_dir.name, "kind": "tune", "status": "unknown",
                           "trials": None, "epochs": None, "best_epoch": None,
                           "monitor": None, "best_value": None}
    if record is None or record.get("kind") != "tune":
        return {**row, "wall_seconds": None, "started": None}
    best = record.get("best") if isinstance(record.get("best"), dict) else None
    run = best.get("run") if best else None
    if isinstance(run, str) and rundir.is_run_dir(tune_dir / run):
        trial = run_row(tune_dir / run)
        row.update({k: v for k, v in trial.items() if k not in _TUNE_OWN})
    status, counts, metric = (record.get(k) for k in ("status", "trials", "metric"))
    row["status"] = f"tune {status}" if isinstance(status, str) else "unknown"
    row["trials"] = trials_text(counts)
    row["trial_counts"] = counts if isinstance(counts, dict) else None
    row["best_trial"] = best   # tune.json's: trial, run, value, params
    row["monitor"] = metric if isinstance(metric, str) else None
    row["best_value"] = best.get("value") if best else None
    start, end = _seconds(record.get("started")), _seconds(record.get("finished"))
    row["wall_seconds"] = end - start if start is not None and end is not None else None
    row["started"] = record.get("started") if isinstance(record.get("started"), str) else None
    return row


def _listed(path: Path) -> dict[str, Any] | None:
    """The row of a run or tune directory (a tune.json beside no config.yaml is a tune
    directory's, even unreadable: its row says unknown); None for anything else."""
    if not path.is_dir() or path.is_symlink():
        return None
    if rundir.is_tune_dir(path):
        return tune_row(path)
    if rundir.is_run_dir(path):
        return run_row(path)
    return tune_row(path) if (path / rundir.TUNE_FILE).is_file() else None


def list_runs(root: Path, sort: str | None = None) -> list[dict[str, Any]]:
    """The rows of every run directory and tune directory under `root` (runs/latest
    skipped; for a tune directory, its kept trials), sorted by `sort` (a row key; `-key`
    for descending; rows without the key last), else by start."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError("no such runs directory", where=str(root))
    if rundir.is_tune_dir(root):   # nnrun runs runs/<name>-tune-<stamp>: its trials
        root = root / "trials"
        if not root.is_dir():
            return []
    rows = [row for row in map(_listed, sorted(root.iterdir())) if row is not None]
    key = sort or "started"
    descending = key.startswith("-")
    key = key.lstrip("-")
    if rows and sort and not any(key in row for row in rows):
        known = sorted({k for row in rows for k in row})
        from nnrun.config.registry import unknown_name_message

        raise ConfigError(unknown_name_message("column", key, known), where="--sort")
    present = [r for r in rows if isinstance(r.get(key), (int, float, str))]
    absent = [r for r in rows if not isinstance(r.get(key), (int, float, str))]
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
