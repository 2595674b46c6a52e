"""The Python API (docs/python-api.md): `load` a trained run as a `TrainedModel` (predict,
evaluate, weights in Keras's get_weights() order, summary, config) and `train` a config
file or dict with overrides as keywords, returning the `Run`. `nnrun.load` and
`nnrun.train` are these two, imported on first use.

Errors are nnrun's own exceptions (`ConfigError`, `DataError`, `CheckpointError`, with
`.message` and `.where`), never a process exit; training installs no signal handler that
outlives it (nnrun/runs/interrupts.py: a first Ctrl-C stops after the epoch)."""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import yaml

from nnrun.api import inference
from nnrun.api.prepare import check_features, check_targets, load_checked, objective_for
from nnrun.api.training import TrainResult, resolve_target
from nnrun.api.training import train as train_spec
from nnrun.config.compose import interpolate
from nnrun.config.errors import ConfigError, DataError
from nnrun.config.overrides import apply_override
from nnrun.config.registry import unknown_name_message
from nnrun.config.spec import Spec, validate
from nnrun.config.yamlsrc import Origins
from nnrun.data.arrays import Dataset, as_features, as_targets
from nnrun.data.arrays import rows as count_rows
from nnrun.data.rowsource import is_lazy
from nnrun.data.table_encoding import Cells, encode_column, unpairs
from nnrun.nn.trees import ordered_leaves

Weights = list[np.ndarray]


