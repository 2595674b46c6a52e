"""What every command does before its work: load and check the config (the check
`nnrun check` runs), build the model, load the data, and match the data to the model
(features to inputs, targets to outputs and the loss). Public through nnrun.api."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnrun.config.errors import ConfigError, DataError
from nnrun.config.spec import CompileSpec, DataSpec, Spec, load_spec
from nnrun.config.yamlsrc import Origins
from nnrun.data import sources as data_mod
from nnrun.data.splitting import prepare_splits

# ---------------------------------------------------------------- data

@dataclass
class Splits:
    train: data_mod.Dataset | None
    validation: data_mod.Dataset | None
    test: data_mod.Dataset | None
    preprocessing: Any = None   # nnrun.data.preprocess.Preprocessing, saved in the run

    def files(self) -> list[dict]:
        out = []
        for ds in (self.train, self.validation, self.test):
            for rec in (ds.files if ds is not None else []):
                if rec not in out:
                    out.append(rec)
        return out


# Generated (builtin) data of each split draws from its own seed unless it names one.
SPLIT_SEED_OFFSET = {"train": 0, "validation": 1, "test": 2}


@contextlib.contextmanager
def _located(spec: Spec, key: str):
    """A source's ConfigError located at data.<key>... in the config."""
    try:
        yield
    except ConfigError as exc:
        inner = tuple(exc.where.split(".")) if exc.where else ()
        where = spec.origins.where(("data", key, *inner), key=True)
        raise ConfigError(exc.message, where=where) from None


def _load(spec: Spec, key: str, encoding: dict | None = None) -> data_mod.Dataset | None:
    source = getattr(spec.data, key)
    if source is None:
        return None
    seed = spec.seed + SPLIT_SEED_OFFSET[key]
    with _located(spec, key):
        from nnrun.data.sources import load_streamed

        streamed = load_streamed(source, spec.base_dir, spec.data.stream)
        if streamed is not None:
            return streamed
        return data_mod.load_source(source, seed=seed, base_dir=spec.base_dir,
                                    encoding=encoding)


def check_file_features(spec: Spec, model) -> None:
    """Each array file's features matched to the model from the file's headers alone,
    before any of it is read or decompressed (a small .npz that inflates to gigabytes
    of the wrong shape is refused at once). Tables and builtins are matched once loaded.
    First, every data file there and naming its columns (`data_file_problems`)."""
    from nnrun.data.sources import peek_features

    problems = data_file_problems(spec)
    if problems:
        raise DataError(problems[0][1], where=problems[0][0], problems=problems)
    for key in SPLIT_SEED_OFFSET:
        source = getattr(spec.data, key)
        if source is None or model is None:
            continue
        with _located(spec, key):
            x = peek_features(source, spec.base_dir)
        if x is not None:
            check_features(model, x, str(source["path"]))


def data_file_problems(spec: Spec) -> list[tuple[str | None, str]]:
    """The data files the config names, each there, and a table's header (its first line,
    nothing more) holding the columns the config names: every problem, located."""
    return [(spec.origins.where(("data", key, *inner)), message) for key in SPLIT_SEED_OFFSET
            for inner, message in data_mod.file_problems(getattr(spec.data, key),
                                                         spec.base_dir)]


