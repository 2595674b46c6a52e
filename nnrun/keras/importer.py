"""Keras model configs -> nnrun's `model:` dict: Sequential stacks and Functional graphs.

Reads Keras 3 (`to_json()`, a `.keras` file's config.json) and Keras 1/2 (`to_json()`:
`batch_input_shape`, `inbound_nodes` as nested lists). A shared layer's later calls
become Reuse layers; nested models become Sequential / Model layers. Layers that hold
code (Lambda) or come from outside Keras are refused by name and location. Jax-free.
"""

from __future__ import annotations

from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.layer_schemas import LAYERS, canonical_type
from nnrun.config.model_spec import MERGE_MODES
from nnrun.config.registry import unknown_name_message
from nnrun.keras.layer_args import LayerProblem, args_from_keras, fresh_name
from nnrun.keras.names import snake

CODE_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda")
MODEL_TYPES = ("Sequential", "Model", "Reuse")   # nnrun layer types that are no Keras class


def from_keras_json(obj: Any, *, source: str | None = None) -> dict:
    """nnrun's `model:` dict (canonical names, defaults left out) from a Keras model config:
    Keras 3 (`to_json()`, a `.keras` file's config.json) or Keras 1/2 (`to_json()`).

    Anything nnrun cannot build the same way is a ConfigError located as
    `<source>: config.layers[3]: ...`.
    """
    try:
        return _import_model(obj)
    except LayerProblem as problem:
        where = f"{source}: {problem.path}" if source else problem.path
        raise ConfigError(problem.message, where=where) from None


def _import_model(obj: Any) -> dict:
    if not isinstance(obj, dict) or "class_name" not in obj:
        hint = (": this is nnrun's own architecture file; name it in a config as `model: "
                "path`" if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else "")
        raise LayerProblem("<root>", "expected a Keras model config (an object with class_name "
                                     f"and config){hint}")
    class_name, config = obj["class_name"], obj.get("config")
    if class_name == "Sequential":
        return _sequential(config, "config", top=True)
    if class_name in ("Functional", "Model"):
        return _graph(config, "config")
    raise LayerProblem("class_name", f"{class_name!r} is not a Keras Sequential or Functional "
                                     "model (a subclassed model's architecture is Python code)")


def _layer_list(config: Any, path: str) -> tuple[list, str]:
    if isinstance(config, list):   # Keras 1 / early Keras 2 Sequential
        return config, path
    if isinstance(config, dict) and isinstance(config.get("layers"), list):
        return config["layers"], f"{path}.layers"
    raise LayerProblem(path, "expected the model's config with a list of layers")


def _shape(batch_shape: Any, path: str, *, batch: bool = True) -> list[int] | None:
    """The dims after the batch axis; None when one is variable (null)."""
    if not isinstance(batch_shape, list) or len(batch_shape) < (2 if batch else 1):
        raise LayerProblem(path, f"expected a shape such as [null, 8], got {batch_shape!r}")
    dims = batch_shape[1:] if batch else batch_shape
    if any(d is None for d in dims):
        return None
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise LayerProblem(path, f"expected positive dimensions, got {batch_shape!r}")
    return list(dims)


def _int_dtype(dtype: Any) -> bool:
    if isinstance(dtype, dict):   # a dtype policy
        dtype = (dtype.get("config") or {}).get("name")
    return isinstance(dtype, str) and dtype.startswith(("int", "uint"))


def _input_of(entry: dict, path: str) -> tuple[list[int] | None, bool]:
    """(shape, integer dtype?) of an InputLayer."""
    config = entry.get("config") or {}
    for key in ("sparse", "ragged"):
        if config.get(key):
            raise LayerProblem(f"{path}.config.{key}", f"{key} inputs are not supported by nnrun")
    key = "batch_shape" if "batch_shape" in config else "batch_input_shape"
    shape = _shape(config.get(key), f"{path}.config.{key}")
    return shape, _int_dtype(config.get("dtype", config.get("input_dtype")))