class TrainedModel:
    """A trained run's model and weights (`nnrun.load`). Arrays in, arrays out: the
    run's table encoding and preprocessing are applied to what goes in. `run_dir` is None
    for a config loaded before it has a run (its model.weights, e.g. imported)."""

    def __init__(self, spec: Spec, run: Path | None, checkpoint: str, model, params, state):
        self.spec, self.run_dir, self.checkpoint = spec, run, checkpoint
        self._model, self._params, self._state = model, params, state
        self._pre, self._encoding = inference.fitted_pipeline(spec, run)
        self._programs: dict = {}   # compiled predict programs by (rows, batch, layers)

    def __repr__(self) -> str:
        if self.run_dir is None:
            return f"TrainedModel({self.spec.name!r}, weights={self.spec.model.weights!r})"
        return (f"TrainedModel({self.spec.name!r}, run={str(self.run_dir)!r}, "
                f"checkpoint={self.checkpoint!r})")

    @property
    def config(self) -> dict:
        """The run's config, resolved (what its config.yaml holds), as a dict."""
        return copy.deepcopy(self.spec.resolved)

    @property
    def input_names(self) -> list[str]:
        return list(self._model.input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self._model.output_names)

    # ------------------------------------------------------------ predict

    def predict(self, x, *, batch_size: int | None = None,
                layers: tuple[str, ...] | list[str] = ()) -> np.ndarray | dict:
        """The model's outputs for the rows of `x`, batch by batch (`fit.batch_size`
        unless given): one array, or a dict by output name for several outputs. With
        `layers`, those layers' (or inputs') outputs instead, a dict by name.

        `x`: an array (features as the model's input takes them, before the run's
        preprocessing), a dict of arrays by input name, a table's columns (a dict by
        column name, or a pandas DataFrame: encoded as the run's training table was),
        or a file's path (.csv/.tsv/.npy/.npz/.h5, read as `nnrun predict --input`)."""
        layers = tuple(layers)
        known = self._model.node_names()
        for name in layers:
            if name not in known:
                raise ConfigError(unknown_name_message("layer", name, known), where="layers")
        x = self._prepared(x)
        batch = _batch_size(batch_size, self.spec.fit.batch_size)
        if is_lazy(x):   # a large file left on disk: read in chunks
            out = inference.run_predict(self._model, self._params, self._state, x, batch,
                                        layers)
        else:
            out = self._predict_resident(x, batch, layers)
        if layers:
            return {name: np.asarray(a) for name, a in zip(layers, out)}
        if len(self._model.output_names) > 1:
            return {name: np.asarray(a) for name, a in zip(self._model.output_names, out)}
        return np.asarray(out)

    def _predict_resident(self, x, batch: int, layers: tuple[str, ...]):
        """Rows padded to whole batches, so that one compiled program serves every call
        of the same number of batches (a service's requests of up to `batch` rows: one)."""
        import jax

        from nnrun.train.epoch import make_predict

        n = count_rows(x)
        padded = max(1, math.ceil(n / batch)) * batch
        key = (padded, batch, layers)
        if key not in self._programs:
            self._programs[key] = make_predict(self._model, padded, batch, layers)
        out = self._programs[key](self._params, self._state, _pad(x, padded - n))
        return jax.tree_util.tree_map(lambda a: np.asarray(a)[:n], out)

    # ------------------------------------------------------------ evaluate

    def evaluate(self, x=None, y=None, *, batch_size: int | None = None) -> dict[str, float]:
        """Loss and metrics (Keras's names: loss, accuracy, val_ never) of these weights:
        on `x`, `y` (any `x` predict takes; `y` an array, class names of a table run, or a
        dict by output name), or with neither on the config's test data (else
        validation, else training), as `nnrun evaluate`. Writes nothing."""
        if x is None and y is None:
            name, ds = inference.evaluation_data(self.spec, self.run_dir)
        elif x is None or y is None:
            raise ConfigError("give both x and y, or neither (the config's test data)",
                              where="evaluate")
        else:
            name, ds = "given", Dataset(self._prepared(x), self._targets(y), "evaluate(x, y)")
            if count_rows(ds.x) != count_rows(ds.y):
                raise DataError(f"x has {count_rows(ds.x)} rows, y {count_rows(ds.y)}",
                                where="evaluate(x, y)")
        check_features(self._model, ds.x, ds.source)
        obj = objective_for(self.spec, self._model, ds.y)
        check_targets(self._model, obj, ds, name)
        return inference.evaluation_logs(self._model, obj, self._params, self._state, ds,
                                         _batch_size(batch_size, self.spec.fit.batch_size))

    # ------------------------------------------------------------ weights

    def get_weights(self) -> Weights:
        """Every weight as a numpy array, in Keras's `Model.get_weights()` order: layer by
        layer, each layer's trainable weights then its non-trainable ones (Dense: kernel,
        bias; BatchNormalization: gamma, beta, moving_mean, moving_variance; LSTM: kernel,
        recurrent_kernel, bias). A stateful RNN's carried states are not weights."""
        trees = {"params": self._params, "state": self._state}
        return [np.asarray(_at(trees[tree], path)) for tree, path, _ in self._slots()]

    def set_weights(self, weights: Weights) -> None:
        """Replace every weight, arrays in `get_weights()`'s order (a Keras model's
        `get_weights()` for the same architecture); shapes are checked first."""
        import jax.numpy as jnp

        slots = self._slots()
        weights = list(weights)
        if len(weights) != len(slots):
            raise ConfigError(f"expected {len(slots)} arrays (Keras's get_weights() order), "
                              f"got {len(weights)}", where="set_weights")
        trees = {"params": self._params, "state": self._state}
        for (tree, path, shape), value in zip(slots, weights):
            value = np.asarray(value)
            if tuple(value.shape) != shape:
                raise ConfigError(f"weight {'/'.join(path)} has shape "
                                  f"{shape}, got {tuple(value.shape)}", where="set_weights")
            old = _at(trees[tree], path)
            trees[tree] = _replaced(trees[tree], path, jnp.asarray(value, old.dtype))
        self._params, self._state = trees["params"], trees["state"]

    def _slots(self) -> list[tuple[str, tuple[str, ...], tuple]]:
        """(tree, path, shape) of every weight, in Keras's order."""
        return _model_slots(self._model, ())

    def summary(self, *, expand_nested: bool = False) -> None:
        """Print the Keras-style table of layers, shapes and parameter counts."""
        from nnrun.runs.report import summary_text

        print(summary_text(self._model, self.spec.name, expand_nested=expand_nested), end="")

    # ------------------------------------------------------------ inputs

    def _prepared(self, x):
        """Features as the model takes them: read or encoded, preprocessed, checked."""
        source = str(x) if isinstance(x, (str, Path)) else "x"
        if isinstance(x, (str, Path)):
            x = inference.read_input(self.spec, self._pre, Path(x), self._encoding)
        else:
            x = self._features(x)
            if self._pre is not None:
                x = self._pre.transform_x(x)
        check_features(self._model, x, source)
        return x

    def _features(self, x):
        names = self._model.input_names
        if hasattr(x, "columns") and hasattr(x, "to_numpy"):   # a pandas DataFrame
            x = {str(c): x[c].to_numpy() for c in x.columns}
        if isinstance(x, dict):
            if set(x) == set(names):
                return {n: self._array(x[n], n) for n in names} if len(names) > 1 \
                    else self._array(x[names[0]], names[0])
            if self._encoding is not None:
                return _encode_columns(x, self._encoding)
            raise DataError(f"the model's inputs are {', '.join(names)}; x has "
                            f"{', '.join(map(str, x)) or 'no keys'}", where="x")
        if len(names) > 1:
            raise DataError(f"a model of several inputs takes a dict of arrays by input name "
                            f"({', '.join(names)})", where="x")
        return self._array(x, names[0])

    def _array(self, value, name: str) -> np.ndarray:
        dtype = np.dtype(self._model.input_dtypes[name]).name
        what = "x" if len(self._model.input_names) == 1 else f"x[{name!r}]"
        return as_features(np.asarray(value), dtype, what, what)

    def _targets(self, y):
        if isinstance(y, dict):
            y = {k: self._target(v, f"y[{k!r}]") for k, v in y.items()}
        else:
            y = self._target(y, "y")
        return self._pre.transform_y(y) if self._pre is not None else y

    def _target(self, value, what: str) -> np.ndarray:
        arr = np.asarray(value)
        names = (self._encoding or {}).get("class_names")
        if arr.dtype.kind in "US" and names:   # a table run's class names -> class ids
            ids = {c: i for i, c in enumerate(names)}
            unknown = [v for v in arr.reshape(-1).tolist() if v not in ids]
            if unknown:
                raise DataError(f"unknown class {unknown[0]!r} (the run's: "
                                f"{', '.join(names)})", where=what)
            arr = np.vectorize(ids.__getitem__, otypes=[np.int32])(arr)
        return as_targets(arr, what, what)


