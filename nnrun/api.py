"""The Python API behind every command: train, evaluate, predict, summary.

The CLI only parses arguments and prints; everything here can be called and
tested from Python.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from nnrun import data as data_mod
from nnrun import rundir
from nnrun.errors import ConfigError, DataError
from nnrun.registry import unknown_name_message
from nnrun.rowsource import is_lazy
from nnrun.spec import CompileSpec, DataSpec, Spec, dump_yaml, load_spec, model_to_dict
from nnrun.splitting import (
    PREPROCESSING_FILE,
    output_classes,
    prepare_splits,
    preprocess_input,
    run_preprocessing,
)
from nnrun.tables import ENCODING_FILE, read_encoding
from nnrun.yamlsrc import Origins

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


# ---------------------------------------------------------------- data

@dataclass
class Splits:
    train: data_mod.Dataset | None
    validation: data_mod.Dataset | None
    test: data_mod.Dataset | None
    preprocessing: Any = None   # nnrun.preprocess.Preprocessing, saved in the run

    def files(self) -> list[dict]:
        out = []
        for ds in (self.train, self.validation, self.test):
            for rec in (ds.files if ds is not None else []):
                if rec not in out:
                    out.append(rec)
        return out


# Generated (builtin) data of each split draws from its own seed unless it names one.
SPLIT_SEED_OFFSET = {"train": 0, "validation": 1, "test": 2}


def _load(spec: Spec, key: str, encoding: dict | None = None) -> data_mod.Dataset | None:
    source = getattr(spec.data, key)
    if source is None:
        return None
    seed = spec.seed + SPLIT_SEED_OFFSET[key]
    try:
        from nnrun.rowsource import load_streamed

        streamed = load_streamed(source, spec.base_dir, spec.data.stream)
        if streamed is not None:
            return streamed
        return data_mod.load_source(source, seed=seed, base_dir=spec.base_dir,
                                    encoding=encoding)
    except ConfigError as exc:
        inner = tuple(exc.where.split(".")) if exc.where else ()
        where = spec.origins.where(("data", key, *inner), key=True)
        raise ConfigError(exc.message, where=where) from None


def load_data(spec: Spec, *, need_train: bool = True, preprocessing=None,
              num_classes=None, encoding: dict | None = None) -> Splits:
    """Load train/validation/test as the config says, then split, preprocess and weigh
    them (nnrun.splitting.prepare_splits; `preprocessing`: a run's, else fitted on the
    training split)."""
    refit = preprocessing is None and spec.data.preprocess is not None
    train = _load(spec, "train") if (need_train or spec.data.validation_split or refit) \
        else None
    if need_train and train is None:
        raise ConfigError("no training data: add data.train, e.g. {builtin: xor}",
                          where=spec.where(("data",)))
    if train is not None and train.y is None:
        raise DataError(f"{train.source}: training data has no targets (give target: / y:)")
    # A table's encoding (vocabularies, fill values): the training source's, or the run's
    # (`encoding`, its data_encoding.json), for validation and test alike.
    encoding = encoding or (train.encoding if train is not None else None)
    validation = _load(spec, "validation", encoding)
    train, validation, test, pre = prepare_splits(
        spec, train, validation, _load(spec, "test", encoding), preprocessing=preprocessing,
        num_classes=num_classes)
    return Splits(train, validation, test, pre)


# ---------------------------------------------------------------- model

def check_compile(spec: Spec) -> None:
    """Resolve the optimizer and loss before any data is read: all problems, located."""
    problems = compile_problems(spec.compile, spec.origins)
    if problems:
        raise ConfigError(problems[0][1], where=problems[0][0], problems=problems)


def compile_problems(comp: CompileSpec, origins: Origins) -> list[tuple[str | None, str]]:
    """The optimizer, loss(es) and metric names resolved: every problem, located."""
    from nnrun import losses
    from nnrun.optimizers import resolve_optimizer

    checks = [(("optimizer",), comp.optimizer, resolve_optimizer)]
    loss = comp.loss
    if isinstance(loss, dict) and "name" not in loss:   # one loss per output
        checks += [(("loss", name), ident, losses.get) for name, ident in loss.items()]
    else:
        checks.append((("loss",), loss, losses.get))
    metrics = comp.metrics if isinstance(comp.metrics, dict) else {None: comp.metrics}
    for output, idents in metrics.items():
        head = ("metrics",) if output is None else ("metrics", output)
        checks += [((*head, i), ident, _metric_name) for i, ident in enumerate(idents)]
    problems: list[tuple[str | None, str]] = []
    for path, identifier, resolve in checks:
        if identifier is None:   # missing or of the wrong type: validation said so
            continue
        if path[0] == "loss" and isinstance(identifier, str) and identifier.lower() in (
                "crossentropy", "ce"):
            continue  # resolved from the data's shapes, as Keras does
        try:
            resolve(identifier)
        except ConfigError as exc:
            for where, message in exc.problems:
                inner = (where or "name",) if isinstance(identifier, dict) else ()
                problems.append((origins.where(("compile", *path, *inner), key=True),
                                 message))
    return problems


def _metric_name(identifier) -> None:
    """A metric's name (and parameters) checked; "accuracy" is resolved later, from the
    shapes of the targets and the output, so any shapes do here."""
    from nnrun.metrics import resolve_metric

    resolve_metric(identifier, (2, 1), (2, 1))


def data_problems(data: DataSpec, origins: Origins) -> list[tuple[str | None, str]]:
    """The data sources checked without reading them (builtin names and options, file
    types and keys): every problem, located."""
    problems = []
    for key in ("train", "validation", "test"):
        source = getattr(data, key)
        if source is None:
            continue
        try:
            data_mod.check_source(source)
        except ConfigError as exc:
            inner = tuple(exc.where.split(".")) if exc.where else ()
            problems.append((origins.where(("data", key, *inner), key=True), exc.message))
    return problems


def layer_problems(layers, where, batch_size: int | None = None
                   ) -> list[tuple[str | None, str]]:
    """Every layer made (its activation, initializer, regularizer and constraint names
    resolved), nested models' layers too, without shapes: every problem, located."""
    from nnrun.model import make_layer

    problems: list[tuple[str | None, str]] = []
    for lspec in layers:
        try:
            make_layer(lspec, where, batch_size)
        except ConfigError as exc:
            problems += exc.problems
        inner = lspec.args.get("layers") if lspec.type == "Sequential" else None
        if lspec.type == "Model" and lspec.args.get("graph") is not None:
            inner = lspec.args["graph"].layers
        problems += layer_problems(inner or (), where, batch_size)
    return problems