def _first_input(entry: dict, path: str) -> tuple[list[int] | None, bool]:
    """Keras 1/2: the input shape on a Sequential model's first layer."""
    config = entry.get("config") or {}
    is_int = _int_dtype(config.get("input_dtype", config.get("dtype")))
    for key in ("batch_input_shape", "batch_shape"):
        if config.get(key) is not None:
            return _shape(config[key], f"{path}.config.{key}"), is_int
    if config.get("input_shape") is not None:
        return _shape(config["input_shape"], f"{path}.config.input_shape", batch=False), is_int
    length = config.get("input_length")
    if canonical_type(str(entry.get("class_name"))) == "Embedding":
        return ([length] if isinstance(length, int) else None), is_int
    if isinstance(config.get("input_dim"), int):
        return ([length, config["input_dim"]] if isinstance(length, int) else
                [config["input_dim"]]), is_int
    return None, is_int


def _sequential(config: Any, path: str, *, top: bool) -> dict:
    entries, lpath = _layer_list(config, path)
    shape, is_int, layers = None, False, []
    for i, entry in enumerate(entries):
        epath = f"{lpath}[{i}]"
        if isinstance(entry, dict) and entry.get("class_name") == "InputLayer":
            if layers:
                raise LayerProblem(epath, "an InputLayer after the first layer")
            shape, is_int = _input_of(entry, epath)
            continue
        if not layers and shape is None and isinstance(entry, dict):
            shape, is_int = _first_input(entry, epath)
        layers.append(_layer(entry, epath))
    if not layers:
        raise LayerProblem(lpath, "the model has no layers")
    if shape is None and isinstance(config, dict) and config.get("build_input_shape"):
        shape = _shape(config["build_input_shape"], f"{path}.build_input_shape")
    model: dict[str, Any] = {}
    if top and shape is not None:
        model["input_shape"] = shape
    if top and is_int and "Embedding" not in layers[0]:
        model["input_dtype"] = "int32"
    model["layers"] = _drop_auto_names(layers)
    return model


def _drop_auto_names(items: list[dict]) -> list[dict]:
    """Leave out the names nnrun would give anyway (dense, dense_1, ...): as it counts."""
    counts: dict[str, int] = {}
    for item in items:
        type_, args = next(iter(item.items()))
        base = snake(type_)
        n = counts.get(base, 0)
        if args.get("name") == (base if n == 0 else f"{base}_{n}"):
            del args["name"]
            counts[base] = n + 1
    return items


