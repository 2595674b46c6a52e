"""Training, the first use case: a checked config -> a run directory (`train`), a config
or a run directory resolved for any command (`resolve_target`), and the start weights
of a fine-tuning run.

The CLI only parses arguments and prints; everything here can be called and
tested from Python (through `nnrun.api`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from nnrun.api.prepare import (
    Splits,
    _placement,
    build,
    check_features,
    check_file_features,
    check_targets,
    checked_model,
    load_checked,
    load_data,
    objective_for,
)
from nnrun.config import faults
from nnrun.config.errors import ConfigError
from nnrun.config.files import remove_temporaries
from nnrun.config.spec import Spec, dump_yaml, model_to_dict
from nnrun.data.rowsource import is_lazy
from nnrun.data.splitting import PREPROCESSING_FILE, output_classes
from nnrun.data.tables import ENCODING_FILE
from nnrun.runs import finish, interrupts, rundir

# ---------------------------------------------------------------- targets

def resolve_target(target: str | Path, overrides: tuple[str, ...] = (), *,
                   runs_root: Path = Path("runs"), need_run: bool = False
                   ) -> tuple[Spec, Path | None]:
    """A config file or a run directory -> (spec, run directory or None).

    A tune directory (nnrun tune) stands for its best trial's run directory (a
    ConfigError at the directory before a trial has finished). For a config and
    `need_run`, the run is the newest one of the config's name; a config with
    model.weights and no run yet gives None (its weights are model.weights).
    """
    target = rundir.tune_target(target)
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
    if run is None and spec.model.weights is None:
        raise ConfigError(f"no run of {spec.name!r} in {runs_root}/; train it first "
                          f"(nnrun train {target})", where=str(target))
    return spec, run   # None: no run yet, the weights model.weights names (imported ones)


# ---------------------------------------------------------------- training

@dataclass
class TrainResult:
    run_dir: Path
    history: dict[str, list[float]] = field(default_factory=dict)
    status: str = "finished"
    stop_reason: str | None = None
    exit_code: int = 0
    epochs: int = 0                   # fit.epochs
    epochs_completed: int = 0
    stopped_by: str | None = None     # the callback that stopped training early
    best: dict | None = None          # run.json's best: checkpoints/best.h5's epoch
    best_metrics: dict[str, float] = field(default_factory=dict)   # of that epoch
    warnings: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """completed, stopped_early, interrupted, diverged or failed."""
        if self.status == "finished":
            return "stopped_early" if self.stopped_by else "completed"
        return self.status

    def to_json(self) -> dict:
        """What `nnrun train --json` prints: the finish lines as fields."""
        return {"run_dir": str(self.run_dir), "status": self.status,
                "outcome": self.outcome, "stop_reason": self.stop_reason,
                "stopped_by": self.stopped_by, "epochs": self.epochs,
                "epochs_completed": self.epochs_completed,
                "best": None if self.best is None else {**self.best,
                                                        "metrics": self.best_metrics},
                "final": {k: v[-1] for k, v in self.history.items()},
                "warnings": self.warnings,
                "next": finish.next_commands(self.run_dir, self.status, self.best)}


@contextlib.contextmanager
def interrupt_guard(stream: TextIO) -> Iterator[interrupts.Interrupts]:
    """SIGINT/SIGTERM handling for one training: the command line's (installed before
    it imported JAX: a second signal aborts at once), or for a Python caller one that
    stops at the next epoch and raises KeyboardInterrupt on a second signal
    (nnrun/runs/interrupts.py)."""
    guard = interrupts.active()
    if guard is not None:
        yield guard
        return
    with interrupts.Interrupts(stream, hard=False) as guard:
        yield guard


def start_run(spec: Spec, model, runs_root: Path, argv: list[str], splits: Splits,
               run: Path | None = None) -> tuple:
    from nnrun.runs.report import summary_text

    created = run is None   # else a sweep's variant, in the sweep's directory
    run = run or rundir.create_run_dir(runs_root, spec.name)
    rundir.write_atomic(run / "config.yaml", dump_yaml(spec.resolved))
    if created:   # runs/latest only ever points at a run directory with its config
        rundir.point_latest(run)
    arch = {"model": model_to_dict(spec.model)}
    arch["model"].pop("weights", None)   # architecture only
    if not spec.model.is_graph:
        arch["model"].setdefault("input_shape", list(model.input_shape))
    rundir.write_atomic(run / "model.yaml", dump_yaml(arch))
    rundir.write_json(run / "model.json", arch)
    rundir.write_atomic(run / "summary.txt", summary_text(model, spec.name))
    if splits.preprocessing is not None:
        rundir.write_json(run / PREPROCESSING_FILE, splits.preprocessing.to_json())
    info = rundir.base_run_info(argv, spec.seed, splits.files(), name=spec.name)
    info["samples"] = {"train": len(splits.train.x),
                       "validation": len(splits.validation.x) if splits.validation else 0}
    # features read from disk in chunks during training (data.stream, or over 1 GiB)
    info["streamed"] = is_lazy(splits.train.x)
    rundir.write_json(run / "run.json", info)
    if splits.train.encoding is not None:   # how predict and evaluate encode tables
        rundir.write_json(run / ENCODING_FILE, splits.train.encoding)
    return run, info


def _check_resume(spec: Spec, run: Path, allow_config_change: bool
                  ) -> tuple[Path, dict, str, str]:
    """A stopped run's directory, run.json, the config to go on with and its diff from
    the run's, checked for resuming (status, config); nothing is written yet."""
    from nnrun.train.fit_loop import check_resumable

    if not rundir.is_run_dir(run):
        raise ConfigError("not a run directory (no config.yaml in it)", where=str(run))
    run = run.resolve()
    # killed while its files were being written, before run.json: it trains from the start
    started = (run / "run.json").exists() or (run / "checkpoints" / "last.h5").exists()
    info = rundir.read_run_json(run) if started else {}
    new = dump_yaml(spec.resolved)
    diff = check_resumable(run, info, (run / "config.yaml").read_text(encoding="utf-8"),
                           new, allow_config_change)
    return run, info, new, diff