def build(spec: Spec, x=None):
    """Build the model; the input shape comes from the spec or else the data `x`."""
    from nnrun.model import build_model

    x_shape = None
    if x is not None and spec.model.input_shape is None and not spec.model.is_graph:
        x_shape = tuple(x.shape[1:]) if not isinstance(x, dict) else None
    model = build_model(spec.model, input_shape=x_shape, where=spec.where,
                        batch_size=spec.fit.batch_size)
    if spec.compile.precision != "float32":   # compile.precision (nnrun/precision.py)
        from nnrun.precision import get_policy

        model.set_policy(get_policy(spec.compile.precision))
    return model


def _shape_known(spec: Spec) -> bool:
    """Whether the model can be built before any data is read."""
    return spec.model.input_shape is not None or spec.model.is_graph


def objective_for(spec: Spec, model, y):
    """Loss and metrics for the model's output(s) and these targets (for several outputs
    a mapping of output names to arrays); a mismatch is a data error."""
    if len(model.output_names) == 1:
        return _objective_for(spec, model, y, spec.compile.loss, spec.compile.metrics,
                              model.output_shape)
    from nnrun.trainer import Objective

    given = sorted(y) if isinstance(y, dict) else []
    if given != sorted(model.output_names):
        raise DataError(f"the model's outputs are {', '.join(model.output_names)}; the "
                        f"targets are {', '.join(given) or 'one unnamed array'} (map them in "
                        "the source: y: {output name: array name})")
    heads = {}
    for name, shape in zip(model.output_names, model.output_shapes):
        loss, metrics, weight = spec.compile.for_output(name)
        heads[name] = (_objective_for(spec, model, y[name], loss, metrics, shape, name), weight)
    first = next(iter(heads.values()))[0]
    return Objective(first.loss, first.metrics, heads=heads)


