"""Keras model JSON <-> nnrun's `model:` dict: architectures both ways, no keras needed.

`to_keras_json(spec)` writes the Keras 3 model config (`Sequential` or `Functional`, as
`model.to_json()` does) that `keras.models.model_from_json` builds; `from_keras_json(obj)`
reads a Keras 3 config (`to_json()`, or a `.keras` file's `config.json`) or a Keras 1/2
`to_json()` into nnrun's canonical model dict. A file is data: it is read with `json`
only, and layers that hold code (Lambda) or come from outside Keras are refused by name
and location. Jax-free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.spec import Spec, dump_yaml, spec_from_dict
from nnrun.keras.importer import from_keras_json
from nnrun.keras.layer_args import NO_KERAS_CLASS, arg_to_keras, fresh_name
from nnrun.keras.names import KerasNameError, compile_from_keras, compile_to_keras, keras_object

__all__ = ["to_keras_json", "from_keras_json", "imported_config", "config_text"]


# ---------------------------------------------------------------- nnrun -> Keras

def to_keras_json(model: Spec | dict, *, name: str | None = None,
                  input_shape: list[int] | None = None) -> dict:
    """A Keras 3 model config (what `model.to_json()` holds) for a Spec, a config dict, or
    a `model:` dict. A Spec or config also gives `compile_config` (Keras compiles the model
    with it on load). `input_shape`: for a Sequential stack whose shape comes from the data.
    """
    if isinstance(model, Spec):
        spec, with_compile = model, True
    elif isinstance(model, dict) and "model" in model:
        spec, with_compile = spec_from_dict(model), True
    else:
        spec, with_compile = spec_from_dict({"model": model, "compile": {"loss": "mse"}}), False
    resolved = dict(spec.resolved["model"])
    if input_shape is not None and "inputs" not in resolved:
        resolved.setdefault("input_shape", list(input_shape))
    batch = spec.fit.batch_size if _any_stateful(resolved["layers"]) else None
    exporter = _Exporter(spec.where)
    name = name or spec.name
    if "inputs" in resolved or any("Reuse" in item for item in resolved["layers"]):
        if "inputs" not in resolved:
            resolved = exporter.as_graph(resolved)
        out = keras_object("keras.src.models.functional", "Functional",
                            exporter.graph(resolved, name, ("model",), batch), "Functional")
    else:
        layers = [exporter.layer(item, ("model", "layers", i))
                  for i, item in enumerate(resolved["layers"])]
        if "input_shape" in resolved:
            layers.insert(0, _input_layer(fresh_name("input_layer", _names(resolved["layers"])),
                                          resolved["input_shape"],
                                          resolved.get("input_dtype", "float32"), batch))
        out = keras_object("keras", "Sequential", {"name": name, "trainable": True,
                                                    "layers": layers})
    if with_compile:
        try:
            out["compile_config"] = compile_to_keras(spec.resolved["compile"])
        except KerasNameError as exc:
            raise ConfigError(str(exc), where=spec.where(("compile",))) from None
    return out


def _any_stateful(items: list) -> bool:
    """Whether a layer, nested ones included, is a stateful RNN (Keras then needs the
    batch size in the input shape)."""
    for item in items:
        args = next(iter(item.values()))
        inner = list(args.get("layers") or []) + list(
            (args.get("graph") or {}).get("layers") or [])
        if isinstance(args.get("layer"), dict):
            inner.append(args["layer"])
        if args.get("stateful") or _any_stateful(inner):
            return True
    return False


def _names(items: list) -> set[str]:
    return {args["name"] for item in items for args in item.values()}


def _input_layer(name: str, shape: list, dtype: str, batch: int | None) -> dict:
    config = {"batch_shape": [batch, *shape], "dtype": dtype, "sparse": False, "name": name}
    return {**keras_object("keras.layers", "InputLayer", config), "name": name,
            "inbound_nodes": []}


class _Exporter:
    """Turns resolved nnrun layers into Keras layer configs; errors located by `where`."""

    def __init__(self, where):
        self.where = where

    def fail(self, path: tuple, message: str):
        raise ConfigError(message, where=self.where(path))

    def layer(self, item: dict, path: tuple) -> dict:
        """One layer as Keras's serialized form; `trainable: false` as Keras's. Initial
        `weights:` are not part of a Keras 3 layer's config: the export leaves them out
        (the architecture only, as Keras's to_json)."""
        args = dict(next(iter(item.values())))
        trainable = args.pop("trainable", True)
        args.pop("weights", None)
        obj = self._layer({next(iter(item)): args}, path)
        if trainable is False:
            obj["config"]["trainable"] = False
        return obj

    def _layer(self, item: dict, path: tuple) -> dict:
        type_, args = next(iter(item.items()))
        args = dict(args)
        name = args.pop("name")
        args.pop("inputs", None)
        path = (*path, type_)
        if type_ in NO_KERAS_CLASS:
            self.fail(path, f"layer {name!r}: {type_} has no Keras 3 class: "
                            f"{NO_KERAS_CLASS[type_]}")
        if type_ == "Sequential":
            if any("Reuse" in x for x in args["layers"]):
                self.fail(path, "a Reuse inside a nested Sequential has no Keras form")
            layers = [self.layer(x, (*path, "layers", i)) for i, x in enumerate(args["layers"])]
            return keras_object("keras", "Sequential", {"name": name, "layers": layers})
        if type_ == "Model":
            return keras_object("keras.src.models.functional", "Functional",
                                 self.graph(args["graph"], name, (*path, "graph"), None),
                                 "Functional")
        config: dict[str, Any] = {"name": name}
        for key, value in args.items():
            if key == "layer" and type_ in ("Bidirectional", "TimeDistributed"):
                config["layer"] = self.layer(value, (*path, key))
                continue
            try:
                config.update(arg_to_keras(type_, key, value))
            except KerasNameError as exc:
                self.fail((*path, key), f"layer {name!r}: {exc}")
        return keras_object("keras.layers", type_, config)

    def as_graph(self, model: dict) -> dict:
        """A Sequential stack with a shared layer (Reuse) as a one-input graph."""
        if "input_shape" not in model:
            self.fail(("model",), "a Sequential stack with Reuse needs model.input_shape to "
                                  "be exported (Keras writes it as a Functional model)")
        items, previous = [], fresh_name("input_layer", _names(model["layers"]))
        shape = model["input_shape"]
        inputs = {previous: shape if model.get("input_dtype", "float32") == "float32" else
                  {"shape": shape, "dtype": model["input_dtype"]}}
        for item in model["layers"]:
            type_, args = next(iter(item.items()))
            items.append({type_: {**args, "inputs": [previous]}})
            previous = args["name"]
        return {"inputs": inputs, "layers": items, "outputs": [previous]}

    def graph(self, graph: dict, name: str, path: tuple, batch: int | None) -> dict:
        """A graph's Functional config: InputLayers, then each layer with its calls
        (`inbound_nodes`; a Reuse is one more call of its layer)."""
        items = [next(iter(item.items())) for item in graph["layers"]]
        ref: dict[str, tuple[str, int]] = {n: (n, 0) for n in graph["inputs"]}
        calls = {args["name"]: 1 for type_, args in items if type_ != "Reuse"}
        for type_, args in items:
            if type_ == "Reuse":
                owner = args["layer"]
                ref[args["name"]], calls[owner] = (owner, calls[owner]), calls[owner] + 1
            else:
                ref[args["name"]] = (args["name"], 0)
        layers = [_input_layer(n, s if isinstance(s, list) else s["shape"],
                               "float32" if isinstance(s, list) else s["dtype"], batch)
                  for n, s in graph["inputs"].items()]
        by_name = {}
        for i, (type_, args) in enumerate(items):
            if type_ != "Reuse":
                entry = self.layer({type_: args}, (*path, "layers", i))
                by_name[args["name"]] = {**entry, "name": args["name"], "inbound_nodes": []}
                layers.append(by_name[args["name"]])
        for type_, args in sorted(items, key=lambda t: t[0] == "Reuse"):  # calls in order
            owner = args["layer"] if type_ == "Reuse" else args["name"]
            # Keras 2's form of a call (Keras 3 reads it): a list of [layer, call, tensor,
            # kwargs]; Keras 3's own form needs every tensor's shape.
            by_name[owner]["inbound_nodes"].append([[*ref[r], 0, {}] for r in args["inputs"]])

        def refs(names: list[str]) -> list:
            out = [[*ref[n], 0] for n in names]
            return out[0] if len(out) == 1 else out

        return {"name": name, "trainable": True, "layers": layers,
                "input_layers": refs(list(graph["inputs"])), "output_layers": refs(
                    graph["outputs"])}


# ---------------------------------------------------------------- import-keras

PLACEHOLDER_COMPILE = {"optimizer": "rmsprop", "loss": "mse"}


def imported_config(obj: Any, *, source: str, name: str, training_config: dict | None = None,
                    known_metric: Callable[[str], bool] | None = None,
                    check_compile: Callable[[dict], None] | None = None,
                    ) -> tuple[dict, list[str]]:
    """`nnrun import-keras`: a whole config from a Keras model config, and notes for the
    reader. `compile:` comes from Keras 3's `compile_config` (a `.keras` file) or Keras 2's
    `training_config` (an `.h5` file), else it is a placeholder the notes point out.
    Metrics that `known_metric` rejects are left out; if `check_compile(config)` raises a
    ConfigError, the placeholder is used (the caller passes nnrun's registries)."""
    model = from_keras_json(obj, source=source)
    spec_from_dict({"model": model, "compile": PLACEHOLDER_COMPILE}, source=source)
    outputs = model.get("outputs") or ["output"]   # a Sequential stack: one output
    keras_compile = (obj.get("compile_config") if isinstance(obj, dict) else None) or \
        training_config
    notes = [f"Imported from {source} by `nnrun import-keras`. Fill in data: before training."]
    placeholder = "compile: is a placeholder; set the optimizer and loss."
    config = {"name": name, "seed": 0, "model": model, "compile": dict(PLACEHOLDER_COMPILE),
              "fit": {"batch_size": 32, "epochs": 1}}
    if not keras_compile:
        notes.append(f"The Keras file has no compile config: {placeholder}")
        return config, notes
    try:
        config["compile"] = compile_from_keras(keras_compile, list(outputs))
        if known_metric is not None:
            _drop_unknown_metrics(config["compile"], known_metric, notes)
        if check_compile is not None:
            check_compile(config)
    except (KerasNameError, ConfigError) as exc:
        config["compile"] = dict(PLACEHOLDER_COMPILE)
        notes.append(f"The Keras compile config was not used "
                     f"({getattr(exc, 'message', exc)}): {placeholder}")
    return config, notes


def _drop_unknown_metrics(compile_: dict, known: Callable[[str], bool], notes: list[str]
                          ) -> None:
    """Leave out the metrics nnrun lacks (Keras's AUC, Precision, ...), saying which."""
    def keep(items: list) -> list:
        dropped = [m for m in items if not known(m if isinstance(m, str) else m["name"])]
        if dropped:
            notes.append(f"Keras metrics nnrun does not have were left out: {dropped}")
        return [m for m in items if m not in dropped]

    metrics = compile_.get("metrics")
    if isinstance(metrics, dict):
        compile_["metrics"] = {k: keep(v) for k, v in metrics.items()}
    elif metrics:
        compile_["metrics"] = keep(metrics)


def config_text(config: dict, notes: list[str]) -> str:
    """The imported config as YAML, the notes as comments, and a data: section to fill in."""
    text = dump_yaml(config)
    data = ("# data:                                # where the data comes from, e.g.\n"
            "#   train: {path: train.csv, target: label}\n#   validation_split: 0.2\n")
    at = text.index("\nmodel:") + 1
    return "".join(f"# {note}\n" for note in notes) + text[:at] + data + text[at:]