def load_data(spec: Spec, *, need_train: bool = True, preprocessing=None,
              num_classes=None, encoding: dict | None = None) -> Splits:
    """Load train/validation/test as the config says, then split, preprocess and weigh
    them (nnrun.data.splitting.prepare_splits; `preprocessing`: a run's, else fitted on the
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
    from nnrun.nn import losses
    from nnrun.nn.optimizers import resolve_optimizer

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
    from nnrun.nn.metrics import resolve_metric

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
    from nnrun.nn.builder import make_layer

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
    from nnrun.nn.builder import build_model

    x_shape = None
    if x is not None and spec.model.input_shape is None and not spec.model.is_graph:
        x_shape = tuple(x.shape[1:]) if not isinstance(x, dict) else None
    model = build_model(spec.model, input_shape=x_shape, where=spec.where,
                        batch_size=spec.fit.batch_size)
    if spec.compile.precision != "float32":   # compile.precision (nnrun/nn/precision.py)
        from nnrun.nn.precision import get_policy

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
    from nnrun.train.epoch import Objective

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

    from nnrun.train.epoch import resolve_objective

    out_shape = (2, *output_shape)
    y_shape = (2, *y.shape[1:])
    try:
        obj = resolve_objective(loss_id, metric_ids, y_shape, out_shape)
    except ConfigError as exc:
        raise ConfigError(exc.message, where=spec.where(("compile",))) from None
    fake_y = jax.ShapeDtypeStruct(y_shape, y.dtype)
    fake_p = jax.ShapeDtypeStruct(out_shape, np.float32)

    def mismatch() -> DataError:
        return DataError(_shape_hint(y, output_shape, loss_id, obj.loss.name, output))

    try:
        got = jax.eval_shape(obj.loss.per_sample, fake_y, fake_p)
        for metric in obj.metrics.values():
            jax.eval_shape(metric.per_sample, fake_y, fake_p)
    except (TypeError, ValueError):
        raise mismatch() from None
    if tuple(got.shape) != (2,) or not _target_shape_fits(obj, y, output_shape):
        raise mismatch()
    return obj


def _target_shape_fits(obj, y: np.ndarray, output_shape) -> bool:
    """Targets must match the output (Keras would broadcast silently); sparse losses take ids."""
    y_dims, out = tuple(y.shape[1:]), tuple(output_shape)
    if obj.loss.name.startswith("sparse"):
        return y_dims in (out[:-1], (*out[:-1], 1))
    return y_dims == out or (out[-1:] == (1,) and y_dims == out[:-1])


def _dims(shape: tuple) -> str:
    """`(None, 3)`; `(None,)` for one value per row."""
    from nnrun.nn.model import format_shape

    return format_shape(shape) if shape else "(None,)"


def _shape_hint(y: np.ndarray, output_shape, loss_id, loss: str,
                output: str | None = None) -> str:
    """Targets that do not fit the output and loss: the shapes as the person knows them
    (never the probe shapes the check traced) and the fix."""
    from nnrun.data.mistakes import shape_advice

    which = f"output {output!r}" if output else "the model output"
    name = loss_id if isinstance(loss_id, str) else loss
    return (f"targets of shape {_dims(tuple(y.shape[1:]))} do not fit {which} "
            f"{_dims(tuple(output_shape))} with loss {name!r}: "
            f"{shape_advice(tuple(y.shape[1:]), tuple(output_shape), loss)}")


def check_features(model, x, source: str) -> None:
    from nnrun.nn.model import format_shape

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
    from nnrun.train.devices import Placement, resolve_devices

    return Placement(resolve_devices(spec.fit.devices, spec.fit.batch_size, spec.where))


def check_targets(model, obj, ds, split: str) -> None:
    """Class ids within the output's classes, binary labels within 0..1 (exit 3)."""
    from nnrun.data.target_checks import check_target_values

    shapes = dict(zip(model.output_names, model.output_shapes)) \
        if len(model.output_names) > 1 else {None: model.output_shape}
    check_target_values(obj, ds.y, shapes, ds.source, split, ds.row_label)


def summary_model(spec: Spec):
    """The model to summarise; loads data only when the config has no input shape."""
    return build(spec, None if _shape_known(spec) else load_data(spec).train.x)


def checked_model(spec: Spec):
    """The optimizer and loss resolved and, when the config gives the input shape, the
    model built (None otherwise) — every problem of both in one ConfigError."""
    problems = compile_problems(spec.compile, spec.origins)
    problems += data_problems(spec.data, spec.origins)
    from nnrun.config.data_spec import preprocess_name_problems

    problems += preprocess_name_problems(spec)
    layers = layer_problems(spec.model.layers, spec.where, spec.fit.batch_size)
    problems += layers
    from nnrun.train.callbacks import callback_problems, schedule_problems

    problems += schedule_problems(spec.fit.callbacks, spec.where)
    problems += callback_problems(spec)
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
    from nnrun.train.callbacks import schedule_problems

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
    validation passed included; with none, a DataError holds the data files' problems."""
    spec = load_checked(config, overrides)
    model = checked_model(spec)
    files = data_file_problems(spec)   # a missing file, a column not in the header: exit 3
    if files:
        raise DataError(files[0][1], where=files[0][0], problems=files)
    if model is None:
        return {"detail": f"{len(spec.model.layers)} layers; the input shape comes from the "
                          "data, so shapes are checked when training starts", "params": None}
    params = sum(sum(c) for c in model.count_params().values())
    return {"detail": f"{len(model.layers)} layers, {params:,} parameters, output "
                      f"{', '.join(str(s) for s in model.output_shapes)}", "params": params}


def summary(spec: Spec, *, expand_nested: bool = False) -> str:
    """The Keras-style summary text."""
    from nnrun.runs.report import summary_text

    return summary_text(summary_model(spec), spec.name, expand_nested=expand_nested)


def summary_dict(spec: Spec) -> dict[str, Any]:
    """The summary as data (for `--json`): layers with output shapes and parameter counts."""
    from nnrun.nn.model import format_shape

    model = summary_model(spec)
    counts = model.count_params()
    layers = [{"name": i.name, "type": i.type, "output_shape": format_shape(i.output_shape),
               "params": sum(counts[i.name]),
               **({"inputs": list(i.inbound)} if spec.model.is_graph else {})}
              for i in model.infos]
    return {"name": spec.name, "layers": layers,
            "total_params": sum(sum(c) for c in counts.values()),
            "non_trainable_params": sum(c[1] for c in counts.values())}