def _objective_for(spec: Spec, model, y: np.ndarray, loss_id, metric_ids, output_shape,
                   output: str | None = None):
    import jax

    from nnrun.trainer import resolve_objective

    out_shape = (2, *output_shape)
    y_shape = (2, *y.shape[1:])
    try:
        obj = resolve_objective(loss_id, metric_ids, y_shape, out_shape)
    except ConfigError as exc:
        raise ConfigError(exc.message, where=spec.where(("compile",))) from None
    fake_y = jax.ShapeDtypeStruct(y_shape, y.dtype)
    fake_p = jax.ShapeDtypeStruct(out_shape, np.float32)

    def hint(detail: str) -> str:
        return _shape_hint(y, output_shape, loss_id, detail, output)

    try:
        got = jax.eval_shape(obj.loss.per_sample, fake_y, fake_p)
        for metric in obj.metrics.values():
            jax.eval_shape(metric.per_sample, fake_y, fake_p)
    except (TypeError, ValueError) as exc:
        raise DataError(hint(str(exc).splitlines()[0])) from None
    if tuple(got.shape) != (2,):
        raise DataError(hint(f"per-sample loss has shape {got.shape}"))
    _check_target_shape(obj, y, output_shape, hint)
    return obj


def _check_target_shape(obj, y: np.ndarray, output_shape, hint) -> None:
    """Targets must match the output (Keras would broadcast silently); sparse losses take ids."""
    y_dims, out = tuple(y.shape[1:]), tuple(output_shape)
    if obj.loss.name.startswith("sparse"):
        ok = y_dims in (out[:-1], (*out[:-1], 1))
        need = f"integer class ids of shape {_dims(out[:-1])}"
    else:
        ok = y_dims == out or (out[-1:] == (1,) and y_dims == out[:-1])
        need = f"shape {_dims(out)}"
    if not ok:
        extra = " (integer labels? use sparse_categorical_crossentropy)" \
            if len(y_dims) <= 1 and out[-1] > 1 else ""
        raise DataError(hint(f"expected targets of {need}{extra}"))


def _dims(shape: tuple) -> str:
    from nnrun.model import format_shape

    return format_shape(shape)


def _shape_hint(y: np.ndarray, output_shape, loss_id, detail: str,
                output: str | None = None) -> str:
    from nnrun.model import format_shape

    which = f"output {output!r}" if output else "the model output"
    return (f"targets of shape {format_shape(y.shape[1:])} do not fit {which} "
            f"{format_shape(output_shape)} with loss {loss_id!r}: {detail}")


def _check_features(model, x, source: str) -> None:
    from nnrun.model import format_shape

    if len(model.input_names) > 1 or isinstance(x, dict):
        given = sorted(x) if isinstance(x, dict) else []
        if given != sorted(model.input_names):
            raise DataError(f"{source}: the model's inputs are {', '.join(model.input_names)}; "
                            f"the data give {', '.join(given) or 'one unnamed array'} (map "
                            "them in the source: x: {input name: array name})")
        for name in model.input_names:
            if tuple(x[name].shape[1:]) != model.input_shapes[name]:
                raise DataError(f"{source}: input {name!r} has shape "
                                f"{format_shape(x[name].shape[1:])}, the model expects "
                                f"{format_shape(model.input_shapes[name])}")
        return
    if tuple(x.shape[1:]) != tuple(model.input_shape):
        raise DataError(f"{source}: features have shape {format_shape(x.shape[1:])}, the "
                        f"model expects {format_shape(model.input_shape)}")


def _placement(spec: Spec):
    """The devices `fit.devices` picks (data parallelism), checked before data is read."""
    from nnrun.parallel import Placement, resolve_devices

    return Placement(resolve_devices(spec.fit.devices, spec.fit.batch_size, spec.where))


def _check_targets(model, obj, ds, split: str) -> None:
    """Class ids within the output's classes, binary labels within 0..1 (exit 3)."""
    from nnrun.target_checks import check_target_values

    shapes = dict(zip(model.output_names, model.output_shapes)) \
        if len(model.output_names) > 1 else {None: model.output_shape}
    check_target_values(obj, ds.y, shapes, ds.source, split)


