"""Config loading and validation: YAML -> a typed `Spec` whose values know their file:line.

Importing this module does not import jax. Validation runs in two passes
(STYLE.md item 5): typed fields first, collecting every problem with its
location, then cross-field checks; all problems are raised as one ConfigError.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from nnrun.errors import ConfigError
from nnrun.overrides import apply_override
from nnrun.registry import unknown_name_message
from nnrun.schema import (
    COMMON_ALIASES,
    COMMON_ARGS,
    LAYERS,
    REQUIRED,
    ArgTypeError,
    boolean,
    canonical_type,
    identifier,
    integer,
    nested_graph,
    nested_layer,
    nested_layers,
    number,
    positive_int,
    shape,
    string,
)
from nnrun.yamlsrc import Origins, PathT, read_yaml_file

CONFIG_VERSION = 1


@dataclass(frozen=True)
class LayerSpec:
    """One layer: canonical type, unique name, canonical args with defaults filled."""

    type: str
    name: str
    args: dict[str, Any]
    path: PathT  # of the list item: ("model", "layers", i)
    arg_paths: dict[str, PathT] = field(default_factory=dict)  # canonical arg -> as written
    # Graph models: the names of the model inputs / layers this layer takes, or None for
    # the previous layer's output (a Sequential stack).
    inputs: tuple[str, ...] | None = None

    def arg_path(self, arg: str) -> PathT:
        """The config path of an argument as the user wrote it (alias names included)."""
        return self.arg_paths.get(arg, self.path)


@dataclass(frozen=True)
class ModelSpec:
    input_shape: tuple[int, ...] | None
    input_dtype: str
    layers: tuple[LayerSpec, ...]
    # Graph models: named inputs and the output layers' names (None: a Sequential stack,
    # one input of input_shape / input_dtype, the last layer's output).
    inputs: tuple[InputSpec, ...] | None = None
    outputs: tuple[str, ...] | None = None

    @property
    def is_graph(self) -> bool:
        return self.inputs is not None


@dataclass(frozen=True)
class InputSpec:
    """A named input of a graph model."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    path: PathT


@dataclass(frozen=True)
class CompileSpec:
    """For a model of several outputs, `loss` and `metrics` may map output names to
    values, and `loss_weights` weighs the outputs' losses (a mapping by name)."""

    optimizer: Any
    loss: Any
    metrics: tuple[Any, ...] | dict[str, tuple[Any, ...]]
    loss_weights: dict[str, float] | None = None

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


@dataclass(frozen=True)
class DataSpec:
    train: dict | None
    validation: dict | None
    validation_split: float | None
    test: dict | None


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

    def where(self, path: PathT) -> str:
        """`file:line:col: dotted.path` for a config path, for error messages."""
        return self.origins.where(path)


class _Problems:
    """Collects (where, message) pairs; raises them together."""

    def __init__(self, origins: Origins):
        self.origins = origins
        self.items: list[tuple[str | None, str]] = []

    def add(self, path: PathT, message: str, *, key: bool = False) -> None:
        self.items.append((self.origins.where(path, key=key), message))

    def raise_if_any(self) -> None:
        if self.items:
            where, message = self.items[0]
            raise ConfigError(message, where=where, problems=list(self.items))


# ---------------------------------------------------------------- loading

def load_raw(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict, Origins]:
    """Read a config file, apply `--set` overrides; returns the raw dict and origins."""
    origins = Origins()
    raw = read_yaml_file(path, origins)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a mapping (name:, data:, model:, ...)",
                          where=origins.where(()))
    for assignment in overrides:
        apply_override(raw, assignment, origins)
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

TOP_KEYS = ("version", "name", "seed", "data", "model", "compile", "fit")
DATA_KEYS = ("train", "validation", "validation_split", "test")
MODEL_KEYS = ("input_shape", "input_dim", "input_dtype", "inputs", "layers", "outputs")
# Keras 1's Merge(mode=...) -> the merge layer types.
MERGE_MODES = {"sum": "Add", "mul": "Multiply", "ave": "Average", "max": "Maximum",
               "concat": "Concatenate", "dot": "Dot", "cos": "Dot"}