def _resumed(before: dict, argv: list[str], diff: str, *, epoch: int) -> list[dict]:
    """run.json's `resumed` list with this resume added."""
    return [*before.get("resumed", []), {
        "argv": argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "after_status": before.get("status"), "from_epoch": epoch,
        "config_diff": diff or None}]


def _mark_resumed(run: Path, info: dict, argv: list[str], config: str, diff: str,
                  epoch: int) -> None:
    """The run's files once its checkpoint has loaded: what a killed process left
    half-written removed, the config (if changed), run.json "running" again."""
    for folder in (run, run / "checkpoints"):
        remove_temporaries(folder)
    if diff:
        rundir.write_atomic(run / "config.yaml", config)
    info.update(status="running", stop_reason=None, resumed=_resumed(info, argv, diff,
                                                                     epoch=epoch),
                **rundir.process_info())
    rundir.write_json(run / "run.json", info)


def _restart(spec: Spec, model, run: Path, before: dict, argv: list[str], diff: str,
             splits: Splits) -> dict:
    """A run stopped before its first checkpoint, resumed: trained from the start in its
    own directory (the same seed: the same numbers as a run never stopped)."""
    for folder in (run, run / "checkpoints"):
        remove_temporaries(folder)
    _, info = start_run(spec, model, run.parent, argv, splits, run=run)
    info["resumed"] = _resumed(before, argv, diff, epoch=0)
    return info


def train(spec: Spec, *, runs_root: Path = Path("runs"), argv: list[str] | None = None,
          stream: TextIO = sys.stdout, quiet: bool = False, resume: Path | None = None,
          allow_config_change: bool = False) -> TrainResult:
    """Train as the config says, writing the run directory as training goes. With
    `resume` (a run directory), continue that run from its last.h5 exactly; a config
    other than the run's is refused (with the diff) unless `allow_config_change`.
    With `distributed:`, this process joins the others first (nnrun/train/distributed.py);
    only process 0 writes the run directory and prints."""
    from nnrun.train import distributed

    faults.point("start")
    distributed.initialize(spec.distributed, spec.where(("distributed",)))
    with interrupt_guard(stream) as guard:
        if spec.distributed is None or distributed.is_writer():
            return _train(spec, guard, runs_root=runs_root, argv=argv, stream=stream,
                          quiet=quiet, resume=resume, allow_config_change=allow_config_change)
        if resume is not None:
            raise ConfigError("--resume with distributed: is not supported yet (start "
                              "again)", where=spec.where(("distributed",)))
        with distributed.runs_root_for(runs_root) as scratch:
            return _train(spec, guard, runs_root=scratch, argv=argv, stream=stream,
                          quiet=True)


