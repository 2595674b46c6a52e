"""The use cases every command and Python user calls: train, evaluate and predict, and
the checks every command runs first (load and check a config, build its model, load
and match its data).

- `nnrun.api.training`: `train` (a run directory from a config), `resolve_target`
  (a config or a run directory), the start weights of a fine-tuning run.
- `nnrun.api.inference`: `evaluate` and `predict` a trained run.
- `nnrun.api.prepare`: `load_checked` / `check` (what `nnrun check` runs), `build`,
  `load_data`, `objective_for`, `summary`.
- `nnrun.api.model`: the Python API (`nnrun.load`, `nnrun.train`; docs/python-api.md),
  imported on first use, not here.

May import every wing below it (config, nn, data, train, runs, keras); imported by
sweep/ and cli/ only. The CLI prints what these functions return; nothing here parses
command-line arguments.
"""

from nnrun.api.inference import evaluate, load_trained, predict, run_input_shape, task_kind
from nnrun.api.prepare import (
    Splits,
    build,
    check,
    check_compile,
    checked_model,
    load_checked,
    load_data,
    objective_for,
    summary,
    summary_dict,
    summary_model,
)
from nnrun.api.training import TrainResult, resolve_target, start_weights, train

__all__ = [
    "Splits", "TrainResult", "build", "check", "check_compile", "checked_model", "evaluate",
    "load_checked", "load_data", "load_trained", "objective_for", "predict", "resolve_target",
    "run_input_shape", "start_weights", "summary", "summary_dict", "summary_model", "task_kind",
    "train",
]