def _batch_size(given: int | None, default: int) -> int:
    if given is not None and (isinstance(given, bool) or not isinstance(given, int)
                              or given < 1):
        raise ConfigError(f"expected a positive number of rows, got {given!r}",
                          where="batch_size")
    return given or default


def _pad(x, extra: int):
    """`extra` rows of zeros after x's rows (an array, or a dict of them)."""
    if isinstance(x, dict):
        return {k: _pad(v, extra) for k, v in x.items()}
    return np.concatenate([x, np.zeros((extra, *x.shape[1:]), x.dtype)]) if extra else x


def _encode_columns(columns: dict, encoding: dict):
    """A table's rows given as columns (by name), encoded as the run's training table:
    its feature columns (others, such as the target, are left out), categories, fills."""
    groups = unpairs(encoding["features"])
    wanted = [c for cols in groups.values() for c in cols]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(f"no column {', '.join(map(repr, missing))}; the run's training "
                        f"table's feature columns are {', '.join(wanted)}", where="x")
    cells = {c: np.char.strip(np.asarray(columns[c]).reshape(-1).astype(str)) for c in wanted}
    sizes = {len(v) for v in cells.values()}
    if len(sizes) != 1:
        raise DataError("the columns have different numbers of rows", where="x")
    lines = list(range(2, sizes.pop() + 2))   # as a CSV's: the header is line 1
    x = {k: as_features(np.concatenate([encode_column(Cells(c, cells[c], Path("x"), lines),
                                                      encoding) for c in cols], 1),
                        encoding["dtype"], "x", "x")
         for k, cols in groups.items()}
    return x[None] if None in x else x


def _model_slots(model, prefix: tuple) -> list[tuple[str, tuple[str, ...], tuple]]:
    """Keras's order: each layer (a shared one once) in the model's order, its params
    then the state Keras counts as weights; a nested model's layers in its own order."""
    params, state = model.weight_shapes
    out, seen = [], set()
    for layer in model.layers:
        owner = layer.param_name
        if owner in seen:
            continue
        seen.add(owner)
        if getattr(layer, "nested", False) and owner in {*params, *state}:
            out += _model_slots(layer.model_for_summary(), (*prefix, owner))
            continue
        counted = layer.counted_state(state.get(owner, {}))
        for tree, shapes in (("params", params.get(owner, {})), ("state", counted)):
            out += [(tree, (*prefix, owner, *path.split("/")), shape)
                    for path, shape in ordered_leaves(shapes)]
    return out