def _train(spec: Spec, guard: interrupts.Interrupts, *, runs_root: Path,
           argv: list[str] | None, stream: TextIO, quiet: bool, resume: Path | None = None,
           allow_config_change: bool = False) -> TrainResult:
    from nnrun.runs.report import EpochReporter
    from nnrun.train.callbacks import check_monitors
    from nnrun.train.checkpoint import Checkpointer
    from nnrun.train.fit_loop import CallbackRunner, best_monitor, fit_loop, load_resume_state
    from nnrun.train.fitter import Fitter

    # Compile settings and (with an input shape in the config) the model are checked,
    # every problem at once, before any data is read: what `nnrun check` does.
    model = checked_model(spec)
    placement = _placement(spec)
    check_file_features(spec, model)
    splits = load_data(spec, num_classes=output_classes(model))
    guard.check()   # a signal before the run exists ends it here (or at once: the CLI)
    model = model or build(spec, splits.train.x)
    check_features(model, splits.train.x, splits.train.source)
    obj = objective_for(spec, model, splits.train.y)
    check_targets(model, obj, splits.train, "training")
    val = (splits.validation.x, splits.validation.y) if splits.validation else None
    if val is not None:
        check_features(model, val[0], splits.validation.source)
        check_targets(model, obj, splits.validation, "validation")
    notes = likely_mistakes(spec, model, obj, splits)
    for note in notes if not quiet else ():
        print(note, file=stream, flush=True)
    fitter = Fitter(model, obj, spec.compile.optimizer, seed=spec.seed,
                    batch_size=spec.fit.batch_size, shuffle=spec.fit.shuffle,
                    x=splits.train.x, y=splits.train.y, val=val,
                    sample_weight=splits.train.sample_weight, placement=placement,
                    monitor=best_monitor(spec.fit.callbacks, val is not None))
    keys = [*obj.keys(), *([f"val_{k}" for k in obj.keys()] if val else [])]
    check_monitors(spec.fit.callbacks, keys, spec.where)
    argv = list(argv or sys.argv)
    fresh = True   # trained from the start: a new run, or one stopped before last.h5
    if resume is not None:
        run, info, config, diff = _check_resume(spec, Path(resume), allow_config_change)
        fresh = not (run / "checkpoints" / "last.h5").is_file()
    start = start_weights(spec, model) if fresh else None
    guard.check()
    if fresh:
        with guard.creating_run():
            if resume is None:
                run, info = start_run(spec, model, runs_root, argv, splits)
            else:
                info = _restart(spec, model, run, info, argv, diff, splits)
            info["data_parallel"] = placement.describe()
            info["warnings"] = notes
        if start is not None:
            info["initial_weights"] = start.record()
            if start.missing and not quiet:
                print(start.note(), file=stream)
    runner = CallbackRunner(spec, run / "checkpoints")
    monitor, mode = runner.best_monitor(val is not None)
    checkpointer = Checkpointer(run / "checkpoints", monitor=monitor, mode=mode,
                                attrs={"seed": spec.seed, "config": dump_yaml(spec.resolved)})
    checkpointer.on_last = lambda: runner.last_attrs(fitter)
    if not fresh:   # read before anything of the run is changed
        ts = load_resume_state(run, fitter, checkpointer, runner)
        with guard.creating_run():
            _mark_resumed(run, info, argv, config, diff, fitter.epoch)
    result = TrainResult(run, epochs=spec.fit.epochs, warnings=notes)
    reporter = EpochReporter(spec.fit.epochs, stream, quiet=quiet)
    log = None
    forget = guard.on_abort(lambda name: _aborted(run, info, fitter, name))
    try:
        if fresh:
            ts = fitter.initial_state()
            if start is not None:
                ts = start.apply(ts)
            checkpointer.flush(ts, 0)  # the initial weights: a loadable last.h5 from the start
        log = rundir.MetricsLog(run, keys, resume_after=None if fresh else fitter.epoch)
        faults.point("compile")
        ts = fit_loop(spec, fitter, ts, log, checkpointer, reporter, guard, result, runner)
    except KeyboardInterrupt:
        result.status, result.stop_reason, result.exit_code = "interrupted", "aborted", 130
    except BaseException as exc:
        result.status, result.stop_reason = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        guard.finishing = True
        forget()
        reporter.close(result.outcome, fitter.epoch)
        if log is not None:
            log.close()
        finish_run(run, info, fitter, result)
        draw_curves(run, stream)
    result.best_metrics = finish.epoch_metrics(run, result.best)
    return result


