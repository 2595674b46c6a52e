"""Runs side by side: `nnrun runs` (one row per run directory: status, epochs, the best
epoch's val_loss and metrics, wall time) and `nnrun diff` (config differences as
dotted paths, old -> new, and the final metrics' differences). Reads run.json,
metrics.csv and config.yaml only; jax-free."""

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


def run_row(run: Path) -> dict[str, Any]:
    """One run's row: name, status, epochs, the best epoch (lowest val_loss, else loss)
    with its loss and metrics, and wall time in seconds."""
    info = _read_json(run / "run.json")
    columns = read_metrics(run / "metrics.csv") if (run / "metrics.csv").is_file() else {}
    epochs = columns.get("epoch", [])
    monitor = "val_loss" if "val_loss" in columns else "loss"
    values = columns.get(monitor, [])
    best = min((i for i in range(len(values)) if _finite(values[i])),
               key=lambda i: values[i], default=None)
    row: dict[str, Any] = {"name": run.name, "status": info.get("status", "unknown"),
                           "epochs": info.get("epochs_completed", len(epochs))}
    row["best_epoch"] = int(epochs[best]) if best is not None else None
    for key, column in columns.items():
        if key not in ("epoch", "lr") and best is not None:
            row[key] = column[best]
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


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted path: leaf}: `fit.epochs`, `model.layers[0].Dense.units`."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _config(run: Path) -> dict:
    try:
        return yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config.yaml: {exc}", where=str(run)) from None


def final_metrics(run: Path) -> dict[str, float]:
    """The last epoch's loss and metrics (metrics.csv, else run.json's `final`)."""
    columns = read_metrics(run / "metrics.csv") if (run / "metrics.csv").is_file() else {}
    if columns.get("epoch"):
        return {k: v[-1] for k, v in columns.items() if k not in ("epoch", "lr")}
    return dict(_read_json(run / "run.json").get("final") or {})


def diff_runs(run_a: Path, run_b: Path) -> dict[str, Any]:
    """Config values that differ (path, old, new; a side without the path is absent)
    and each final metric of either run with its difference (b - a)."""
    for run in (run_a, run_b):
        if not rundir.is_run_dir(run):
            raise ConfigError("not a run directory (no config.yaml in it)", where=str(run))
    old, new = flatten(_config(run_a)), flatten(_config(run_b))
    config = []
    for path in [*old, *(p for p in new if p not in old)]:
        if path in old and path in new and old[path] == new[path]:
            continue
        config.append({"path": path, "old": old.get(path), "new": new.get(path),
                       "change": "changed" if path in old and path in new
                       else "removed" if path in old else "added"})
    fa, fb = final_metrics(run_a), final_metrics(run_b)
    metrics = {}
    for key in [*fa, *(k for k in fb if k not in fa)]:
        a, b = fa.get(key), fb.get(key)
        delta = b - a if a is not None and b is not None else None
        metrics[key] = {"a": a, "b": b, "delta": delta}
    return {"a": str(run_a), "b": str(run_b), "config": config, "metrics": metrics}
