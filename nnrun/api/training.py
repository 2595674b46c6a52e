"""Training, the first use case: a checked config -> a run directory (`train`), a config
or a run directory resolved for any command (`resolve_target`), and the start weights
of a fine-tuning run.

The CLI only parses arguments and prints; everything here can be called and
tested from Python (through `nnrun.api`).
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from nnrun.api.prepare import (
    Splits,
    _placement,
    build,
    check_features,
    check_targets,
    checked_model,
    load_checked,
    load_data,
    objective_for,
)
from nnrun.config.errors import ConfigError
from nnrun.config.spec import Spec, dump_yaml, model_to_dict
from nnrun.data.rowsource import is_lazy
from nnrun.data.splitting import PREPROCESSING_FILE, output_classes
from nnrun.data.tables import ENCODING_FILE
from nnrun.runs import rundir

# ---------------------------------------------------------------- targets

def resolve_target(target: str | Path, overrides: tuple[str, ...] = (), *,
                   runs_root: Path = Path("runs"), need_run: bool = False
                   ) -> tuple[Spec, Path | None]:
    """A config file or a run directory -> (spec, run directory or None).

    For a config and `need_run`, the run is the newest one of the config's name.
    """
    target = Path(target)
    if target.is_dir():
        if not rundir.is_run_dir(target):
            raise ConfigError("not a run directory (no config.yaml in it)", where=str(target))
        run = target.resolve()
        return load_checked(run / "config.yaml", overrides), run
    spec = load_checked(target, overrides)
    checked_model(spec)  # what `nnrun check` checks, before any other work
    if not need_run:
        return spec, None
    run = rundir.latest_run_of(runs_root, spec.name)
    if run is None:
        raise ConfigError(f"no run of {spec.name!r} in {runs_root}/; train it first "
                          f"(nnrun train {target})", where=str(target))
    return spec, run


# ---------------------------------------------------------------- training

@dataclass
class TrainResult:
    run_dir: Path
    history: dict[str, list[float]] = field(default_factory=dict)
    status: str = "finished"
    stop_reason: str | None = None
    exit_code: int = 0


class StopFlag:
    """SIGINT/SIGTERM ask training to stop after the current epoch; a second one aborts."""

    def __init__(self, stream: TextIO):
        self.requested: str | None = None
        self.stream = stream
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"{self.requested} received: saving a checkpoint after this epoch "
              "(again to abort)", file=self.stream, flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def start_run(spec: Spec, model, runs_root: Path, argv: list[str], splits: Splits,
               run: Path | None = None) -> tuple:
    from nnrun.runs.report import summary_text

    run = run or rundir.create_run_dir(runs_root, spec.name)   # run: a sweep's variant
    rundir.write_atomic(run / "config.yaml", dump_yaml(spec.resolved))
    arch = {"model": model_to_dict(spec.model)}
    arch["model"].pop("weights", None)   # architecture only
    if not spec.model.is_graph:
        arch["model"].setdefault("input_shape", list(model.input_shape))
    rundir.write_atomic(run / "model.yaml", dump_yaml(arch))
    rundir.write_json(run / "model.json", arch)
    rundir.write_atomic(run / "summary.txt", summary_text(model, spec.name))
    if splits.preprocessing is not None:
        rundir.write_json(run / PREPROCESSING_FILE, splits.preprocessing.to_json())
    info = rundir.base_run_info(argv, spec.seed, splits.files())
    info["samples"] = {"train": len(splits.train.x),
                       "validation": len(splits.validation.x) if splits.validation else 0}
    # features read from disk in chunks during training (data.stream, or over 1 GiB)
    info["streamed"] = is_lazy(splits.train.x)
    rundir.write_json(run / "run.json", info)
    if splits.train.encoding is not None:   # how predict and evaluate encode tables
        rundir.write_json(run / ENCODING_FILE, splits.train.encoding)
    return run, info


def _resume_run(spec: Spec, run: Path, argv: list[str], allow_config_change: bool
                ) -> tuple[Path, dict]:
    """A stopped run's directory and run.json, checked for resuming (status, config)."""
    from nnrun.train.fit_loop import check_resumable

    if not rundir.is_run_dir(run):
        raise ConfigError("not a run directory (no config.yaml in it)", where=str(run))
    run = run.resolve()
    info = rundir.read_run_json(run)
    new = dump_yaml(spec.resolved)
    diff = check_resumable(run, info, (run / "config.yaml").read_text(encoding="utf-8"),
                           new, allow_config_change)
    if diff:
        rundir.write_atomic(run / "config.yaml", new)
    info.setdefault("resumed", []).append({
        "argv": argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "after_status": info.get("status"), "config_diff": diff or None})
    info.update(status="running", stop_reason=None)
    rundir.write_json(run / "run.json", info)
    return run, info