def likely_mistakes(spec: Spec, model, obj, splits: Splits) -> list[str]:
    """The `warning:` lines of nnrun/data/mistakes.py for this config and its data."""
    from nnrun.data.mistakes import likely_mistakes as find

    single = len(model.output_names) == 1 and obj.heads is None
    data = spec.data
    split = None
    if data.validation_split:
        split = "stratified" if data.stratify else "shuffled" if data.shuffle_split \
            else "last"
    x_method = (data.preprocess or {}).get("x")
    return find(splits.train, splits.validation, loss=obj.loss.name if single else None,
                width=int(model.output_shape[-1]) if single and model.output_shape else None,
                split=split, preprocess_x=x_method not in (None, "none"))


def _aborted(run: Path, info: dict, fitter, name: str) -> None:
    """run.json when a second signal aborts mid-epoch: interrupted, resumable from the
    last checkpoint written."""
    info.update(status="interrupted", epochs_completed=fitter.epoch,
                stop_reason=f"aborted by a second {name} during epoch {fitter.epoch + 1} "
                            "(resume continues from checkpoints/last.h5)",
                finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), best=best_of(run))
    rundir.write_json(run / "run.json", info)


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

        # device_put: jnp.asarray would compile a program per weight shape
        params = {**ts.params, **jax.device_put(self.params)}
        state = {**ts.state, **jax.device_put(self.state)}
        return ts._replace(params=params, state=state)

    def note(self) -> str:
        return (f"note: model.weights {self.path}: no weights for layer"
                f"{'s' if len(self.missing) > 1 else ''} {', '.join(self.missing)}; "
                "they keep their initialization")

    def record(self) -> dict:
        return {"path": self.path, "loaded": self.loaded, "initialized": self.missing}


def model_weights_file(spec: Spec) -> Path:
    """The checkpoint model.weights names: the file, or a run directory's best.h5."""
    path = Path(spec.model.weights)
    if path.is_dir() and rundir.is_run_dir(path):
        path = path / "checkpoints" / "best.h5"
    return path


def start_weights(spec: Spec, model) -> StartWeights | None:
    """The weights model.weights names (a checkpoint .h5, or a run directory: its
    best.h5), matched to the model's layers by name; None without model.weights. Shapes
    that differ are a ConfigError at model.weights naming the layers."""
    from nnrun.config.errors import CheckpointError
    from nnrun.train.checkpoint import read_layer_weights

    if spec.model.weights is None:
        return None
    path = model_weights_file(spec)
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
    failure to draw is a warning, never the run's error. Rendered by the curves helper
    where `nnrun train` started one (nnrun/runs/curves_helper.py)."""
    from nnrun.runs.curves_helper import plot_learning_curves

    try:
        plot_learning_curves(run)
    except ConfigError:   # no epoch completed: nothing to draw
        pass
    except Exception as exc:  # noqa: BLE001 - a picture must not fail a run
        print(f"warning: learning curves not drawn: {exc}", file=stream)


def best_of(run: Path) -> dict | None:
    """The run's best epoch, its monitor and value: what checkpoints/best.h5 holds (the
    one definition run.json, `nnrun runs`, `evaluate` and the finish lines show)."""
    from nnrun.runs.rundir import best_record

    return best_record(run / "checkpoints" / "best.h5")


def finish_run(run: Path, info: dict, fitter, result: TrainResult) -> None:
    result.best, result.epochs_completed = best_of(run), fitter.epoch
    info.update(status=result.status, stop_reason=result.stop_reason,
                epochs_completed=fitter.epoch, best=result.best,
                finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                timing={"first_epoch_seconds": fitter.first_epoch_seconds,
                        "mean_epoch_seconds": (float(np.mean(fitter.epoch_seconds))
                                               if fitter.epoch_seconds else None)},
                final={k: v[-1] for k, v in result.history.items()})
    rundir.write_json(run / "run.json", info)