def _at(tree: dict, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


def _replaced(tree: dict, path: tuple, value) -> dict:
    """A copy of `tree` with the leaf at `path` replaced (the dicts along it copied)."""
    if len(path) == 1:
        return {**tree, path[0]: value}
    return {**tree, path[0]: _replaced(tree[path[0]], path[1:], value)}


# ---------------------------------------------------------------- load and train

def load(target: str | Path, *, checkpoint: str = "best", runs_dir: str | Path = "runs",
         set: list[str] | tuple[str, ...] = ()) -> TrainedModel:
    """A trained model: `target` a run directory (e.g. "runs/latest") or a config file
    (its newest run under `runs_dir`; before it has one, its model.weights); `checkpoint`
    "best" (best.h5), "last" or a checkpoint file's path; `set`: --set overrides."""
    spec, run = resolve_target(Path(target), tuple(set), runs_root=Path(runs_dir),
                               need_run=True)
    model, params, state = inference.load_trained(spec, run, checkpoint, _shape_probe(spec, run))
    return TrainedModel(spec, run and run.resolve(), checkpoint, model, params, state)


def _shape_probe(spec: Spec, run: Path | None):
    """For a config whose input shape came from its data: an empty array of the shape the
    run trained on (model.json), so the model is built without reading data."""
    shape = inference.run_input_shape(spec, run)
    return None if shape is None else np.empty((0, *shape), np.float32)


@dataclasses.dataclass
class Run(TrainResult):
    """A training's outcome (`nnrun.train`): run_dir, status ("finished", "interrupted",
    "diverged"), history (metric name -> one value per epoch), best, epochs_completed."""

    def load(self, checkpoint: str = "best") -> TrainedModel:
        """This run's trained model (best.h5 unless `checkpoint` says "last")."""
        return load(self.run_dir, checkpoint=checkpoint)


def train(config: str | Path | dict, *, set: list[str] | tuple[str, ...] = (),
          runs_dir: str | Path = "runs", quiet: bool = False, stream: TextIO | None = None,
          **overrides: Any) -> Run:
    """Train a config file, or a config given as a dict (its relative data paths taken
    from the current directory); the run directory is written as `nnrun train` writes
    it. Overrides: `set=["fit.epochs=5"]` as --set, or keywords with `__` between keys
    (`fit__epochs=5`, `compile__optimizer={"name": "adam"}`, `model__layers__0__Dense__units=8`),
    applied after `set`. Progress goes to `stream` (stdout) unless `quiet`."""
    assignments = (*set, *(_assignment(k, v) for k, v in overrides.items()))
    if isinstance(config, dict):
        spec, shown = _dict_spec(config, assignments), "<dict>"
    else:
        spec, shown = load_checked(Path(config), assignments), str(config)
    argv = ["nnrun.train", shown, *(f"--set={a}" for a in assignments)]
    result = train_spec(spec, runs_root=Path(runs_dir), argv=argv,
                        stream=stream or sys.stdout, quiet=quiet)
    return Run(**{f.name: getattr(result, f.name) for f in dataclasses.fields(TrainResult)})


def _assignment(key: str, value: Any) -> str:
    """`fit__epochs=5` -> "fit.epochs=5" (the value written as YAML, in flow style)."""
    parts = [f"[{p}]" if p.isdigit() else p for p in key.split("__")]
    path = ".".join(parts).replace(".[", "[")
    value = value.item() if isinstance(value, np.generic) else value
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, sort_keys=False)
    except yaml.YAMLError:
        raise ConfigError(f"{type(value).__name__} is not a config value (numbers, "
                          "strings, booleans, lists and dicts of them)", where=key) from None
    return f"{path}={text.removesuffix(chr(10) + '...' + chr(10)).strip()}"


def _dict_spec(raw: dict, assignments: tuple[str, ...]) -> Spec:
    """A config given as a dict: overrides, `${...}`, validation (paths from the cwd)."""
    if "extends" in raw:
        raise ConfigError("extends: is for config files; merge the dicts in Python",
                          where="extends")
    raw, origins = copy.deepcopy(raw), Origins()
    for assignment in assignments:
        apply_override(raw, assignment, origins)
    raw = interpolate(raw, origins, "<dict>")
    return validate(raw, origins, base_dir=Path.cwd(), source="<dict>", default_name="model")
