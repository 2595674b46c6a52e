"""Using a trained run: `evaluate` (loss, metrics, the classification report) and
`predict` (probabilities, classes, top-k, layer outputs). Public through nnrun.api."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from nnrun.api.prepare import (
    _shape_known,
    build,
    check_features,
    check_targets,
    load_data,
    objective_for,
)
from nnrun.config.errors import ConfigError, DataError
from nnrun.config.registry import unknown_name_message
from nnrun.config.spec import Spec
from nnrun.data import sources as data_mod
from nnrun.data.arrays import rows as count_rows
from nnrun.data.rowsource import is_lazy
from nnrun.data.splitting import preprocess_input, run_preprocessing
from nnrun.data.tables import input_header, read_encoding
from nnrun.runs import predictions, rundir

# ---------------------------------------------------------------- loading a run

def load_trained(spec: Spec, run: Path | None, checkpoint: str = "best", x=None):
    """Rebuild the model of a run and load its weights: (model, params, state). With no
    run (`run` None), a config's `model.weights` (e.g. an imported Keras model's)."""
    import jax

    from nnrun.train.checkpoint import load_checkpoint

    path = weights_path(spec, run, checkpoint)
    model = build(spec, x)
    if checkpoint_label(run, checkpoint) == "model.weights":
        params, state = _model_weights(spec, model)
    else:
        params, state = model.param_shapes()
        params, state, _, _ = load_checkpoint(path, params=params, state=state)
    return model, jax.device_put(params), jax.device_put(state)


def _model_weights(spec: Spec, model) -> tuple[dict, dict]:
    """A config's model.weights as training starts from them (layers matched by name,
    errors at model.weights, exit 2), every layer's: with no run, none may be left to
    its initializer."""
    from nnrun.api.training import start_weights

    start = start_weights(spec, model)
    if start.missing:
        raise ConfigError(f"{start.path} has no weights for {', '.join(start.missing)}; "
                          "with no run, every layer needs its weights: train it first",
                          where=spec.where(("model", "weights")))
    return start.params, start.state


def run_input_shape(spec: Spec, run: Path | None) -> list | None:
    """The input shape a run's data gave (its model.json), for a config that leaves the
    shape to the data; None when the config gives it, for a graph, and with no run or no
    readable model.json (building the model then says the shape is unknown)."""
    if spec.model.input_shape is not None or spec.model.is_graph or run is None:
        return None
    try:
        shape = json.loads((run / "model.json").read_text(encoding="utf-8"))["model"][
            "input_shape"]
        return [int(d) for d in shape]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def weights_path(spec: Spec, run: Path | None, checkpoint: str) -> Path:
    """The checkpoint file `checkpoint` names: "best" / "last" in the run's
    checkpoints/, else a file's path. A config with no run has only its model.weights
    (what "best" means for it)."""
    if checkpoint not in ("best", "last"):
        return Path(checkpoint)
    if run is not None:
        return run / "checkpoints" / f"{checkpoint}.h5"
    if checkpoint == "last" or spec.model.weights is None:
        raise ConfigError(f"no {checkpoint}.h5: this config has no run yet, only the weights "
                          f"its model.weights names ({spec.model.weights}); leave out "
                          f"--checkpoint, or train it first", where="--checkpoint")
    from nnrun.api.training import model_weights_file

    return model_weights_file(spec)


def checkpoint_label(run: Path | None, checkpoint: str) -> str:
    """What `checkpoint` named: "model.weights" for a config with no run (its default),
    else as given (best, last or a file)."""
    return "model.weights" if run is None and checkpoint == "best" else checkpoint


def fitted_pipeline(spec: Spec, run: Path | None) -> tuple[Any, dict | None]:
    """(preprocessing, table encoding) that features go through: the run's saved ones; with
    no run, fitted on the config's training data as `nnrun train` fits them (none when
    the config names no training data)."""
    if run is not None:
        return run_preprocessing(run), read_encoding(run)
    train = spec.data.train or {}
    table = str(train.get("path", "")).lower().endswith((".csv", ".tsv"))
    if spec.data.preprocess is None and not table:
        return None, None   # nothing is fitted: no data to read
    if not train:
        raise ConfigError("preprocess: is fitted on the training data, and this config "
                          "has none and no run: add data.train, or train it first",
                          where=spec.where(("data", "preprocess")))
    splits = load_data(spec)
    return splits.preprocessing, splits.train.encoding


def checkpoint_epoch(spec: Spec, run: Path | None, checkpoint: str) -> int | None:
    """A checkpoint's `epoch` attribute: for best.h5 the epoch of its weights, the run's
    best epoch as run.json's `best` and `nnrun runs` show it; for last.h5 the epochs
    trained (the weights of another epoch with EarlyStopping's restore_best_weights)."""
    from nnrun.runs.rundir import best_record

    record = best_record(weights_path(spec, run, checkpoint))
    return None if record is None else record["epoch"]


def evaluate(spec: Spec, run: Path | None, *, checkpoint: str = "best") -> dict[str, Any]:
    """Loss and metrics of a trained run on the test data (else validation, else train);
    saved in the run's eval.json. With no run, of the config's model.weights; saves nothing."""
    name, ds = evaluation_data(spec, run)
    model, params, state = load_trained(spec, run, checkpoint, ds.x)
    check_features(model, ds.x, ds.source)
    obj = objective_for(spec, model, ds.y)
    check_targets(model, obj, ds, name)
    result = {"run": None if run is None else str(run), "data": name, "source": ds.source,
              "samples": len(ds), "checkpoint": checkpoint_label(run, checkpoint),
              "weights": str(weights_path(spec, run, checkpoint)),
              "checkpoint_epoch": checkpoint_epoch(spec, run, checkpoint) if run else None,
              **evaluation_logs(model, obj, params, state, ds, spec.fit.batch_size)}
    report = _classification(spec, model, params, state, ds)
    if report is not None:
        result["classification"] = report
    if run is None:
        return result
    rundir.write_json(run / "eval.json", result)
    if report is not None:
        from nnrun.runs.charts import CONFUSION, plot_confusion_matrix

        plot_confusion_matrix(report["confusion_matrix"], report["classes"],
                              run / "plots" / CONFUSION,
                              title=f"{spec.name}: {name} data, {checkpoint} checkpoint")
    return result


def evaluation_data(spec: Spec, run: Path | None) -> tuple[str, Any]:
    """The split evaluate reads: test, else validation, else train (name, Dataset),
    through the run's saved preprocessing and table encoding (with no run, fitted on the
    training data as `nnrun train` fits them)."""
    # with no run, load_data fits preprocessing and encoding on the training split itself
    pre, encoding = fitted_pipeline(spec, run) if run is not None else (None, None)
    splits = load_data(spec, need_train=spec.data.test is None or (
        run is None and bool(spec.data.train)), preprocessing=pre, encoding=encoding)
    name, ds = next((n, d) for n, d in (("test", splits.test), ("validation", splits.validation),
                                        ("train", splits.train)) if d is not None)
    if ds.y is None:
        raise DataError(f"{ds.source}: evaluation data has no targets")
    return name, ds


def evaluation_logs(model, obj, params, state, ds, batch_size: int) -> dict[str, float]:
    """Loss and metrics (Keras's names) of weights on a dataset, batch by batch; features
    left on disk (data.stream) are read in chunks."""
    import jax

    from nnrun.train.epoch import finalize, make_eval

    if is_lazy(ds.x):
        from nnrun.train.streaming import ChunkedEval

        sums = ChunkedEval(model, obj, ds.x, ds.y, batch_size)(params, state)
    else:
        sums = jax.jit(make_eval(model, obj, len(ds), batch_size))(params, state, ds.x, ds.y)
    return finalize(obj, sums)


def run_predict(model, params, state, x, batch_size: int, names: tuple[str, ...] = ()):
    """The model's outputs (a tuple of them for several outputs, or with `names` those
    layers' outputs) for every row of `x`, batch by batch; a large file in chunks."""
    from nnrun.train.epoch import make_predict

    if is_lazy(x):
        from nnrun.train.streaming import predict_rows

        return predict_rows(model, params, state, x, batch_size, names)
    return make_predict(model, count_rows(x), batch_size, names)(params, state, x)


def _classification(spec: Spec, model, params, state, ds) -> dict[str, Any] | None:
    """For a classifier of one output (a class per sample), the per-class report and
    confusion matrix (`nnrun.runs.classify`); None for anything else."""
    from nnrun.runs.classify import classification_report

    if len(model.output_names) > 1 or len(model.output_shape) != 1:
        return None
    kind = task_kind(spec, int(model.output_shape[0]))
    if kind == "regression":
        return None
    probs = np.asarray(run_predict(model, params, state, ds.x, spec.fit.batch_size))
    return classification_report(np.asarray(ds.y), probs, kind, ds.class_names)


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


def predict(spec: Spec, run: Path | None, input_path: Path, output_path: Path, *,
            checkpoint: str = "best", layers: tuple[str, ...] = (),
            top_k: int | None = None, header: bool | None = None) -> dict[str, Any]:
    """Predict for the rows of a CSV/NPY/NPZ file; writes probabilities and classes, or
    with `layers` the outputs of those named layers / nested models / inputs (one array
    to .npy or .csv, several to .npz by name). A CSV input is encoded as the run's
    training table was (data_encoding.json); `top_k`: the k most probable classes too;
    `header`: whether a CSV/TSV input's line 1 is its header (None: as the run's training
    table, else yes; a line 1 of numbers is then an error). One prediction per row in."""
    predictions.check_output_path(Path(output_path), top_k)
    if top_k is not None and layers:
        raise ConfigError("--top-k is for the model's predictions, not a layer's output",
                          where="--top-k")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"expected a positive number of classes, got {top_k}",
                          where="--top-k")
    if top_k is not None and _shape_known(spec):
        _check_top_k(spec, build(spec), top_k)   # before any data is read
    pre, encoding = fitted_pipeline(spec, run)
    where = None if run is None else str(run)
    table = Path(input_path).suffix.lower() in (".csv", ".tsv")
    x = read_input(spec, pre, Path(input_path), encoding, header)
    model, params, state = load_trained(spec, run, checkpoint, x)
    if top_k is not None:
        _check_top_k(spec, model, top_k)
    check_features(model, x, str(input_path))
    n = count_rows(x)
    rows_in = {"input": str(input_path),
               **({"header": input_header(header, encoding)} if table else {})}
    if layers:
        known = model.node_names()
        for name in layers:
            if name not in known:
                raise ConfigError(unknown_name_message("layer", name, known), where="--output")
        out = run_predict(model, params, state, x, spec.fit.batch_size, tuple(layers))
        arrays = {name: np.asarray(a) for name, a in zip(layers, out)}
        if len(arrays) == 1 and Path(output_path).suffix.lower() != ".npz":
            (only,) = arrays.values()
            flat = Path(output_path).suffix.lower() in (".csv", ".tsv")
            predictions.write_predictions(Path(output_path), only.reshape(n, -1) if flat else only,
                                       None)
        else:
            predictions.write_output_arrays(Path(output_path), arrays)
        return {"run": where, "rows": n, "output": str(output_path),
                "task": "layers " + ", ".join(layers), **rows_in}
    out = run_predict(model, params, state, x, spec.fit.batch_size)
    if len(model.output_names) > 1:
        predictions.write_output_arrays(Path(output_path), dict(zip(model.output_names, out)))
        return {"run": where, "rows": n, "output": str(output_path), "task": "outputs",
                **rows_in}
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
    predictions.write_predictions(Path(output_path), probs, classes, names, top_k)
    return {"run": where, "rows": n, "output": str(output_path), "task": kind, **rows_in}


def read_input(spec: Spec, pre, path: Path, encoding: dict | None,
               header: bool | None = None):
    """Features from a file as `nnrun predict --input` reads them: a table encoded as the
    run's training table was, several inputs from a .npz by input name; then the run's
    preprocessing (`pre`, None for none)."""
    if header is not None and path.suffix.lower() not in (".csv", ".tsv"):
        raise ConfigError("--header/--no-header is for a .csv or .tsv input",
                          where="--header")
    names = [i.name for i in spec.model.inputs] if spec.model.is_graph else []
    if len(names) > 1:   # several inputs: a .npz with one array per input name
        x = data_mod.load_named_features(path, names)
    else:
        x = data_mod.load_features(path, drop_columns=_target_columns(spec),
                                   encoding=encoding, header=header)
    return preprocess_input(pre, x, str(path))


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