COMPILE_KEYS = ("optimizer", "loss", "metrics", "loss_weights")
FIT_KEYS = ("batch_size", "epochs", "shuffle", "validation_split")
INPUT_DTYPES = ("float32", "int32")
INTEGER_INPUT_LAYERS = ("Embedding",)


def _check_keys(section: dict, allowed: tuple[str, ...], path: PathT, problems: _Problems,
                what: str) -> None:
    for key in section:
        if key not in allowed:
            message = unknown_name_message(f"key in {what}", key, list(allowed))
            problems.add(path + (key,), message, key=True)


def _field(section: dict, key: str, check, default: Any, path: PathT,
           problems: _Problems) -> Any:
    if key not in section or section[key] is None:
        if default is REQUIRED:
            problems.add(path, f"missing required key {key!r}")
        return None if default is REQUIRED else default
    try:
        return check(section[key])
    except ArgTypeError as exc:
        problems.add(path + (key,), str(exc))
        return None


def _mapping(raw: dict, key: str, path: PathT, problems: _Problems, required: bool) -> dict:
    value = raw.get(key)
    if value is None:
        if required:
            problems.add(path, f"missing required section {key!r}")
        return {}
    if not isinstance(value, dict):
        problems.add(path + (key,), f"expected a mapping, got {type(value).__name__}")
        return {}
    return value


def validate(raw: dict, origins: Origins, *, base_dir: Path, source: str,
             default_name: str) -> Spec:
    """Check every field, collect all problems, and build the Spec."""
    problems = _Problems(origins)
    _check_keys(raw, TOP_KEYS, (), problems, "the config")
    version = _field(raw, "version", integer, CONFIG_VERSION, (), problems)
    if version not in (None, CONFIG_VERSION):
        problems.add(("version",), f"unsupported config version {version}; this nnrun reads 1")
    name = _field(raw, "name", string, default_name, (), problems)
    seed = _field(raw, "seed", integer, 0, (), problems)
    data_raw = _mapping(raw, "data", (), problems, required=False)
    fit_raw = _mapping(raw, "fit", (), problems, required=False)
    data = _validate_data(data_raw, fit_raw, problems)
    model = _validate_model(_mapping(raw, "model", (), problems, required=True), problems)
    comp = _validate_compile(_mapping(raw, "compile", (), problems, required=True), problems,
                             model.outputs if model.outputs and len(model.outputs) > 1 else ())
    fit = _validate_fit(fit_raw, problems)
    problems.raise_if_any()
    resolved = {
        "version": CONFIG_VERSION, "name": name, "seed": seed,
        "data": {k: _absolute_paths(v, base_dir) for k, v in data.__dict__.items()
                 if v is not None},
        "model": model_to_dict(model),
        "compile": {"optimizer": comp.optimizer, "loss": comp.loss,
                    "metrics": (list(comp.metrics) if not isinstance(comp.metrics, dict) else
                                {k: list(v) for k, v in comp.metrics.items()}),
                    **({"loss_weights": comp.loss_weights} if comp.loss_weights else {})},
        "fit": dict(fit.__dict__),
    }
    return Spec(name=name, seed=seed, data=data, model=model, compile=comp, fit=fit,
                resolved=resolved, origins=origins, base_dir=base_dir, source=source)


def _source(value: Any, path: PathT, problems: _Problems) -> dict | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"path": value}
    if not isinstance(value, dict):
        problems.add(path, "expected a data source mapping such as {builtin: xor} "
                           "or {path: train.csv, target: label}")
        return None
    if ("builtin" in value) == ("path" in value):
        problems.add(path, "a data source needs exactly one of 'builtin:' or 'path:'")
        return None
    return dict(value)


