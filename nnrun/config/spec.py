"""Config loading and validation: YAML -> a typed `Spec` whose values know their file:line.

Importing this module does not import jax. Validation runs in two passes
(STYLE.md item 5): typed fields first, collecting every problem with its
location, then cross-field checks; all problems are raised as one ConfigError.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from nnrun.config.callback_specs import CallbackSpec, validate_callbacks
from nnrun.config.checks import (
    COMPILE_KEYS,
    COMPOSE_KEYS,
    DATA_KEYS,
    FIT_KEYS,
    PRECISIONS,
    TOP_KEYS,
    Problems,
    check_keys,
    devices_option,
    section,
    typed_field,
    validate_distributed,
)
from nnrun.config.compose import interpolate, read_config_file
from nnrun.config.data_spec import STREAMABLE, validate_data_options
from nnrun.config.model_spec import (  # noqa: F401  (re-exported: the model's specs are public)
    INPUT_DTYPES,
    KERAS1_KERNEL_DIMS,
    MERGE_MODES,
    InputSpec,
    LayerSpec,
    ModelSpec,
    model_to_dict,
    plain,
    validate_model,
)
from nnrun.config.overrides import apply_override
from nnrun.config.registry import unknown_name_message
from nnrun.config.tune_spec import TuneSpec, validate_tune
from nnrun.config.values import (
    REQUIRED,
    ArgTypeError,
    boolean,
    got,
    identifier,
    integer,
    number,
    positive_int,
    run_name,
    seed_int,
)
from nnrun.config.yamlsrc import Origins, PathT, read_yaml_file

CONFIG_VERSION = 1


@dataclass(frozen=True)
class CompileSpec:
    """For a model of several outputs, `loss` and `metrics` may map output names to
    values, and `loss_weights` weighs the outputs' losses (a mapping by name)."""

    optimizer: Any
    loss: Any
    metrics: tuple[Any, ...] | dict[str, tuple[Any, ...]]
    loss_weights: dict[str, float] | None = None
    precision: str = "float32"   # nnrun/nn/precision.py: float32, mixed or bfloat16

    def for_output(self, name: str) -> tuple[Any, tuple[Any, ...], float]:
        """(loss, metrics, weight) of one output."""
        loss = self.loss[name] if _by_output(self.loss) else self.loss
        metrics = self.metrics.get(name, ()) if isinstance(self.metrics, dict) else self.metrics
        return loss, metrics, (self.loss_weights or {}).get(name, 1.0)


def _by_output(value: Any) -> bool:
    """A mapping of output names to values (not a `{name: ...}` identifier)."""
    return isinstance(value, dict) and "name" not in value


@dataclass(frozen=True)
class FitSpec:
    batch_size: int
    epochs: int
    shuffle: bool
    callbacks: tuple[CallbackSpec, ...] = ()
    devices: int | str = "all"   # data parallelism: "all" local devices, or a number
    terminate_on_nan: bool = True   # false: a non-finite loss does not stop training

    def to_dict(self) -> dict:
        """The resolved `fit:` (callbacks with every argument; none: no key)."""
        out = {"batch_size": self.batch_size, "epochs": self.epochs, "shuffle": self.shuffle}
        if self.devices != "all":
            out["devices"] = self.devices
        if not self.terminate_on_nan:
            out["terminate_on_nan"] = False
        if self.callbacks:
            out["callbacks"] = [c.to_dict() for c in self.callbacks]
        return out


@dataclass(frozen=True)
class DataSpec:
    train: dict | None
    validation: dict | None
    validation_split: float | None
    test: dict | None
    # data options (nnrun.config.data_spec): None when not given
    shuffle_split: bool | None = None
    stratify: bool | None = None
    preprocess: dict | None = None
    class_weight: str | dict | None = None
    # read .npy / HDF5 features from disk in chunks (None: when over 1 GiB)
    stream: bool | None = None


@dataclass
class Spec:
    """A validated config. `resolved` is the plain dict written to config.yaml."""

    name: str
    seed: int
    data: DataSpec
    model: ModelSpec
    compile: CompileSpec
    fit: FitSpec
    resolved: dict
    origins: Origins
    base_dir: Path
    source: str
    # jax.distributed.initialize's arguments ({} for its own detection); None: one process
    distributed: dict | None = None
    # tune: (nnrun tune's search; training ignores it), None when absent
    tune: TuneSpec | None = None

    def where(self, path: PathT) -> str:
        """`file:line:col: dotted.path` for a config path, for error messages."""
        return self.origins.where(path)


