"""How a training ended, for a person: the lines `nnrun train` prints after the last
epoch (finished, stopped early, interrupted or diverged; the best epoch, that is
checkpoints/best.h5's, with its validation metrics; the command to run next). The same
facts are the fields of `nnrun train --json` (api.training.TrainResult.to_json)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from nnrun.config.errors import ConfigError


def epoch_metrics(run: Path, best: dict | None) -> dict[str, float]:
    """The loss and metrics of the best epoch, from the run's metrics.csv ({} if the
    row is not there)."""
    from nnrun.runs.charts import read_metrics

    run = Path(run)
    if best is None or not (run / "metrics.csv").is_file():
        return {}
    try:
        columns = read_metrics(run / "metrics.csv")
    except ConfigError:
        return {}
    epochs = columns.get("epoch", [])   # the last row of that epoch (after a resume)
    row = next((i for i in reversed(range(len(epochs))) if epochs[i] == best["epoch"]),
               None)
    return {} if row is None else {k: v[row] for k, v in columns.items()
                                   if k not in ("epoch", "lr")}


def next_commands(run: Path, status: str, best: dict | None) -> list[str]:
    """What to run next: resume an interrupted run; evaluate a run that has a best.h5."""
    out = []
    if status == "interrupted":
        out.append(f"nnrun train --resume {shlex.quote(str(run))}")
    if best is not None:
        out.append(f"nnrun evaluate {shlex.quote(str(run))}")
    return out


def _headline(s: dict[str, Any]) -> str:
    done, planned, reason = s["epochs_completed"], s["epochs"], s["stop_reason"] or ""
    outcome = s["outcome"]
    if outcome == "completed":
        return f"finished: {done} epoch{'s' if done != 1 else ''}"
    if outcome == "stopped_early":
        why = reason.removeprefix(f"{s['stopped_by']}: ")
        why = why.replace(f"; stopped after epoch {done}", "")
        return f"stopped early by {s['stopped_by']} at epoch {done} of {planned}: {why}"
    if outcome == "interrupted":
        signal = reason.split()[0] if reason.startswith("SIG") else None
        how = f" by {signal}" if signal else ""
        more = "" if signal else f" ({reason})"
        when = f"after epoch {done} of {planned}" if done else "before epoch 1"
        return f"interrupted{how} {when}{more}"
    if outcome == "diverged":
        return f"diverged: {reason}; training stopped"
    return f"training {outcome}: {reason}"


def _best_line(s: dict[str, Any]) -> str:
    best = s["best"]
    if best is None:
        if not s["epochs_completed"]:
            return "no epoch completed: no checkpoints/best.h5"
        return ("no best epoch: no epoch ended with a finite monitored value (no "
                "checkpoints/best.h5)")
    metrics = best.get("metrics") or {}
    shown = {k: v for k, v in metrics.items() if k.startswith("val_")} or metrics
    text = f"best epoch {best['epoch']}"
    if best.get("monitor"):
        text += f" (by {best['monitor']}, in checkpoints/best.h5)"
    if shown:
        text += ": " + " - ".join(f"{k}: {v:.4f}" for k, v in shown.items())
    elif best.get("value") is not None:
        text += f": {best['monitor']}: {best['value']:.4f}"
    return text


def finish_lines(summary: dict[str, Any]) -> list[str]:
    """The lines after training (`summary`: TrainResult.to_json()); the run directory,
    printed last by the command, is not among them."""
    lines = [_headline(summary), _best_line(summary)]
    first, *others = summary["next"] or [None]
    if first:
        lines.append(f"next: {first}" + "".join(f" (or {c})" for c in others))
    return lines