def _absolute_paths(source: Any, base_dir) -> Any:
    """A data source with its file paths made absolute (relative ones are relative to the
    config's folder), so that the run's config.yaml finds the data from anywhere."""
    if not isinstance(source, dict) or base_dir is None:
        return source
    out = dict(source)
    for key in ("path", "target"):
        value = out.get(key)
        if isinstance(value, str) and (key == "path" or value.endswith((".npy", ".npz"))):
            path = Path(value).expanduser()
            out[key] = str(path if path.is_absolute() else (Path(base_dir) / path).resolve())
    return out


def _validate_data(data: dict, fit: dict, problems: _Problems) -> DataSpec:
    path: PathT = ("data",)
    _check_keys(data, DATA_KEYS, path, problems, "data")
    split = _field(data, "validation_split", number, None, path, problems)
    fit_split = _field(fit, "validation_split", number, None, ("fit",), problems)
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
    return DataSpec(train=_source(data.get("train"), path + ("train",), problems),
                    validation=validation, validation_split=split,
                    test=_source(data.get("test"), path + ("test",), problems))


def _validate_compile(comp: dict, problems: _Problems,
                      outputs: tuple[str, ...] = ()) -> CompileSpec:
    """`outputs`: the output names of a model of several outputs (loss, metrics and
    loss_weights may then map output names to values)."""
    path: PathT = ("compile",)
    _check_keys(comp, COMPILE_KEYS, path, problems, "compile")
    optimizer = _field(comp, "optimizer", identifier, "rmsprop", path, problems)
    loss_raw = comp.get("loss")
    if outputs and _by_output(loss_raw):
        loss = {}
        for name in _output_keys(loss_raw, outputs, path + ("loss",), problems, required=True):
            try:
                loss[name] = identifier(loss_raw[name])
            except ArgTypeError as exc:
                problems.add(path + ("loss", name), str(exc))
    else:
        loss = _field(comp, "loss", identifier, REQUIRED, path, problems)
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
    return CompileSpec(optimizer=optimizer, loss=loss, metrics=metrics, loss_weights=weights)