# ---------------------------------------------------------------- training

@dataclass
class TrainResult:
    run_dir: Path
    history: dict[str, list[float]] = field(default_factory=dict)
    status: str = "finished"
    stop_reason: str | None = None
    exit_code: int = 0


class _StopFlag:
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


def _start_run(spec: Spec, model, runs_root: Path, argv: list[str], splits: Splits,
               run: Path | None = None) -> tuple:
    from nnrun.report import summary_text

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
    from nnrun.fitting import check_resumable

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
    With `distributed:`, this process joins the others first (nnrun/distributed.py);
    only process 0 writes the run directory and prints."""
    from nnrun import distributed

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
    from nnrun.callbacks import check_monitors
    from nnrun.checkpoint import Checkpointer
    from nnrun.fitting import CallbackRunner, fit_loop, load_resume_state
    from nnrun.report import EpochReporter
    from nnrun.trainer import Fitter

    # Compile settings and (with an input shape in the config) the model are checked,
    # every problem at once, before any data is read: what `nnrun check` does.
    model = checked_model(spec)
    placement = _placement(spec)
    splits = load_data(spec, num_classes=output_classes(model))
    model = model or build(spec, splits.train.x)
    _check_features(model, splits.train.x, splits.train.source)
    obj = objective_for(spec, model, splits.train.y)
    _check_targets(model, obj, splits.train, "training")
    val = (splits.validation.x, splits.validation.y) if splits.validation else None
    if val is not None:
        _check_features(model, val[0], splits.validation.source)
        _check_targets(model, obj, splits.validation, "validation")
    fitter = Fitter(model, obj, spec.compile.optimizer, seed=spec.seed,
                    batch_size=spec.fit.batch_size, shuffle=spec.fit.shuffle,
                    x=splits.train.x, y=splits.train.y, val=val,
                    sample_weight=splits.train.sample_weight, placement=placement)
    keys = [*obj.keys(), *([f"val_{k}" for k in obj.keys()] if val else [])]
    check_monitors(spec.fit.callbacks, keys, spec.where)
    start = start_weights(spec, model) if resume is None else None
    argv = list(argv or sys.argv)
    if resume is None:
        run, info = _start_run(spec, model, runs_root, argv, splits)
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
        with _StopFlag(stream) as stop:
            ts = fit_loop(spec, fitter, ts, log, checkpointer, reporter, stop, result, runner)
    except KeyboardInterrupt:
        result.status, result.stop_reason, result.exit_code = "interrupted", "aborted", 130
    except BaseException as exc:
        result.status, result.stop_reason = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        reporter.close()
        log.close()
        _finish_run(run, info, fitter, result)
        _draw_curves(run, stream)
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
    from nnrun.checkpoint import read_layer_weights
    from nnrun.errors import CheckpointError

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


def _draw_curves(run: Path, stream: TextIO) -> None:
    """plots/learning_curves.png from metrics.csv, whatever way training ended; a
    failure to draw is a warning, never the run's error."""
    from nnrun.report_charts import plot_learning_curves

    try:
        plot_learning_curves(run)
    except ConfigError:   # no epoch completed: nothing to draw
        pass
    except Exception as exc:  # noqa: BLE001 - a picture must not fail a run
        print(f"warning: learning curves not drawn: {exc}", file=stream)


def _finish_run(run: Path, info: dict, fitter, result: TrainResult) -> None:
    info.update(status=result.status, stop_reason=result.stop_reason,
                epochs_completed=fitter.epoch,
                finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                timing={"first_epoch_seconds": fitter.first_epoch_seconds,
                        "mean_epoch_seconds": (float(np.mean(fitter.epoch_seconds))
                                               if fitter.epoch_seconds else None)},
                final={k: v[-1] for k, v in result.history.items()})
    rundir.write_json(run / "run.json", info)


# ---------------------------------------------------------------- loading a run