def _refs(value: Any, path: str) -> list[list]:
    """input_layers / output_layers: [name, node, tensor], a list of them, or a mapping."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list) and value and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or not value or not all(
            isinstance(r, list) and len(r) >= 2 and isinstance(r[0], str) for r in value):
        raise LayerProblem(path, f"expected [layer, node, tensor] references, got {value!r}")
    return value


def _node_refs(node: Any, path: str) -> list[tuple[str, int, int]]:
    """The (layer, node, tensor) references one call of a layer takes (Keras 3's
    `{args, kwargs}` or Keras 1/2's list of [layer, node, tensor, kwargs])."""
    if isinstance(node, dict):
        args, kwargs = node.get("args") or [], node.get("kwargs") or {}
        if len(args) != 1:
            raise LayerProblem(path, "expected one positional argument (the inputs) per call")
        tensors = args[0] if isinstance(args[0], list) else [args[0]]
        refs = []
        for t in tensors:
            history = (t.get("config") or {}).get("keras_history") if isinstance(t, dict) \
                else None
            if not isinstance(history, list) or len(history) != 3:
                raise LayerProblem(path, "expected Keras tensors (keras_history) as inputs")
            refs.append(tuple(history))
    elif isinstance(node, list) and all(isinstance(r, list) and len(r) >= 3 for r in node):
        refs = [tuple(r[:3]) for r in node]
        kwargs = {k: v for r in node if len(r) > 3 and isinstance(r[3], dict)
                  for k, v in r[3].items()}
    else:
        raise LayerProblem(path, f"expected a call of the layer, got {node!r}")
    extra = [k for k in kwargs if k not in ("mask", "training")]
    if extra:
        raise LayerProblem(path, f"call arguments {', '.join(map(repr, extra))} are not "
                                 "supported (nnrun layers take their inputs only)")
    return refs


def _graph(config: Any, path: str) -> dict:
    """A Functional config -> nnrun's graph: named inputs, layers wired by `inputs:`
    (a shared layer's second and later calls are Reuse layers), outputs."""
    entries, lpath = _layer_list(config, path)
    shapes: dict[str, Any] = {}
    called: list[tuple[str, dict, list, str]] = []   # (name, item, calls, JSON path)
    for i, entry in enumerate(entries):
        epath = f"{lpath}[{i}]"
        if not isinstance(entry, dict):
            raise LayerProblem(epath, "expected a layer {class_name, config}")
        name = entry.get("name") or (entry.get("config") or {}).get("name")
        if entry.get("class_name") == "InputLayer":
            shape, is_int = _input_of(entry, epath)
            if shape is None:
                raise LayerProblem(epath, f"input {name!r} has a variable dimension (null): "
                                          "nnrun's graph inputs have fixed shapes")
            shapes[name] = {"shape": shape, "dtype": "int32"} if is_int else shape
            continue
        item = _layer(entry, epath)
        nodes = entry.get("inbound_nodes") or []
        called.append((name, item, [_node_refs(n, f"{epath}.inbound_nodes[{k}]")
                                    for k, n in enumerate(nodes)], epath))
    inputs = {r[0]: shapes.get(r[0]) for r in _refs(config.get("input_layers"),
                                                    f"{path}.input_layers")}
    if None in inputs.values() or len(inputs) != len(shapes):
        raise LayerProblem(f"{path}.input_layers", "the model's inputs and InputLayers differ")
    taken = set(inputs) | {name for name, *_ in called}
    node_names = {(n, 0): n for n in inputs}
    for name, _, calls, _ in called:
        node_names[(name, 0)] = name
        for k in range(1, len(calls)):
            node_names[(name, k)] = fresh_name(f"{name}_reuse" + (f"_{k}" if k > 1 else ""), taken)
            taken.add(node_names[(name, k)])

    def names(refs: list, where: str) -> list[str]:
        for layer, node, tensor in refs:
            if tensor != 0:
                raise LayerProblem(where, f"takes output {tensor} of {layer!r}: nnrun's graphs use "
                                          "one output per layer (no return_state)")
            if (layer, node) not in node_names:
                raise LayerProblem(where, f"refers to call {node} of {layer!r}, which the file "
                                          "does not define")
        return [node_names[(layer, node)] for layer, node, _ in refs]

    items: list[dict] = []
    reuses: list[tuple[dict, set[str]]] = []
    for name, item, calls, epath in called:
        if not calls:
            raise LayerProblem(epath, f"layer {name!r} is not connected (no inbound_nodes)")
        where = f"{epath}.inbound_nodes"
        next(iter(item.values()))["inputs"] = names(calls[0], f"{where}[0]")
        items.append(item)
        for k, refs in enumerate(calls[1:], 1):
            reuses.append(({"Reuse": {"name": node_names[(name, k)], "layer": name,
                                      "inputs": names(refs, f"{where}[{k}]")}},
                           {node_names[(name, j)] for j in range(k)}))
    for reuse, earlier in reuses:
        _insert_after(items, reuse, earlier)
    outputs = names([tuple(r[:3]) if len(r) >= 3 else (r[0], r[1], 0) for r in _refs(
        config.get("output_layers"), f"{path}.output_layers")], f"{path}.output_layers")
    return {"inputs": inputs, "layers": _drop_chained_inputs(items, list(inputs)),
            "outputs": outputs}


def _insert_after(items: list[dict], item: dict, earlier: set[str]) -> None:
    """Place a Reuse after the layers it takes and the `earlier` calls of its layer
    (readable; nnrun runs the layers in a topological order anyway)."""
    needed = {*item["Reuse"]["inputs"], *earlier}
    at = max((i for i, x in enumerate(items) if next(iter(x.values()))["name"] in needed),
             default=len(items) - 1)
    items.insert(at + 1, item)


def _drop_chained_inputs(items: list[dict], inputs: list[str]) -> list[dict]:
    """Leave out `inputs:` where it is the previous layer (or the only input): nnrun's
    default."""
    previous = inputs[0] if len(inputs) == 1 else None
    for item in items:
        args = next(iter(item.values()))
        if previous is not None and args["inputs"] == [previous]:
            del args["inputs"]
        previous = args["name"]
    return items


def _layer(entry: Any, path: str) -> dict:
    """One Keras layer config -> `{Type: {name, **args}}`, with `trainable: false` if
    the layer is frozen in Keras."""
    item = _layer_item(entry, path)
    config = entry.get("config") if isinstance(entry, dict) else None
    if isinstance(config, dict) and config.get("trainable") is False:
        next(iter(item.values()))["trainable"] = False
    return item


def _layer_item(entry: Any, path: str) -> dict:
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise LayerProblem(path, "expected a layer: {class_name, config}")
    class_name, config = entry["class_name"], entry.get("config") or {}
    if not isinstance(config, dict):
        raise LayerProblem(path, f"expected a mapping as the layer's config, got {config!r}")
    name = config.get("name") or entry.get("name")
    what = f"layer {name!r} ({class_name})"
    module, registered = entry.get("module"), entry.get("registered_name")
    if class_name in CODE_LAYERS:
        raise LayerProblem(path, f"{what} holds Python code, which nnrun never runs from a "
                                 "file: rebuild it from nnrun layers")
    if (module and not str(module).startswith("keras")) or (
            registered and registered not in (class_name, "Functional")):
        raise LayerProblem(path, f"{what} is a custom layer (module {module!r}, registered "
                                 f"as {registered!r}); nnrun reads Keras's own layers only")
    if class_name == "Sequential":
        return {"Sequential": {"name": name, "layers": _sequential(
            config, f"{path}.config", top=False)["layers"]}}
    if class_name in ("Functional", "Model"):
        return {"Model": {"name": name, "graph": _graph(config, f"{path}.config")}}
    if class_name == "Merge":
        class_name, config = _keras1_merge(config, path)
    type_ = canonical_type(class_name)
    schema = LAYERS.get(type_)
    if schema is None or type_ in MODEL_TYPES:
        choices = [t for t in LAYERS if t not in MODEL_TYPES]
        raise LayerProblem(path, f"{what}: " + unknown_name_message("layer type", class_name,
                                                                    choices))
    args = args_from_keras(type_, schema, config, f"{path}.config", _layer)
    return {type_: {"name": name, **args}}


def _keras1_merge(config: dict, path: str) -> tuple[str, dict]:
    """Keras 1's Merge(mode=sum|mul|ave|max|concat|dot|cos) -> the merge layer."""
    mode = config.get("mode", "sum")
    if not isinstance(mode, str):
        raise LayerProblem(f"{path}.config.mode", "a Merge layer whose mode is a Python "
                                                  "function holds code, which nnrun never runs")
    if mode not in MERGE_MODES:
        raise LayerProblem(f"{path}.config.mode", unknown_name_message("merge mode", mode,
                                                                       list(MERGE_MODES)))
    type_ = MERGE_MODES[mode]
    out: dict[str, Any] = {"name": config.get("name")}
    if type_ == "Concatenate":
        out["axis"] = config.get("concat_axis", -1)
    if type_ == "Dot":
        out["axes"] = config.get("dot_axes", -1)
        out["normalize"] = mode == "cos"
    return type_, out