def _output_keys(mapping: dict, outputs: tuple[str, ...], path: PathT, problems: _Problems,
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


def _metric_list(metrics: Any, path: PathT, problems: _Problems) -> tuple[Any, ...]:
    if isinstance(metrics, (str, dict)):
        metrics = [metrics]
    if not isinstance(metrics, list):
        problems.add(path, "expected a list of metric names")
        return ()
    checked = []
    for i, metric in enumerate(metrics):
        try:
            checked.append(identifier(metric))
        except ArgTypeError as exc:
            problems.add(path + (i,), str(exc))
    return tuple(checked)


def _validate_fit(fit: dict, problems: _Problems) -> FitSpec:
    path: PathT = ("fit",)
    _check_keys(fit, FIT_KEYS, path, problems, "fit")
    return FitSpec(batch_size=_field(fit, "batch_size", positive_int, 32, path, problems),
                   epochs=_field(fit, "epochs", positive_int, 1, path, problems),
                   shuffle=_field(fit, "shuffle", boolean, True, path, problems))


def _validate_model(model: dict, problems: _Problems, path: PathT = ("model",)) -> ModelSpec:
    _check_keys(model, MODEL_KEYS, path, problems, "model")
    input_shape = _field(model, "input_shape", shape, None, path, problems)
    input_dim = _field(model, "input_dim", positive_int, None, path, problems)
    if input_dim is not None:
        input_shape = (input_dim,)
    dtype = model.get("input_dtype", "float32")
    if dtype not in INPUT_DTYPES:
        problems.add(path + ("input_dtype",), unknown_name_message("dtype", dtype,
                                                                   list(INPUT_DTYPES)))
    layers_raw = model.get("layers")
    if not isinstance(layers_raw, list) or not layers_raw:
        problems.add(path + ("layers",) if "layers" in model else path,
                     "expected a non-empty list of layers, e.g. - Dense: {units: 8}")
        return ModelSpec(input_shape, dtype, ())
    layers: list[LayerSpec] = []
    counts: dict[str, int] = {}
    for i, item in enumerate(layers_raw):
        layer = _validate_layer(item, path + ("layers", i), problems, counts)
        if layer is None:
            continue
        first_shape = layer.args.pop("__input_shape__", None)
        if first_shape is not None:
            if layers or input_shape is not None:
                problems.add(layer.path, "an input shape (input_dim/input_shape) may only be "
                                         "given once, on the first layer or as model.input_shape")
            else:
                input_shape = first_shape
        layers.append(layer)
    names = [layer.name for layer in layers]
    for layer in layers:
        if names.count(layer.name) > 1:
            problems.add(layer.path, f"layer name {layer.name!r} is used more than once")
    owners = [x.name for x in layers if x.type != "Reuse"]
    for layer in layers:
        if layer.type == "Reuse" and layer.args.get("layer") not in owners:
            problems.add(layer.arg_path("layer"), unknown_name_message(
                "layer to reuse", layer.args.get("layer"), owners))
    if "input_dtype" not in model and layers and layers[0].type in INTEGER_INPUT_LAYERS:
        dtype = "int32"   # token ids
    if "inputs" not in model and "outputs" not in model:
        for layer in layers:
            if layer.inputs is not None:
                problems.add(layer.path, "`inputs:` on a layer needs the graph form: name the "
                                         "model's inputs in model.inputs (DESIGN.md section 2)")
        return ModelSpec(input_shape, dtype, tuple(layers))
    return _validate_graph(model, input_shape, tuple(layers), path, problems)


def _validate_graph(model: dict, input_shape, layers: tuple[LayerSpec, ...], path: PathT,
                    problems: _Problems) -> ModelSpec:
    """The graph form: named inputs, layers wired by `inputs:`, named outputs. Checks the
    names, that every input and layer is used, and that there is no cycle."""
    inputs = _graph_inputs(model.get("inputs"), path + ("inputs",), problems)
    if input_shape is not None:
        problems.add(path, "give either model.input_shape (a Sequential stack) or "
                           "model.inputs (a graph), not both")
    nodes = [i.name for i in inputs] + [layer.name for layer in layers]
    for layer in layers:
        if layer.name in {i.name for i in inputs}:
            problems.add(layer.path, f"layer name {layer.name!r} is also an input's name")
    wired: list[LayerSpec] = []
    previous = inputs[0].name if len(inputs) == 1 else None
    for layer in layers:
        refs = layer.inputs
        if refs is None:
            if previous is None:
                problems.add(layer.path, "say which input this layer takes (`inputs:`): the "
                                         "model has several inputs")
                refs = ()
            else:
                refs = (previous,)
        for ref in refs:
            if ref not in nodes:
                problems.add(layer.arg_path("inputs"),
                             unknown_name_message("input or layer", ref, nodes))
        wired.append(replace(layer, inputs=tuple(refs)))
        previous = layer.name
    outputs_raw = model.get("outputs", [layers[-1].name] if layers else [])
    if isinstance(outputs_raw, str):
        outputs_raw = [outputs_raw]
    outputs: list[str] = []
    if not isinstance(outputs_raw, list) or not outputs_raw:
        problems.add(path + ("outputs",), "expected a list of layer names, e.g. [out]")
    else:
        for i, name in enumerate(outputs_raw):
            if name not in nodes:
                problems.add(path + ("outputs", i),
                             unknown_name_message("layer", name, [x.name for x in layers]))
            else:
                outputs.append(name)
    _check_cycles(wired, problems)
    used = {ref for layer in wired for ref in layer.inputs} | set(outputs)
    for i in inputs:
        if i.name not in used:
            problems.add(i.path, f"input {i.name!r} is not used by any layer")
    for layer in wired:
        if layer.name not in used:
            problems.add(layer.path, f"the output of layer {layer.name!r} is not used: give it "
                                     "to a layer (`inputs:`) or list it in model.outputs")
    return ModelSpec(None, "float32", tuple(wired), inputs=tuple(inputs),
                     outputs=tuple(outputs))


def _graph_inputs(raw: Any, path: PathT, problems: _Problems) -> list[InputSpec]:
    """model.inputs: {name: shape} or {name: {shape: [...], dtype: int32}}."""
    if not isinstance(raw, dict) or not raw:
        problems.add(path, "expected a mapping of input names to shapes, e.g. "
                           "{left: [16], right: [16]}")
        return []
    out = []
    for name, value in raw.items():
        ipath = path + (name,)
        dtype = "float32"
        if isinstance(value, dict):
            _check_keys(value, ("shape", "dtype"), ipath, problems, f"input {name!r}")
            dtype = value.get("dtype", "float32")
            if dtype not in INPUT_DTYPES:
                problems.add(ipath + ("dtype",), unknown_name_message("dtype", dtype,
                                                                      list(INPUT_DTYPES)))
            value = value.get("shape")
        try:
            out.append(InputSpec(str(name), shape(value), dtype, ipath))
        except ArgTypeError as exc:
            problems.add(ipath, str(exc))
    return out


def _check_cycles(layers: list[LayerSpec], problems: _Problems) -> None:
    """A layer that (through others) takes its own output is an error naming the cycle."""
    deps = {layer.name: [r for r in layer.inputs if r != layer.name] for layer in layers}
    by_name = {layer.name: layer for layer in layers}
    state: dict[str, int] = {}   # 1: on the current path, 2: done

    def visit(name: str, trail: list[str]) -> bool:
        if state.get(name) == 2 or name not in deps:
            return False
        if state.get(name) == 1:
            cycle = trail[trail.index(name):] + [name]
            problems.add(by_name[name].arg_path("inputs"),
                         "the layers form a cycle (each takes the next one's output): "
                         + " <- ".join(cycle))
            return True
        state[name] = 1
        for ref in deps[name]:
            if visit(ref, trail + [name]):
                return True
        state[name] = 2
        return False

    for layer in layers:
        if layer.name in layer.inputs:
            problems.add(layer.arg_path("inputs"), f"layer {layer.name!r} takes its own output")
        if visit(layer.name, []):
            return


def _snake(name: str) -> str:
    """Keras's default layer names: Dense -> dense, MaxPooling2D -> max_pooling2d."""
    name = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer_parts(item: Any, path: PathT, problems: _Problems) -> tuple[str, Any] | None:
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and len(item) == 1:
        return next(iter(item.items()))
    problems.add(path, "a layer is a one-key mapping such as {Dense: {units: 8}}")
    return None


def _validate_layer(item: Any, path: PathT, problems: _Problems,
                    counts: dict[str, int]) -> LayerSpec | None:
    parts = _layer_parts(item, path, problems)
    if parts is None:
        return None
    given_type, args = parts
    graph_inputs, inputs_key = None, None
    if isinstance(args, dict) and "inputs" in args:
        args = dict(args)
        inputs_key = ("inputs",)
        graph_inputs = _layer_refs(args.pop("inputs"), path + (given_type, "inputs"), problems)
    if str(given_type) == "Merge":
        given_type, args = _keras1_merge(args, path, problems)
        if given_type is None:
            return None
    type_ = canonical_type(str(given_type))
    schema = LAYERS.get(type_)
    if schema is None:
        problems.add(path + (given_type,), unknown_name_message("layer type", given_type,
                                                               list(LAYERS)), key=True)
        return None
    apath = path + (given_type,)
    if args is None:
        args = {}
    if isinstance(args, dict):
        args = _keras1_kernel_size(args, apath, problems)
    if not isinstance(args, dict):  # a scalar fills the first argument
        if not schema.args:
            problems.add(apath, f"{type_} takes no arguments")
            return None
        args = {schema.args[0].name: args}
    out: dict[str, Any] = {}
    for key, value in args.items():
        canon = key if schema.arg(key) else schema.aliases.get(key) or COMMON_ALIASES.get(key, key)
        if schema.arg(canon) is None and canon not in COMMON_ARGS:
            allowed = schema.names() + list(schema.aliases) + list(COMMON_ARGS)
            problems.add(apath + (key,), unknown_name_message(f"argument of {type_}", key,
                                                              allowed), key=True)
            continue
        if canon in out:
            problems.add(apath + (key,), f"{canon!r} is given twice (as {key!r} and another "
                                         "name for it)", key=True)
            continue
        out[canon] = (key, value)
    layer = _finish_layer(type_, schema, out, apath, path, problems, counts)
    if inputs_key is not None:
        paths = {**layer.arg_paths, "inputs": apath + inputs_key}
        layer = replace(layer, inputs=graph_inputs, arg_paths=paths)
    return layer


def _layer_refs(value: Any, path: PathT, problems: _Problems) -> tuple[str, ...]:
    """A layer's `inputs:`: a name or a list of names."""
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    problems.add(path, "expected a layer or input name, or a list of them")
    return ()


def _keras1_merge(args: Any, path: PathT, problems: _Problems) -> tuple[str | None, dict]:
    """Keras 1's `Merge: {mode: sum|mul|ave|max|concat|dot|cos, concat_axis, dot_axes}`."""
    args = dict(args) if isinstance(args, dict) else {}
    mode = args.pop("mode", "sum")
    if mode not in MERGE_MODES:
        problems.add(path + ("Merge", "mode"), unknown_name_message("merge mode", mode,
                                                                   list(MERGE_MODES)))
        return None, {}
    if mode == "cos":
        args["normalize"] = True
    if mode in ("dot", "cos"):
        args.setdefault("dot_axes", -1)
    return MERGE_MODES[mode], args


def _nested_graph(value: Any, path: PathT, problems: _Problems) -> ModelSpec | None:
    """A nested graph model: validated like model: in the graph form."""
    if not isinstance(value, dict) or "inputs" not in value:
        problems.add(path, "expected a graph model: {inputs: {name: shape}, layers: [...], "
                           "outputs: [...]}")
        return None
    inner = _validate_model(value, problems, path)
    if inner.outputs is not None and len(inner.outputs) != 1:
        problems.add(path + ("outputs",), "a nested model used as a layer has one output")
    return inner


def _nested_stack(value: Any, path: PathT, problems: _Problems) -> tuple[LayerSpec, ...]:
    """A nested Sequential's layers: validated like a model's, a chain (no `inputs:`)."""
    if not isinstance(value, list) or not value:
        problems.add(path, "expected a non-empty list of layers, e.g. - Dense: {units: 8}")
        return ()
    out, counts = [], {}
    for i, item in enumerate(value):
        layer = _validate_layer(item, path + (i,), problems, counts)
        if layer is None:
            continue
        if layer.args.pop("__input_shape__", None) is not None:
            problems.add(layer.path, "a nested model takes its input shape from where it is "
                                     "used: give none inside it")
        if layer.inputs is not None:
            problems.add(layer.arg_path("inputs"), "a nested Sequential is a chain: `inputs:` "
                                                   "goes on the Sequential itself")
        out.append(layer)
    names = [x.name for x in out]
    for layer in out:
        if names.count(layer.name) > 1:
            problems.add(layer.path, f"layer name {layer.name!r} is used more than once")
    return tuple(out)


def _nested_layer(value: Any, path: PathT, problems: _Problems) -> dict | None:
    """A wrapper's layer, validated as a layer; kept as `{Type: {name, **args}}`."""
    inner = _validate_layer(value, path, problems, {})
    if inner is None:
        return None
    if inner.args.pop("__input_shape__", None) is not None:
        problems.add(path, "give the input shape on the wrapper, not on the wrapped layer")
    return {inner.type: {"name": inner.name, **inner.args}}


KERAS1_KERNEL_DIMS = (("nb_row", "nb_col"), ("kernel_dim1", "kernel_dim2", "kernel_dim3"))


def _keras1_kernel_size(args: dict, apath: PathT, problems: _Problems) -> dict:
    """Keras 1's Convolution2D(nb_filter, nb_row, nb_col) -> kernel_size: [rows, cols];
    Convolution3D's kernel_dim1..3 likewise."""
    for names in KERAS1_KERNEL_DIMS:
        if not any(n in args for n in names):
            continue
        args = dict(args)
        dims = [args.pop(n, None) for n in names]
        if any(d is None for d in dims):
            problems.add(apath, f"give all of {', '.join(names)} (or kernel_size)")
        else:
            args["kernel_size"] = dims
    return args


def _finish_layer(type_, schema, given, apath, path, problems, counts) -> LayerSpec:
    args: dict[str, Any] = {}
    for arg in schema.args:
        if arg.name not in given:
            if arg.required:
                problems.add(apath, f"{type_} needs {arg.name!r}")
            args[arg.name] = None if arg.required else arg.default
            continue
        key, value = given[arg.name]
        if arg.check is nested_layer:
            args[arg.name] = _nested_layer(value, apath + (key,), problems)
            continue
        if arg.check is nested_layers:
            args[arg.name] = _nested_stack(value, apath + (key,), problems)
            continue
        if arg.check is nested_graph:
            args[arg.name] = _nested_graph(value, apath + (key,), problems)
            continue
        try:
            args[arg.name] = arg.check(value)
        except ArgTypeError as exc:
            problems.add(apath + (key,), str(exc))
    input_shape = _layer_input_shape(given, apath, problems,
                                     input_dim_is_arg=schema.arg("input_dim") is not None)
    if input_shape is not None:
        args["__input_shape__"] = input_shape
    name = given.get("name", (None, None))[1]
    if name is not None and (not isinstance(name, str) or not name):
        problems.add(apath + (given["name"][0],), "expected a non-empty string")
        name = None
    if name is None:
        base = _snake(type_)
        n = counts.get(base, 0)
        counts[base] = n + 1
        name = base if n == 0 else f"{base}_{n}"
    arg_paths = {canon: apath + (key,) for canon, (key, _) in given.items()}
    return LayerSpec(type=type_, name=name, args=args, path=path,
                     arg_paths=arg_paths)


def _layer_input_shape(given, apath, problems, *, input_dim_is_arg: bool = False
                       ) -> tuple[int, ...] | None:
    """Keras's input_shape / input_dim / batch_input_shape on a first layer.

    On an Embedding, `input_dim` is the vocabulary size, and `input_length` alone
    gives the input shape.
    """
    try:
        if input_dim_is_arg and "input_length" in given and "input_shape" not in given:
            return (positive_int(given["input_length"][1]),)
        if "input_shape" in given:
            return shape(given["input_shape"][1])
        if "batch_input_shape" in given:
            value = given["batch_input_shape"][1]
            if not isinstance(value, list) or len(value) < 2:
                raise ArgTypeError("expected [batch, dims...] with batch null")
            return shape(value[1:])
        if "input_dim" in given and not input_dim_is_arg:
            dim = positive_int(given["input_dim"][1])
            length = given.get("input_length", (None, None))[1]
            return (positive_int(length), dim) if length is not None else (dim,)
    except ArgTypeError as exc:
        problems.add(apath, f"input shape: {exc}")
    return None


# ---------------------------------------------------------------- writing

def model_to_dict(model: ModelSpec) -> dict:
    """The architecture alone, in canonical names: model.yaml / model.json."""
    out: dict[str, Any] = {}
    if model.input_shape is not None:
        out["input_shape"] = list(model.input_shape)
    if model.input_dtype != "float32":
        out["input_dtype"] = model.input_dtype
    if model.inputs is not None:
        out["inputs"] = {i.name: list(i.shape) if i.dtype == "float32" else
                         {"shape": list(i.shape), "dtype": i.dtype} for i in model.inputs}
    out["layers"] = []
    for layer in model.layers:
        args = {"name": layer.name, **layer.args}
        if layer.inputs is not None:
            args["inputs"] = list(layer.inputs)
        out["layers"].append({layer.type: _plain(args)})
    if model.outputs is not None:
        out["outputs"] = list(model.outputs)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, ModelSpec):   # a nested graph model
        return model_to_dict(value)
    if isinstance(value, LayerSpec):   # a nested model's layer
        return {value.type: _plain({"name": value.name, **value.args})}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def dump_yaml(value: Any) -> str:
    return yaml.safe_dump(_plain(value), sort_keys=False, default_flow_style=None)