def load_trained(spec: Spec, run: Path, checkpoint: str = "best", x=None):
    """Rebuild the model of a run and load its weights: (model, params, state)."""
    import jax

    from nnrun.checkpoint import load_checkpoint

    path = Path(checkpoint)
    if checkpoint in ("best", "last"):
        path = run / "checkpoints" / f"{checkpoint}.h5"
    model = build(spec, x)
    params, state = model.param_shapes()
    params, state, _, _ = load_checkpoint(path, params=params, state=state)
    return model, jax.device_put(params), jax.device_put(state)


def evaluate(spec: Spec, run: Path, *, checkpoint: str = "best") -> dict[str, Any]:
    """Loss and metrics of a trained run on the test data (else validation, else train)."""
    import jax

    from nnrun.trainer import finalize, make_eval

    splits = load_data(spec, need_train=spec.data.test is None,
                       preprocessing=run_preprocessing(run), encoding=read_encoding(run))
    name, ds = next((n, d) for n, d in (("test", splits.test), ("validation", splits.validation),
                                        ("train", splits.train)) if d is not None)
    if ds.y is None:
        raise DataError(f"{ds.source}: evaluation data has no targets")
    model, params, state = load_trained(spec, run, checkpoint, ds.x)
    _check_features(model, ds.x, ds.source)
    obj = objective_for(spec, model, ds.y)
    _check_targets(model, obj, ds, name)
    if is_lazy(ds.x):   # features left on disk (data.stream): read in chunks
        from nnrun.streaming import ChunkedEval

        sums = ChunkedEval(model, obj, ds.x, ds.y, spec.fit.batch_size)(params, state)
    else:
        evaluate_fn = jax.jit(make_eval(model, obj, len(ds), spec.fit.batch_size))
        sums = evaluate_fn(params, state, ds.x, ds.y)
    result = {"run": str(run), "data": name, "source": ds.source, "samples": len(ds),
              "checkpoint": checkpoint, **finalize(obj, sums)}
    report = _classification(spec, model, params, state, ds)
    if report is not None:
        result["classification"] = report
    rundir.write_json(run / "eval.json", result)
    if report is not None:
        from nnrun.report_charts import CONFUSION, plot_confusion_matrix

        plot_confusion_matrix(report["confusion_matrix"], report["classes"],
                              run / "plots" / CONFUSION,
                              title=f"{spec.name}: {name} data, {checkpoint} checkpoint")
    return result


def _classification(spec: Spec, model, params, state, ds) -> dict[str, Any] | None:
    """For a classifier of one output (a class per sample), the per-class report and
    confusion matrix (`nnrun.classify`); None for anything else."""
    from nnrun.classify import classification_report
    from nnrun.trainer import make_predict

    if len(model.output_names) > 1 or len(model.output_shape) != 1:
        return None
    kind = task_kind(spec, int(model.output_shape[0]))
    if kind == "regression":
        return None
    if is_lazy(ds.x):
        from nnrun.streaming import predict_rows

        probs = predict_rows(model, params, state, ds.x, spec.fit.batch_size)
    else:
        probs = np.asarray(make_predict(model, len(ds), spec.fit.batch_size)(
            params, state, ds.x))
    return classification_report(np.asarray(ds.y), probs, kind)


def task_kind(spec: Spec, out_dim: int) -> str:
    """'binary', 'multiclass' or 'regression', from the loss, metrics and last activation."""
    loss = spec.compile.loss if isinstance(spec.compile.loss, str) else \
        spec.compile.loss.get("name", "")
    classification = any(w in loss.lower() for w in ("crossentropy", "hinge", "kl", "kullback")) \
        or any("acc" in str(m) for m in spec.compile.metrics)
    last = spec.model.layers[-1].args.get("activation") if spec.model.layers else None
    if last in ("sigmoid", "softmax"):
        classification = True
    if not classification:
        return "regression"
    return "binary" if out_dim == 1 else "multiclass"


