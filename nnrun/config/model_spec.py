"""The `model:` section: layer specs, model specs (a Sequential stack or a graph of
named inputs, layers and outputs, nested models too) and their validation, and
the architecture written back as canonical YAML (model.yaml). Jax-free.

Longer than the house's ~450 lines on purpose: validating a model and validating a
layer recurse into each other (a nested Sequential or graph model is a layer that
holds a model; a wrapper holds a layer), and both build the same dataclasses, so a
split would either import in a circle or pass the validators around as arguments.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from nnrun.config.checks import MODEL_KEYS, Problems, check_keys, typed_field
from nnrun.config.layer_schemas import COMMON_ALIASES, COMMON_ARGS, LAYERS, canonical_type
from nnrun.config.registry import unknown_name_message
from nnrun.config.values import (
    ArgTypeError,
    boolean,
    got,
    nested_graph,
    nested_layer,
    nested_layers,
    positive_int,
    shape,
)
from nnrun.config.yamlsrc import Origins, PathT

# Keras 1's Merge(mode=...) -> the merge layer types.
MERGE_MODES = {"sum": "Add", "mul": "Multiply", "ave": "Average", "max": "Maximum",
               "concat": "Concatenate", "dot": "Dot", "cos": "Dot"}
# Keras 3's names of those merges, which a Keras 1 mode is often mistaken for.
KERAS3_MERGE_NAMES = {"add": "sum", "multiply": "mul", "average": "ave", "maximum": "max",
                      "concatenate": "concat"}
INPUT_DTYPES = ("float32", "int32")
# Layer types that Bidirectional / TimeDistributed cannot wrap: models and shared layers.
UNWRAPPABLE = ("Sequential", "Model", "Reuse")
INTEGER_INPUT_LAYERS = ("Embedding",)


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
    # Keras's `trainable`: false freezes the layer's (a nested model's: all its) weights.
    trainable: bool = True
    # Keras 1's `weights=`: initial arrays (nested lists) in get_weights() order.
    initial_weights: tuple | None = None

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
    # model.weights: a checkpoint (.h5) to start from, layers matched by name (absolute).
    weights: str | None = None

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


def validate_model(model: dict, problems: Problems, path: PathT = ("model",)) -> ModelSpec:
    """The `model:` section (or a nested graph model's) validated."""
    spec = _validate_model(model, problems, path)
    weights = model.get("weights")
    if weights is None:
        return spec
    if path != ("model",):
        problems.add(path + ("weights",), "weights: goes on the top-level model only",
                     key=True)
    elif not isinstance(weights, str) or not weights:
        problems.add(path + ("weights",), "expected the path of a checkpoint to start from, "
                                          "e.g. runs/base/checkpoints/best.h5, " + got(weights))
    else:
        return replace(spec, weights=weights)
    return spec


def _validate_model(model: dict, problems: Problems, path: PathT) -> ModelSpec:
    check_keys(model, MODEL_KEYS, path, problems, "model")
    input_shape = typed_field(model, "input_shape", shape, None, path, problems)
    input_dim = typed_field(model, "input_dim", positive_int, None, path, problems)
    if input_dim is not None:
        input_shape = (input_dim,)
    dtype = model.get("input_dtype", "float32")
    if dtype not in INPUT_DTYPES:
        problems.add(path + ("input_dtype",), unknown_name_message("dtype", dtype,
                                                                   list(INPUT_DTYPES)))
    layers_raw = model.get("layers")
    if not isinstance(layers_raw, list) or not layers_raw:
        problems.add(path + ("layers",) if "layers" in model else path,
                     "expected a non-empty list of layers, e.g. - Dense: {units: 8}, "
                     + (got(layers_raw) if "layers" in model else "got none"))
        return ModelSpec(input_shape, dtype, ())
    layers: list[LayerSpec] = []
    counts: dict[str, int] = {}
    broken = _Broken()
    for i, item in enumerate(layers_raw):
        before = len(problems.items)
        layer = _validate_layer(item, path + ("layers", i), problems, counts)
        if layer is None:
            broken.add(item)
            continue
        first_shape = layer.args.pop("__input_shape__", None)
        if first_shape is not None:
            if layers or input_shape is not None:
                problems.add(layer.path, "an input shape (input_dim/input_shape) may only be "
                                         "given once, on the first layer or as model.input_shape")
            else:
                input_shape = first_shape
        layers.append(layer)
        if path == ("model",) and len(problems.items) == before:
            problems.clean_layers.append(layer)
    names = Counter(layer.name for layer in layers)
    for layer in layers:
        if names[layer.name] > 1:
            problems.add(layer.path, f"layer name {layer.name!r} is used more than once")
    _check_reuse_targets(layers, broken, problems)
    if "input_dtype" not in model and layers and layers[0].type in INTEGER_INPUT_LAYERS:
        dtype = "int32"   # token ids
    if "inputs" not in model and "outputs" not in model:
        for layer in layers:
            if layer.inputs is not None:
                problems.add(layer.path, "`inputs:` on a layer needs the graph form: name the "
                                         "model's inputs in model.inputs (DESIGN.md section 2)")
        return ModelSpec(input_shape, dtype, tuple(layers))
    return _validate_graph(model, input_shape, tuple(layers), path, problems, broken)


def _check_reuse_targets(layers, broken: _Broken, problems: Problems) -> None:
    """Every Reuse names a layer of the same (sub)model that has weights of its own."""
    owners = [x.name for x in layers if x.type != "Reuse"]
    known = set(owners)
    for layer in layers:
        target = layer.args.get("layer")
        if layer.type == "Reuse" and target not in known and not broken.covers(target):
            problems.add(layer.arg_path("layer"), unknown_name_message(
                "layer to reuse", target, owners))


class _Broken:
    """The layers that failed validation: a reference to one of them (by its `name:`, or
    to any name when one has no `name:`) is not reported again as unknown."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.unnamed = False

    def add(self, item: Any) -> None:
        args = next(iter(item.values())) if isinstance(item, dict) and len(item) == 1 else None
        if isinstance(args, dict) and isinstance(args.get("name"), str):
            self.names.add(args["name"])
        else:
            self.unnamed = True

    def covers(self, name: Any) -> bool:
        return self.unnamed or (isinstance(name, str) and name in self.names)

    def __bool__(self) -> bool:
        return self.unnamed or bool(self.names)


def _validate_graph(model: dict, input_shape, layers: tuple[LayerSpec, ...], path: PathT,
                    problems: Problems, broken: _Broken) -> ModelSpec:
    """The graph form: named inputs, layers wired by `inputs:`, named outputs. Checks the
    names, that every input and layer is used, and that there is no cycle. Where a layer
    or input failed validation, or a reference is unknown, the unused checks are skipped
    (they would only repeat that problem)."""
    inputs_raw = model.get("inputs")
    inputs = _graph_inputs(inputs_raw, path + ("inputs",), problems)
    input_names = {i.name for i in inputs}
    for name in inputs_raw if isinstance(inputs_raw, dict) else ():
        if str(name) not in input_names:
            broken.names.add(str(name))
    if input_shape is not None:
        problems.add(path, "give either model.input_shape (a Sequential stack) or "
                           "model.inputs (a graph), not both")
    nodes = [i.name for i in inputs] + [layer.name for layer in layers]
    known = set(nodes)
    for layer in layers:
        if layer.name in input_names:
            problems.add(layer.path, f"layer name {layer.name!r} is also an input's name")
    complete = not broken
    wired: list[LayerSpec] = []
    previous = inputs[0].name if len(inputs) == 1 else None
    for layer in layers:
        refs = layer.inputs
        if refs == ():   # `inputs:` that is not a name or a list of them: said so
            complete = False
        if refs is None:
            if previous is None:
                if inputs:
                    problems.add(layer.path, "say which input this layer takes (`inputs:`): "
                                             "the model has several inputs")
                refs, complete = (), False
            else:
                refs = (previous,)
        for ref in refs:
            if ref not in known:
                complete = False
                if not broken.covers(ref):
                    problems.add(layer.arg_path("inputs"),
                                 unknown_name_message("input or layer", ref, nodes))
        wired.append(replace(layer, inputs=tuple(refs)))
        previous = layer.name
    outputs_raw = model.get("outputs", [layers[-1].name] if layers else [])
    if isinstance(outputs_raw, str):
        outputs_raw = [outputs_raw]
    outputs: list[str] = []
    if not isinstance(outputs_raw, list) or not outputs_raw:
        if "outputs" in model or complete:
            problems.add(path + ("outputs",), "expected a list of layer names, e.g. [out]")
        complete = False
    else:
        for i, name in enumerate(outputs_raw):
            if not isinstance(name, str) or name not in known:
                complete = False
                if not broken.covers(name):
                    problems.add(path + ("outputs", i), unknown_name_message(
                        "layer", name, [x.name for x in layers]))
            elif name in outputs:
                problems.add(path + ("outputs", i), f"{name!r} is listed twice")
            else:
                outputs.append(name)
    _check_cycles(wired, problems)
    if complete:
        _check_used(inputs, wired, outputs, problems)
    return ModelSpec(None, "float32", tuple(wired), inputs=tuple(inputs),
                     outputs=tuple(outputs))


def _check_used(inputs: list[InputSpec], layers: list[LayerSpec], outputs: list[str],
                problems: Problems) -> None:
    """Every input is taken by a layer; every layer's output is taken or is an output."""
    used = {ref for layer in layers for ref in layer.inputs} | set(outputs)
    for i in inputs:
        if i.name not in used:
            problems.add(i.path, f"input {i.name!r} is not used by any layer")
    for layer in layers:
        if layer.name not in used:
            problems.add(layer.path, f"the output of layer {layer.name!r} is not used: give it "
                                     "to a layer (`inputs:`) or list it in model.outputs")


def _graph_inputs(raw: Any, path: PathT, problems: Problems) -> list[InputSpec]:
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
            check_keys(value, ("shape", "dtype"), ipath, problems, f"input {name!r}")
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


def _check_cycles(layers: list[LayerSpec], problems: Problems) -> None:
    """A layer that (through others) takes its own output is an error naming the cycle."""
    deps = {layer.name: [r for r in layer.inputs if r != layer.name] for layer in layers}
    by_name = {layer.name: layer for layer in layers}
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    for layer in layers:
        if layer.name in layer.inputs:
            problems.add(layer.arg_path("inputs"), f"layer {layer.name!r} takes its own output")
        cycle = _cycle_from(layer.name, deps, state)
        if cycle:
            problems.add(by_name[cycle[0]].arg_path("inputs"),
                         "the layers form a cycle (each takes the next one's output): "
                         + " <- ".join(cycle))
            return


def _cycle_from(start: str, deps: dict[str, list[str]], state: dict[str, int]
                ) -> list[str] | None:
    """The first cycle a depth-first walk from `start` meets (its names, the first
    repeated at the end), or None; without recursion, linear in the layers and their
    inputs over all the calls of one `state` (a chain of 20,000 layers is no problem)."""
    if state.get(start) == 2 or start not in deps:
        return None
    trail, pending = [start], [iter(deps[start])]
    state[start] = 1
    while pending:
        for ref in pending[-1]:
            if state.get(ref) == 2 or ref not in deps:
                continue
            if state.get(ref) == 1:
                return trail[trail.index(ref):] + [ref]
            state[ref] = 1
            trail.append(ref)
            pending.append(iter(deps[ref]))
            break
        else:
            state[trail.pop()] = 2
            pending.pop()
    return None


def _snake(name: str) -> str:
    """Keras's default layer names: Dense -> dense, MaxPooling2D -> max_pooling2d."""
    name = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer_parts(item: Any, path: PathT, problems: Problems) -> tuple[str, Any] | None:
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and len(item) == 1:
        return next(iter(item.items()))
    received = (f"got a mapping of {len(item)} keys ({', '.join(map(str, item))})"
                if isinstance(item, dict) else got(item))
    problems.add(path, "a layer is a one-key mapping such as {Dense: {units: 8}}, "
                       + received)
    return None


def _validate_layer(item: Any, path: PathT, problems: Problems,
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


def layer_names(items: list, path: PathT = ()) -> list[str | None]:
    """The name of each item of a list of layers as validation gives it (its `name:`, or
    Keras's automatic `dense`, `dense_1`...); None for an item that is not a layer.
    For `--set model.layers[hidden].units=8` (nnrun/config/overrides.py)."""
    scratch = Problems(Origins())   # the list's own problems are validation's to report
    counts: dict[str, int] = {}
    out: list[str | None] = []
    for i, item in enumerate(items):
        layer = _validate_layer(item, path + (i,), scratch, counts)
        out.append(layer.name if layer is not None else None)
    return out


def _layer_refs(value: Any, path: PathT, problems: Problems) -> tuple[str, ...]:
    """A layer's `inputs:`: a name or a list of names."""
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    problems.add(path, "expected a layer or input name, or a list of them")
    return ()


def _keras1_merge(args: Any, path: PathT, problems: Problems) -> tuple[str | None, dict]:
    """Keras 1's `Merge: {mode: sum|mul|ave|max|concat|dot|cos, concat_axis, dot_axes}`."""
    where = path + ("Merge",) if isinstance(args, str) else path + ("Merge", "mode")
    if isinstance(args, str):   # `Merge: concat`: a scalar is the first argument, mode
        args = {"mode": args}
    elif args is not None and not isinstance(args, dict):
        problems.add(path + ("Merge",), "expected a mapping such as {mode: concat}, "
                                        "or a mode name")
        return None, {}
    args = dict(args or {})
    mode = args.pop("mode", "sum")
    if not isinstance(mode, str) or mode not in MERGE_MODES:
        keras3 = KERAS3_MERGE_NAMES.get(str(mode).lower())
        hint = (f" (did you mean {keras3!r}? Keras 3 has the {MERGE_MODES[keras3]} layer)"
                if keras3 else "")
        problems.add(where, unknown_name_message("merge mode", mode, list(MERGE_MODES), hint))
        return None, {}
    if mode == "cos":
        args["normalize"] = True
    if mode in ("dot", "cos"):
        args.setdefault("dot_axes", -1)
    return MERGE_MODES[mode], args


def _nested_graph(value: Any, path: PathT, problems: Problems) -> ModelSpec | None:
    """A nested graph model: validated like model: in the graph form."""
    if not isinstance(value, dict) or "inputs" not in value:
        problems.add(path, "expected a graph model: {inputs: {name: shape}, layers: [...], "
                           "outputs: [...]}")
        return None
    inner = validate_model(value, problems, path)
    if inner.outputs is not None and len(inner.outputs) != 1:
        problems.add(path + ("outputs",), "a nested model used as a layer has one output")
    return inner


def _nested_stack(value: Any, path: PathT, problems: Problems) -> tuple[LayerSpec, ...]:
    """A nested Sequential's layers: validated like a model's, a chain (no `inputs:`)."""
    if not isinstance(value, list) or not value:
        problems.add(path, "expected a non-empty list of layers, e.g. - Dense: {units: 8}")
        return ()
    out, counts, broken = [], {}, _Broken()
    for i, item in enumerate(value):
        layer = _validate_layer(item, path + (i,), problems, counts)
        if layer is None:
            broken.add(item)
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
    _check_reuse_targets(out, broken, problems)
    return tuple(out)


def _nested_layer(value: Any, path: PathT, problems: Problems) -> dict | None:
    """A wrapper's layer, validated as a layer; kept as `{Type: {name, **args}}`."""
    inner = _validate_layer(value, path, problems, {})
    if inner is None:
        return None
    if inner.args.pop("__input_shape__", None) is not None:
        problems.add(path, "give the input shape on the wrapper, not on the wrapped layer")
    if inner.type in UNWRAPPABLE:
        problems.add(path, f"a wrapper takes one layer such as {{LSTM: {{units: 8}}}}, not "
                           f"a {inner.type}")
        return None
    if inner.inputs is not None:
        problems.add(inner.arg_path("inputs"), "`inputs:` goes on the wrapper itself")
    return {inner.type: {"name": inner.name, **inner.args}}


KERAS1_KERNEL_DIMS = (("nb_row", "nb_col"), ("kernel_dim1", "kernel_dim2", "kernel_dim3"))


def _keras1_kernel_size(args: dict, apath: PathT, problems: Problems) -> dict:
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
    trainable = True
    if "trainable" in given:
        try:
            trainable = boolean(given["trainable"][1])
        except ArgTypeError as exc:
            problems.add(apath + (given["trainable"][0],), str(exc))
    initial = None
    if "weights" in given:
        key, value = given["weights"]
        try:
            initial = initial_weights(value)
        except ArgTypeError as exc:
            problems.add(apath + (key,), str(exc))
    return LayerSpec(type=type_, name=name, args=args, path=path,
                     arg_paths=arg_paths, trainable=trainable, initial_weights=initial)


def initial_weights(value: Any) -> tuple:
    """Keras 1's `weights=`: a list of arrays written as (nested) lists of numbers."""
    import numpy as np

    if not isinstance(value, list) or not value:
        raise ArgTypeError("expected a list of weight arrays (nested lists of numbers), in "
                           "Keras's get_weights() order, e.g. [[[1, 2]], [0, 0]] for a Dense")
    out = []
    for i, arr in enumerate(value):
        try:
            a = np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError):
            raise ArgTypeError(f"array {i} is not a rectangular nest of numbers") from None
        if not np.isfinite(a).all():
            raise ArgTypeError(f"array {i} has a non-finite value")
        out.append(arr)
    return tuple(out)


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
        if not layer.trainable:
            args["trainable"] = False
        if layer.initial_weights is not None:
            args["weights"] = list(layer.initial_weights)
        if layer.inputs is not None:
            args["inputs"] = list(layer.inputs)
        out["layers"].append({layer.type: plain(args)})
    if model.outputs is not None:
        out["outputs"] = list(model.outputs)
    if model.weights is not None:
        out["weights"] = model.weights
    return out


def plain(value: Any) -> Any:
    if isinstance(value, ModelSpec):   # a nested graph model
        return model_to_dict(value)
    if isinstance(value, LayerSpec):   # a nested model's layer
        extra = {} if value.trainable else {"trainable": False}
        if value.initial_weights is not None:
            extra["weights"] = list(value.initial_weights)
        return {value.type: plain({"name": value.name, **value.args, **extra})}
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