@dataclass(frozen=True)
class PartialSpec:
    """What validation could check of a config it rejects: data: and compile: as far as
    they passed (None where a section is missing) and the top-level layers that had no
    problem, so that `nnrun check` can still resolve their names (optimizer, loss,
    metrics, activations, datasets...) and report everything at once. Attached to the
    ConfigError as `.partial`."""

    origins: Origins
    data: DataSpec | None
    compile: CompileSpec | None
    layers: tuple[LayerSpec, ...]
    callbacks: tuple[CallbackSpec, ...] = ()


# ---------------------------------------------------------------- loading

def load_raw(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict, Origins]:
    """Read a config file and the files it `extends:`, apply `--set` overrides, then
    `${...}` interpolation; returns the raw dict and the origin of every value."""
    origins = Origins()
    raw = read_config_file(path, origins)
    for assignment in overrides:
        apply_override(raw, assignment, origins)
    raw = interpolate(raw, origins, str(path))
    model = raw.get("model")
    if isinstance(model, str):  # `model: runs/x/model.yaml` reuses a saved architecture
        model_path = (path.parent / model)
        raw["model"] = read_yaml_file(model_path, origins, ("model",))
        if isinstance(raw["model"], dict) and set(raw["model"]) == {"model"}:
            raw["model"] = raw["model"]["model"]
    return raw, origins


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Load, override and validate a config file into a Spec."""
    path = Path(path)
    raw, origins = load_raw(path, overrides)
    return validate(raw, origins, base_dir=path.parent, source=str(path),
                    default_name=path.stem)


def spec_from_dict(raw: dict, *, base_dir: Path = Path("."), source: str = "<dict>") -> Spec:
    """Validate an in-memory config (Python API and tests)."""
    return validate(copy.deepcopy(raw), Origins(), base_dir=base_dir, source=source,
                    default_name="model")


# ---------------------------------------------------------------- validation

def validate(raw: dict, origins: Origins, *, base_dir: Path, source: str,
             default_name: str) -> Spec:
    """Check every field, collect all problems, and build the Spec."""
    problems = Problems(origins)
    check_keys(raw, TOP_KEYS, (), problems, "the config", also=COMPOSE_KEYS)
    version = typed_field(raw, "version", integer, CONFIG_VERSION, (), problems)
    if version not in (None, CONFIG_VERSION):
        problems.add(("version",), f"unsupported config version {version}; this nnrun reads 1")
    name = typed_field(raw, "name", run_name, default_name, (), problems)
    if raw.get("name") is None and name is not None:   # the config file's name
        try:
            run_name(name)
        except ArgTypeError as exc:
            problems.add((), f"the config's file name cannot name its runs ({exc}): give "
                             "`name:`")
    seed = typed_field(raw, "seed", seed_int, 0, (), problems)
    data_raw = section(raw, "data", (), problems, required=False)
    fit_raw = section(raw, "fit", (), problems, required=False)
    data = _validate_data(data_raw, fit_raw, problems)
    # A missing (or not a mapping) model or compile section is one problem: its
    # contents are not checked as if they were empty.
    model_raw = section(raw, "model", (), problems, required=True)
    model = (validate_model(model_raw, problems) if isinstance(raw.get("model"), dict)
             else ModelSpec(None, "float32", ()))
    comp_raw = section(raw, "compile", (), problems, required=True)
    comp = (_validate_compile(comp_raw, problems, model.outputs if model.outputs and
                              len(model.outputs) > 1 else ())
            if isinstance(raw.get("compile"), dict) else None)
    fit = _validate_fit(fit_raw, problems)
    distributed = validate_distributed(raw, problems)
    tune = validate_tune(raw, seed, problems)
    problems.raise_if_any(PartialSpec(origins, data, comp, tuple(problems.clean_layers),
                                      fit.callbacks))
    if model.weights is not None and base_dir is not None:   # as data paths: absolute
        weights = Path(model.weights).expanduser()
        model = replace(model, weights=str(
            weights if weights.is_absolute() else (Path(base_dir) / weights).resolve()))
    resolved = {
        "version": CONFIG_VERSION, "name": name, "seed": seed,
        "data": {k: _absolute_paths(v, base_dir) for k, v in data.__dict__.items()
                 if v is not None},
        "model": model_to_dict(model),
        "compile": {"optimizer": comp.optimizer, "loss": comp.loss,
                    "metrics": (list(comp.metrics) if not isinstance(comp.metrics, dict) else
                                {k: list(v) for k, v in comp.metrics.items()}),
                    **({"loss_weights": comp.loss_weights} if comp.loss_weights else {}),
                    **({"precision": comp.precision} if comp.precision != "float32" else {})},
        "fit": fit.to_dict(),
        **({"distributed": raw["distributed"]} if distributed is not None else {}),
        **({"tune": tune.to_dict()} if tune is not None else {}),
    }
    return Spec(name=name, seed=seed, data=data, model=model, compile=comp, fit=fit,
                resolved=resolved, origins=origins, base_dir=base_dir, source=source,
                distributed=distributed, tune=tune)


def _source(value: Any, path: PathT, problems: Problems) -> dict | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"path": value} if _usable_path(value, path, problems) else None
    if not isinstance(value, dict):
        problems.add(path, "expected a data source mapping such as {builtin: xor} "
                           f"or {{path: train.csv, target: label}}, {got(value)}")
        return None
    if ("builtin" in value) == ("path" in value):
        problems.add(path, "a data source needs exactly one of 'builtin:' or 'path:'")
        return None
    usable = [_usable_path(value[key], path + (key,), problems)
              for key in ("path", "target", "sample_weight") if isinstance(value.get(key), str)]
    return dict(value) if all(usable) else None


def _usable_path(text: str, path: PathT, problems: Problems) -> bool:
    """A file name the system can take (no NUL byte; `~user/` of a user that exists)."""
    try:
        Path(text).expanduser()
        if "\0" in text:
            raise ValueError("embedded null byte")
    except (RuntimeError, ValueError) as exc:
        problems.add(path, f"not a usable file path {text!r}: {exc}")
        return False
    return True


def _absolute_paths(source: Any, base_dir) -> Any:
    """A data source with its file paths made absolute (relative ones are relative to the
    config's folder), so that the run's config.yaml finds the data from anywhere."""
    if not isinstance(source, dict) or base_dir is None:
        return source
    out = dict(source)
    for key in ("path", "target", "sample_weight"):   # a .npy source's are files
        value = out.get(key)
        if isinstance(value, str) and (key == "path" or value.endswith((".npy", ".npz"))):
            path = Path(value).expanduser()
            out[key] = str(path if path.is_absolute() else (Path(base_dir) / path).resolve())
    return out


def _validate_data(data: dict, fit: dict, problems: Problems) -> DataSpec:
    path: PathT = ("data",)
    check_keys(data, DATA_KEYS, path, problems, "data")
    split = typed_field(data, "validation_split", number, None, path, problems)
    fit_split = typed_field(fit, "validation_split", number, None, ("fit",), problems)
    if split is not None and fit_split is not None:
        problems.add(("fit", "validation_split"),
                     "validation_split is given in both data: and fit:; keep one")
    split = split if split is not None else fit_split
    where = path + ("validation_split",) if "validation_split" in data else \
        ("fit", "validation_split")
    if split is not None and not 0.0 < split < 1.0:
        problems.add(where, f"expected a fraction in (0, 1), got {split}")
    validation = _source(data.get("validation"), path + ("validation",), problems)
    if split is not None and validation is not None:
        problems.add(path + ("validation",), "give validation: or validation_split, not both")
    options = validate_data_options(data, split, problems)
    return DataSpec(train=_source(data.get("train"), path + ("train",), problems),
                    validation=validation, validation_split=split,
                    test=_source(data.get("test"), path + ("test",), problems),
                    stream=_stream_option(data, path, problems), **options)


def _stream_option(data: dict, path: PathT, problems: Problems) -> bool | None:
    """`data.stream`: a boolean; true only with .npy / HDF5 file sources."""
    stream = typed_field(data, "stream", boolean, None, path, problems)
    for key in ("train", "validation", "test") if stream else ():
        source = data.get(key)
        file = source.get("path") if isinstance(source, dict) else None
        suffix = Path(file).suffix.lower() if isinstance(file, str) else None
        if suffix is not None and suffix not in STREAMABLE:
            problems.add(path + ("stream",), f"only .npy and HDF5 files can be streamed; "
                         f"data.{key} is a {suffix or 'file without extension'}")
    return stream


def _validate_compile(comp: dict, problems: Problems,
                      outputs: tuple[str, ...] = ()) -> CompileSpec:
    """`outputs`: the output names of a model of several outputs (loss, metrics and
    loss_weights may then map output names to values)."""
    path: PathT = ("compile",)
    check_keys(comp, COMPILE_KEYS, path, problems, "compile")
    optimizer = typed_field(comp, "optimizer", identifier, "rmsprop", path, problems)
    loss_raw = comp.get("loss")
    if outputs and _by_output(loss_raw):
        loss = {}
        for name in _output_keys(loss_raw, outputs, path + ("loss",), problems, required=True):
            try:
                loss[name] = identifier(loss_raw[name])
            except ArgTypeError as exc:
                problems.add(path + ("loss", name), str(exc))
    else:
        loss = typed_field(comp, "loss", identifier, REQUIRED, path, problems)
    metrics_raw = comp.get("metrics") or []
    if outputs and _by_output(metrics_raw):
        metrics: Any = {name: _metric_list(metrics_raw[name], path + ("metrics", name), problems)
                        for name in _output_keys(metrics_raw, outputs, path + ("metrics",),
                                                 problems)}
    else:
        metrics = _metric_list(metrics_raw, path + ("metrics",), problems)
    weights = None
    raw_weights = comp.get("loss_weights")
    if raw_weights is not None:
        wpath = path + ("loss_weights",)
        if isinstance(raw_weights, list) and len(raw_weights) == len(outputs) and outputs:
            raw_weights = dict(zip(outputs, raw_weights))
        if not outputs or not isinstance(raw_weights, dict):
            problems.add(wpath, "loss_weights weighs the losses of a model of several outputs: "
                                "a mapping {output: weight} or a list, one per output"
                         if outputs else "loss_weights needs a model of several outputs")
        else:
            weights = {}
            for name in _output_keys(raw_weights, outputs, wpath, problems):
                try:
                    weights[name] = number(raw_weights[name])
                except ArgTypeError as exc:
                    problems.add(wpath + (name,), str(exc))
    precision = typed_field(comp, "precision", _precision, PRECISIONS[0], path, problems)
    return CompileSpec(optimizer=optimizer, loss=loss, metrics=metrics, loss_weights=weights,
                       precision=precision or PRECISIONS[0])


def _precision(value: Any) -> str:
    """`compile.precision`: one of PRECISIONS (nnrun/nn/precision.py)."""
    if value == "mixed_bfloat16":   # Keras's name of the policy
        return "mixed"
    if not isinstance(value, str) or value not in PRECISIONS:
        raise ArgTypeError(unknown_name_message("precision", value, list(PRECISIONS)))
    return value


def _output_keys(mapping: dict, outputs: tuple[str, ...], path: PathT, problems: Problems,
                 *, required: bool = False) -> list[str]:
    """The keys of a per-output mapping that are outputs; unknown (and, if `required`,
    missing) output names are problems."""
    for key in mapping:
        if key not in outputs:
            problems.add(path + (key,), unknown_name_message("output", key, list(outputs)),
                         key=True)
    if required:
        for name in outputs:
            if name not in mapping:
                problems.add(path, f"no loss for output {name!r}: give one per output, or "
                                   "one loss for all")
    return [k for k in mapping if k in outputs]


def _metric_list(metrics: Any, path: PathT, problems: Problems) -> tuple[Any, ...]:
    if isinstance(metrics, (str, dict)):
        metrics = [metrics]
    if not isinstance(metrics, list):
        problems.add(path, f"expected a list of metric names, {got(metrics)}")
        return ()
    checked = []
    for i, metric in enumerate(metrics):
        try:
            checked.append(identifier(metric))
        except ArgTypeError as exc:
            problems.add(path + (i,), str(exc))
    return tuple(checked)


def _validate_fit(fit: dict, problems: Problems) -> FitSpec:
    path: PathT = ("fit",)
    check_keys(fit, FIT_KEYS, path, problems, "fit")
    return FitSpec(batch_size=typed_field(fit, "batch_size", positive_int, 32, path, problems),
                   epochs=typed_field(fit, "epochs", positive_int, 1, path, problems),
                   shuffle=typed_field(fit, "shuffle", boolean, True, path, problems),
                   callbacks=validate_callbacks(fit.get("callbacks"), path + ("callbacks",),
                                                problems),
                   devices=typed_field(fit, "devices", devices_option, "all", path, problems)
                   or "all",
                   terminate_on_nan=typed_field(fit, "terminate_on_nan", boolean, True, path,
                                                problems) is not False)


# ---------------------------------------------------------------- writing

def dump_yaml(value: Any) -> str:
    return yaml.safe_dump(plain(value), sort_keys=False, default_flow_style=None)