def predict(spec: Spec, run: Path, input_path: Path, output_path: Path, *,
            checkpoint: str = "best", layers: tuple[str, ...] = (),
            top_k: int | None = None) -> dict[str, Any]:
    """Predict for the rows of a CSV/NPY/NPZ file; writes probabilities and classes, or
    with `layers` the outputs of those named layers / nested models / inputs (one array
    to .npy or .csv, several to .npz by name). A CSV input is encoded as the run's
    training table was (data_encoding.json); `top_k`: the k most probable classes too."""
    from nnrun.trainer import make_predict

    data_mod.check_output_path(Path(output_path), top_k)
    if top_k is not None and layers:
        raise ConfigError("--top-k is for the model's predictions, not a layer's output",
                          where="--top-k")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"expected a positive number of classes, got {top_k}",
                          where="--top-k")
    if top_k is not None and _shape_known(spec):
        _check_top_k(spec, build(spec), top_k)   # before any data is read
    encoding = read_encoding(run)
    names = [i.name for i in spec.model.inputs] if spec.model.is_graph else []
    if len(names) > 1:   # several inputs: a .npz with one array per input name
        x = data_mod.load_named_features(Path(input_path), names)
    else:
        x = data_mod.load_features(Path(input_path), drop_columns=_target_columns(spec),
                                   encoding=encoding)
    x = preprocess_input(run, x, str(input_path))
    model, params, state = load_trained(spec, run, checkpoint, x)
    if top_k is not None:
        _check_top_k(spec, model, top_k)
    _check_features(model, x, str(input_path))
    n = data_mod.rows(x)
    if layers:
        known = model.node_names()
        for name in layers:
            if name not in known:
                raise ConfigError(unknown_name_message("layer", name, known), where="--output")
        if is_lazy(x):
            from nnrun.streaming import predict_rows

            out = predict_rows(model, params, state, x, spec.fit.batch_size, tuple(layers))
        else:
            out = make_predict(model, n, spec.fit.batch_size, tuple(layers))(params, state, x)
        arrays = {name: np.asarray(a) for name, a in zip(layers, out)}
        if len(arrays) == 1 and Path(output_path).suffix.lower() != ".npz":
            (only,) = arrays.values()
            flat = Path(output_path).suffix.lower() in (".csv", ".tsv")
            data_mod.write_predictions(Path(output_path), only.reshape(n, -1) if flat else only,
                                       None)
        else:
            data_mod.write_output_arrays(Path(output_path), arrays)
        return {"run": str(run), "rows": n, "output": str(output_path),
                "task": "layers " + ", ".join(layers)}
    if is_lazy(x):   # a large .npy / HDF5 input, read in chunks
        from nnrun.streaming import predict_rows

        out = predict_rows(model, params, state, x, spec.fit.batch_size)
    else:
        out = make_predict(model, n, spec.fit.batch_size)(params, state, x)
    if len(model.output_names) > 1:
        data_mod.write_output_arrays(Path(output_path), dict(zip(model.output_names, out)))
        return {"run": str(run), "rows": n, "output": str(output_path), "task": "outputs"}
    probs = np.asarray(out)
    kind = task_kind(spec, int(np.prod(model.output_shape)))
    classes = None
    if kind == "binary":
        classes = (probs.reshape(n, -1)[:, 0] > 0.5).astype(np.int64)
    elif kind == "multiclass":
        classes = probs.reshape(n, -1).argmax(axis=-1)
    names = (encoding or {}).get("class_names")
    if names and len(names) != _class_count(kind, model):
        names = None   # targets one-hot over other columns: no names for these classes
    data_mod.write_predictions(Path(output_path), probs, classes, names, top_k)
    return {"run": str(run), "rows": n, "output": str(output_path), "task": kind}


def _class_count(kind: str, model) -> int | None:
    if kind == "regression" or len(model.output_names) > 1:
        return None
    return 2 if kind == "binary" else int(np.prod(model.output_shape))


def _check_top_k(spec: Spec, model, k: int) -> None:
    """--top-k K: a classifier of at least K classes, else a ConfigError."""
    count = _class_count(task_kind(spec, int(np.prod(model.output_shapes[0]))), model)
    if count is None:
        raise ConfigError("--top-k is for a classifier of one output; this model is not "
                          "one (its loss, metrics and last activation say so)", where="--top-k")
    if not 1 <= k <= count:
        raise ConfigError(f"expected 1 to {count} (the number of classes), got {k}",
                          where="--top-k")