def train(spec: Spec, *, runs_root: Path = Path("runs"), argv: list[str] | None = None,
          stream: TextIO = sys.stdout, quiet: bool = False, resume: Path | None = None,
          allow_config_change: bool = False) -> TrainResult:
    """Train as the config says, writing the run directory as training goes. With
    `resume` (a run directory), continue that run from its last.h5 exactly; a config
    other than the run's is refused (with the diff) unless `allow_config_change`.
    With `distributed:`, this process joins the others first (nnrun/train/distributed.py);
    only process 0 writes the run directory and prints."""
    from nnrun.train import distributed

    distributed.initialize(spec.distributed, spec.where(("distributed",)))
    if spec.distributed is None or distributed.is_writer():
        return _train(spec, runs_root=runs_root, argv=argv, stream=stream, quiet=quiet,
                      resume=resume, allow_config_change=allow_config_change)
    if resume is not None:
        raise ConfigError("--resume with distributed: is not supported yet (start again)",
                          where=spec.where(("distributed",)))
    with distributed.runs_root_for(runs_root) as scratch:
        return _train(spec, runs_root=scratch, argv=argv, stream=stream, quiet=True)


def _train(spec: Spec, *, runs_root: Path, argv: list[str] | None, stream: TextIO,
           quiet: bool, resume: Path | None = None,
           allow_config_change: bool = False) -> TrainResult:
    from nnrun.runs.report import EpochReporter
    from nnrun.train.callbacks import check_monitors
    from nnrun.train.checkpoint import Checkpointer
    from nnrun.train.fit_loop import CallbackRunner, fit_loop, load_resume_state
    from nnrun.train.fitter import Fitter

    # Compile settings and (with an input shape in the config) the model are checked,
    # every problem at once, before any data is read: what `nnrun check` does.
    model = checked_model(spec)
    placement = _placement(spec)
    splits = load_data(spec, num_classes=output_classes(model))
    model = model or build(spec, splits.train.x)
    check_features(model, splits.train.x, splits.train.source)
    obj = objective_for(spec, model, splits.train.y)
    check_targets(model, obj, splits.train, "training")
    val = (splits.validation.x, splits.validation.y) if splits.validation else None
    if val is not None:
        check_features(model, val[0], splits.validation.source)
        check_targets(model, obj, splits.validation, "validation")
    fitter = Fitter(model, obj, spec.compile.optimizer, seed=spec.seed,
                    batch_size=spec.fit.batch_size, shuffle=spec.fit.shuffle,
                    x=splits.train.x, y=splits.train.y, val=val,
                    sample_weight=splits.train.sample_weight, placement=placement)
    keys = [*obj.keys(), *([f"val_{k}" for k in obj.keys()] if val else [])]
    check_monitors(spec.fit.callbacks, keys, spec.where)
    start = start_weights(spec, model) if resume is None else None
    argv = list(argv or sys.argv)
    if resume is None:
        run, info = start_run(spec, model, runs_root, argv, splits)
        info["data_parallel"] = placement.describe()
        if start is not None:
            info["initial_weights"] = start.record()
            if start.missing and not quiet:
                print(start.note(), file=stream)
    else:
        run, info = _resume_run(spec, Path(resume), argv, allow_config_change)
    runner = CallbackRunner(spec, run / "checkpoints")
    monitor, mode = runner.best_monitor(val is not None)
    checkpointer = Checkpointer(run / "checkpoints", monitor=monitor, mode=mode,
                                attrs={"seed": spec.seed, "config": dump_yaml(spec.resolved)})
    checkpointer.on_last = lambda: runner.last_attrs(fitter)
    if resume is None:
        ts = fitter.initial_state()
        if start is not None:
            ts = start.apply(ts)
        checkpointer.flush(ts, 0)  # the initial weights: a loadable last.h5 from the start
    else:
        ts = load_resume_state(run, fitter, checkpointer, runner)
    log = rundir.MetricsLog(run, keys, resume_after=fitter.epoch if resume else None)
    result = TrainResult(run)
    reporter = EpochReporter(spec.fit.epochs, stream, quiet=quiet)
    try:
        with StopFlag(stream) as stop:
            ts = fit_loop(spec, fitter, ts, log, checkpointer, reporter, stop, result, runner)
    except KeyboardInterrupt:
        result.status, result.stop_reason, result.exit_code = "interrupted", "aborted", 130
    except BaseException as exc:
        result.status, result.stop_reason = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        reporter.close()
        log.close()
        finish_run(run, info, fitter, result)
        draw_curves(run, stream)
    return result