def _target_columns(spec: Spec) -> list[str]:
    target = (spec.data.train or {}).get("target")
    if isinstance(target, str) and not target.endswith((".npy", ".npz")):
        return [target]
    return list(target) if isinstance(target, list) else []


def summary_model(spec: Spec):
    """The model to summarise; loads data only when the config has no input shape."""
    return build(spec, None if _shape_known(spec) else load_data(spec).train.x)


def checked_model(spec: Spec):
    """The optimizer and loss resolved and, when the config gives the input shape, the
    model built (None otherwise) — every problem of both in one ConfigError."""
    problems = compile_problems(spec.compile, spec.origins)
    problems += data_problems(spec.data, spec.origins)
    from nnrun.spec_data import preprocess_name_problems

    problems += preprocess_name_problems(spec)
    layers = layer_problems(spec.model.layers, spec.where, spec.fit.batch_size)
    problems += layers
    from nnrun.callbacks import schedule_problems

    problems += schedule_problems(spec.fit.callbacks, spec.where)
    model = None
    if _shape_known(spec) and not layers:
        try:
            model = build(spec)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems[0][1], where=problems[0][0], problems=problems)
    return model


def _partial_problems(partial) -> list[tuple[str | None, str]]:
    """For a config that validation rejected, the checks that still apply to its sound
    sections (names of the optimizer, loss, metrics, layers' functions, datasets)."""
    problems = compile_problems(partial.compile, partial.origins) if partial.compile else []
    problems += data_problems(partial.data, partial.origins)
    from nnrun.callbacks import schedule_problems

    problems += schedule_problems(getattr(partial, "callbacks", ()), partial.origins.where)
    return problems + layer_problems(partial.layers, partial.origins.where)


def load_checked(config: str | Path, overrides: tuple[str, ...] = ()) -> Spec:
    """`load_spec`, with the problems `nnrun check` adds for a config that validation
    rejected: the names (optimizer, loss, metrics, layers' functions, datasets) of its
    sound sections — every problem in one ConfigError. Every command loads configs so."""
    try:
        return load_spec(Path(config), overrides)
    except ConfigError as exc:
        partial = getattr(exc, "partial", None)
        more = _partial_problems(partial) if partial is not None else []
        if not more:
            raise
        problems = exc.problems + [p for p in more if p not in exc.problems]
        raise ConfigError(problems[0][1], where=problems[0][0], problems=problems) from None


def check(config: Path, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """`nnrun check`: the config validated, the optimizer, loss, metrics and every
    layer's functions resolved and the model built (every layer's shapes and weights,
    by the layers' pure-Python shape rules) — no data read, nothing compiled, jax not
    imported. A ConfigError holds every problem found, those of the sections
    validation passed included."""
    spec = load_checked(config, overrides)
    model = checked_model(spec)
    if model is None:
        return {"detail": f"{len(spec.model.layers)} layers; the input shape comes from the "
                          "data, so shapes are checked when training starts", "params": None}
    params = sum(sum(c) for c in model.count_params().values())
    return {"detail": f"{len(model.layers)} layers, {params:,} parameters, output "
                      f"{', '.join(str(s) for s in model.output_shapes)}", "params": params}


def summary(spec: Spec, *, expand_nested: bool = False) -> str:
    """The Keras-style summary text."""
    from nnrun.report import summary_text

    return summary_text(summary_model(spec), spec.name, expand_nested=expand_nested)


def summary_dict(spec: Spec) -> dict[str, Any]:
    """The summary as data (for `--json`): layers with output shapes and parameter counts."""
    from nnrun.model import format_shape

    model = summary_model(spec)
    counts = model.count_params()
    layers = [{"name": i.name, "type": i.type, "output_shape": format_shape(i.output_shape),
               "params": sum(counts[i.name]),
               **({"inputs": list(i.inbound)} if spec.model.is_graph else {})}
              for i in model.infos]
    return {"name": spec.name, "layers": layers,
            "total_params": sum(sum(c) for c in counts.values()),
            "non_trainable_params": sum(c[1] for c in counts.values())}


__all__ = ["resolve_target", "load_data", "build", "train", "evaluate", "predict", "summary",
           "summary_dict", "TrainResult"]