@dataclass
class StartWeights:
    """model.weights read: the weights of the layers the checkpoint has, by name."""

    path: str
    params: dict
    state: dict
    loaded: list[str]
    missing: list[str]

    def apply(self, ts):
        """The train state with these layers' weights in place of their initialization
        (the optimizer's state is kept: it starts from zeros either way)."""
        import jax
        import jax.numpy as jnp

        params = {**ts.params, **jax.tree.map(jnp.asarray, self.params)}
        state = {**ts.state, **jax.tree.map(jnp.asarray, self.state)}
        return ts._replace(params=params, state=state)

    def note(self) -> str:
        return (f"note: model.weights {self.path}: no weights for layer"
                f"{'s' if len(self.missing) > 1 else ''} {', '.join(self.missing)}; "
                "they keep their initialization")

    def record(self) -> dict:
        return {"path": self.path, "loaded": self.loaded, "initialized": self.missing}


def start_weights(spec: Spec, model) -> StartWeights | None:
    """The weights model.weights names (a checkpoint .h5, or a run directory: its
    best.h5), matched to the model's layers by name; None without model.weights. Shapes
    that differ are a ConfigError at model.weights naming the layers."""
    from nnrun.config.errors import CheckpointError
    from nnrun.train.checkpoint import read_layer_weights

    if spec.model.weights is None:
        return None
    path = Path(spec.model.weights)
    if path.is_dir() and rundir.is_run_dir(path):
        path = path / "checkpoints" / "best.h5"
    params, state = model.param_shapes()
    try:
        p, s, loaded, missing = read_layer_weights(path, params=params, state=state)
    except CheckpointError as exc:
        raise ConfigError(f"{exc.where}: {exc.message}",
                          where=spec.where(("model", "weights"))) from None
    if not loaded:
        raise ConfigError(f"{path}: no layer of the model is in this checkpoint (layers are "
                          f"matched by name: {', '.join(missing)})",
                          where=spec.where(("model", "weights")))
    return StartWeights(str(path), p, s, loaded, missing)


def draw_curves(run: Path, stream: TextIO) -> None:
    """plots/learning_curves.png from metrics.csv, whatever way training ended; a
    failure to draw is a warning, never the run's error."""
    from nnrun.runs.charts import plot_learning_curves

    try:
        plot_learning_curves(run)
    except ConfigError:   # no epoch completed: nothing to draw
        pass
    except Exception as exc:  # noqa: BLE001 - a picture must not fail a run
        print(f"warning: learning curves not drawn: {exc}", file=stream)


def finish_run(run: Path, info: dict, fitter, result: TrainResult) -> None:
    info.update(status=result.status, stop_reason=result.stop_reason,
                epochs_completed=fitter.epoch,
                finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                timing={"first_epoch_seconds": fitter.first_epoch_seconds,
                        "mean_epoch_seconds": (float(np.mean(fitter.epoch_seconds))
                                               if fitter.epoch_seconds else None)},
                final={k: v[-1] for k, v in result.history.items()})
    rundir.write_json(run / "run.json", info)
