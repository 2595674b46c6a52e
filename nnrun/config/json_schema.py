"""The JSON Schema (draft-07) of an nnrun config, for editors: `nnrun schema`.

Built from the same tables the validator reads (the layer schemas of
`nnrun.config.layer_schemas`, the registries' names), so it cannot drift from what `nnrun check`
accepts. Editors' YAML language servers use it for completion, hover text and
checking as you type; `nnrun check` remains the full check (shapes, graph wiring,
cross-field rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nnrun.config import layer_schemas as s
from nnrun.config.checks import (
    COMPILE_KEYS,
    DATA_KEYS,
    DISTRIBUTED_KEYS,
    FIT_KEYS,
    MODEL_KEYS,
    PRECISIONS,
    TOP_KEYS,
    TUNE_KEYS,
)
from nnrun.config.model_spec import INPUT_DTYPES, KERAS1_KERNEL_DIMS, MERGE_MODES
from nnrun.config.spec import CONFIG_VERSION
from nnrun.config.tune_spec import DEFAULTS as TUNE_DEFAULTS
from nnrun.config.tune_spec import DISTRIBUTIONS, PRUNERS, SAMPLERS

SCHEMA_ID = "https://nnrun.dev/schema/config-v1.json"
# A `${...}` interpolation stands for any type until the config is loaded.
INTERPOLATION = {"$ref": "#/definitions/interpolation"}


def _loose(js: dict) -> dict:
    """A typed value, or a `${...}` that supplies it."""
    return {"anyOf": [js, INTERPOLATION]}


IDENTIFIER_KINDS = ("activation", "initializer", "regularizer", "constraint", "loss", "metric",
                    "optimizer")
LAYER_KINDS = IDENTIFIER_KINDS[:4]   # a layer's arguments (values.named)


def identifier(kind: str) -> dict:
    """A reference to the definition of a name of `kind` (see `identifier_definition`)."""
    return {"$ref": f"#/definitions/{kind}"}


def identifier_definition(kind: str, names: Mapping[str, list[str]]) -> dict:
    """A name of `kind`, or a mapping with `name:` (or Keras's `class_name:`) and parameters
    (a layer's kinds: or one key, the name, as a layer is written).
    Optimizer names are case-insensitive and metrics take loss names too: those list the
    names for completion without refusing others (`nnrun check` refuses them)."""
    enum: dict = {"enum": list(names[kind])}
    if kind == "metric":
        enum["enum"] = sorted({*enum["enum"], *names["loss"], "accuracy", "acc"})
    if kind in ("optimizer", "metric"):
        enum = {"anyOf": [enum, {"type": "string"}]}
    mapping = {"type": "object", "anyOf": [{"required": ["name"]}, {"required": ["class_name"]}],
               "properties": {"name": {"type": "string"}, "class_name": {"type": "string"}}}
    if kind not in LAYER_KINDS:
        return {"anyOf": [enum, mapping, INTERPOLATION]}
    # a layer's: also one key, as a layer is written ({l2: 0.01}, {RandomNormal: {...}})
    one_key = {"type": "object", "minProperties": 1, "maxProperties": 1,
               "propertyNames": {"enum": list(names[kind])}}
    return {"anyOf": [enum, mapping, one_key, INTERPOLATION]}


def by_type(when: str, then: dict, otherwise: dict) -> dict:
    """`then` for a value of JSON type `when`, else `otherwise` (if/then/else, so that
    validators and editors report the mistake inside the value, not at it)."""
    return {"if": {"type": when}, "then": then, "else": otherwise}


POSITIVE = {"type": "integer", "minimum": 1}
SHAPE = {"anyOf": [POSITIVE, {"type": "array", "items": POSITIVE, "minItems": 1}]}
INT_LIST = {"type": "array", "items": {"type": "integer"}, "minItems": 1}
_SIMPLE = {
    "positive_int": POSITIVE,
    "non_negative_int": {"type": "integer", "minimum": 0},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "non_negative_number": {"type": "number", "minimum": 0},
    "rate": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    "boolean": {"type": "boolean"},
    "string": {"type": "string", "minLength": 1},
    "shape": SHAPE,
    "noise_shape": {"type": "array", "minItems": 1,
                    "items": {"anyOf": [POSITIVE, {"type": "null"}]}},
    "int_list": INT_LIST,
    "axes": {"anyOf": [{"type": "integer"}, INT_LIST]},
    "channels_last": {"enum": ["channels_last", "tf", "default"]},
    "dot_axes": {"anyOf": [{"type": "integer"},
                           {"type": "array", "items": {"type": "integer"}, "minItems": 2,
                            "maxItems": 2}]},
    "nested_layer": {"$ref": "#/definitions/layer"},
    "nested_layers": {"$ref": "#/definitions/layers"},
    "nested_graph": {"$ref": "#/definitions/model"},
    # callbacks' arguments (nnrun.config.callback_specs)
    "_non_negative": {"type": "number", "minimum": 0},
    "_factor": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    "_save_freq": {"anyOf": [{"const": "epoch"}, POSITIVE]},
    "_verbose": {"enum": [0, 1, 2]},
    "_checkpoint_file": {"type": "string", "minLength": 1},   # `nnrun check` says more
}


def checker_schema(check: Any, arg: str) -> dict:
    """The JSON Schema of one argument checker of `nnrun.config.layer_schemas`."""
    name = check.__name__
    if name == "check_optional":
        return {"anyOf": [checker_schema(check.inner, arg), {"type": "null"}]}
    if name == "check_named":
        return identifier(check.kind)
    if name == "check_choice":
        js: dict = {"enum": list(check.choices)}
    elif name == "check_sizes":
        one = {"type": "integer", "minimum": check.minimum}
        js = {"anyOf": [one, {"type": "array", "items": one, "minItems": check.n_axes,
                              "maxItems": check.n_axes}]}
    elif name == "check_pairs":
        amount = {"type": "integer", "minimum": 0}
        pair = {"type": "array", "items": amount, "minItems": 2, "maxItems": 2}
        js = {"anyOf": [amount, {"type": "array", "items": {"anyOf": [amount, pair]},
                                 "minItems": 1, "maxItems": max(2, check.n_axes)}]}
    else:
        js = _SIMPLE[name]
    return js if "$ref" in js else _loose(js)


def layer_schema(type_: str, spec: s.LayerSchema) -> dict:
    """What `Type:` of a layer `{Type: {args}}` takes: the arguments object (aliases
    and Keras 1 names included), a scalar for the first argument, or null."""
    props: dict[str, Any] = {}
    for arg in spec.args:
        props[arg.name] = {"allOf": [checker_schema(arg.check, arg.name)],
                           "description": f"{type_}.{arg.name}" + (
                               " (required)" if arg.required else
                               f", default {arg.default!r}")}
    for alias, target in {**s.COMMON_ALIASES, **spec.aliases}.items():
        if target in props and alias not in props:
            props[alias] = {**props[target], "description": f"Keras 1 name of {target}"}
    if any(a.name == "kernel_size" for a in spec.args):
        for dims in KERAS1_KERNEL_DIMS:
            props.update({d: _loose(POSITIVE) for d in dims})
    props.update({"name": {"type": "string", "minLength": 1},
                  "trainable": {**_loose({"type": "boolean"}),
                                "description": "false freezes the layer's weights"},
                  "weights": {"type": "array", "items": {"type": ["array", "number"]},
                              "description": "initial weight arrays, in Keras's "
                                             "get_weights() order (Keras 1 weights=)"},
                  "input_shape": _loose(SHAPE), "input_dim": _loose(POSITIVE),
                  "input_length": _loose(POSITIVE),
                  "batch_input_shape": {"type": "array", "minItems": 2},
                  "inputs": {"anyOf": [{"type": "string"},
                                       {"type": "array", "items": {"type": "string"}}]}})
    if type_ in s.LAYERS:
        props.setdefault("input_dim", _loose(POSITIVE))
    args: dict = {"type": "object", "properties": props, "additionalProperties": False}
    needed = [{"anyOf": [{"required": [n]} for n in _names_for(spec, a.name)]}
              for a in spec.args if a.required]
    if needed:
        args["allOf"] = needed
    forms = [] if needed else [{"type": "null"}]
    if spec.args and spec.args[0].check not in (s.nested_layer, s.nested_layers,
                                                 s.nested_graph):
        forms.append(props[spec.args[0].name])  # `Dense: 8` gives the first argument
    other = {"anyOf": forms} if forms else {"type": "object"}
    return {**by_type("object", args, other), "description": spec.doc}


def _names_for(spec: s.LayerSchema, name: str) -> list[str]:
    """An argument's name and the other names that give it (Keras 1 aliases)."""
    aliases = {**s.COMMON_ALIASES, **spec.aliases}
    names = [name, *(alias for alias, target in aliases.items() if target == name)]
    if name == "kernel_size":
        names += [dims[0] for dims in KERAS1_KERNEL_DIMS]
    return names


def _merge_layer() -> dict:
    """Keras 1's `Merge: {mode: ...}`."""
    args = {"type": "object", "additionalProperties": False,
            "properties": {"mode": {"enum": list(MERGE_MODES)},
                           "concat_axis": {"type": "integer"},
                           "dot_axes": _SIMPLE["dot_axes"], "name": {"type": "string"},
                           "inputs": {"type": "array", "items": {"type": "string"}}}}
    return {"anyOf": [args, {"type": "null"}], "description": "Keras 1's Merge layer"}


def _section(props: dict, keys: tuple[str, ...], **extra: Any) -> dict:
    assert set(props) <= set(keys), set(props) - set(keys)
    return {"type": "object", "properties": props, "additionalProperties": False, **extra}


def _data_source(datasets: list[str]) -> dict:
    builtin = {"type": "object", "required": ["builtin"],
               "properties": {"builtin": {"enum": list(datasets)},
                              "samples": _loose(POSITIVE)}}
    files = {"type": "object", "required": ["path"],
             "properties": {"path": {"type": "string"}, "target": {},
                            "features": {}, "delimiter": {"type": "string"},
                            "dtype": {"enum": ["float32", "int32"]},
                            **_table_keys()}}
    return {"anyOf": [{"type": "string", "description": "a data file"}, builtin, files,
                      {"type": "null"}]}


def _table_keys() -> dict:
    """A CSV/TSV source's encoding keys (nnrun.data.tables); sample_weight for any file."""
    column = {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]}
    rule = {"anyOf": [{"enum": ["mean", "median", "most_frequent"]}, {"type": "number"}]}
    return {
        "header": {**_loose({"type": "boolean"}),
                   "description": "false: no header row; columns are named by position"},
        "categorical": {"anyOf": [column, {"type": "array", "items": column},
                                  {"type": "object", "additionalProperties":
                                   {"enum": ["one_hot", "index"]}}],
                        "description": "columns of categories: one_hot (default) or index"},
        "fill": {"anyOf": [rule, {"type": "object", "additionalProperties":
                                  {"anyOf": [rule, {"type": "string"}]}}],
                 "description": "missing values: mean, median, most_frequent or a constant, "
                                "for every feature column or by column"},
        "sample_weight": {**column, "description": "per-row loss weights: a column, an "
                                                   "array name (.npz/.h5) or a .npy file"},
    }


def _model() -> dict:
    shape = _loose(SHAPE)
    graph_input = {"anyOf": [shape, {"type": "object", "required": ["shape"],
                                     "additionalProperties": False,
                                     "properties": {"shape": shape,
                                                    "dtype": {"enum": list(INPUT_DTYPES)}}}]}
    names = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    return _section({
        "input_shape": shape, "input_dim": _loose(POSITIVE),
        "input_dtype": {"enum": list(INPUT_DTYPES)},
        "inputs": {"type": "object", "additionalProperties": graph_input},
        "layers": {"$ref": "#/definitions/layers"}, "outputs": names,
        "weights": {"type": "string", "minLength": 1,
                    "description": "a checkpoint (.h5) or run directory to start from; "
                                   "layers are matched by name"},
    }, MODEL_KEYS, required=["layers"])


def _callbacks() -> dict:
    """fit.callbacks: one-key mappings {Callback: {arguments}} (or bare names)."""
    from nnrun.config.callback_specs import ARGS

    def args_schema(name: str, args: dict) -> dict:
        props = {key: checker_schema(check, key) for key, (check, _) in args.items()}
        if name == "LearningRateScheduler":   # plus the named schedule's own arguments
            return {"type": ["object", "null"], "properties": props, "required": ["schedule"]}
        return {"type": ["object", "null"], "properties": props, "additionalProperties": False}

    one = {"type": "object", "minProperties": 1, "maxProperties": 1,
           "additionalProperties": False,
           "properties": {name: args_schema(name, args) for name, args in ARGS.items()}}
    return {"type": "array", "items": {"anyOf": [{"enum": sorted(ARGS)}, one]},
            "description": "Keras callbacks, e.g. [{EarlyStopping: {patience: 3}}]"}


def _data_options() -> dict:
    """data: shuffle_split, stratify, preprocess, class_weight (nnrun.config.data_spec)."""
    from nnrun.config.data_spec import X_METHODS, Y_METHODS

    def methods(names: tuple[str, ...], kind: str) -> dict:
        return {"anyOf": [{"enum": list(names)},
                          {"type": "object", "additionalProperties": {"enum": list(names)},
                           "description": f"a method per {kind} name"}]}

    weight = _loose({"type": "number", "minimum": 0})
    return {
        "shuffle_split": {**_loose({"type": "boolean"}),
                          "description": "validation_split takes random rows (the seed's "
                                         "split stream), not the last ones"},
        "stratify": {**_loose({"type": "boolean"}),
                     "description": "validation_split keeps each class's share"},
        "preprocess": {"type": "object", "additionalProperties": False,
                       "properties": {"x": methods(X_METHODS, "input"),
                                      "y": methods(Y_METHODS, "output")},
                       "description": "statistics from the training split, saved in the "
                                      "run as preprocessing.json"},
        "class_weight": {"anyOf": [{"const": "balanced"},
                                   {"type": "object", "minProperties": 1,
                                    "additionalProperties": weight}],
                         "description": "balanced, or {class id or name: weight}"},
    }


def _tune() -> dict:
    """tune: (nnrun.config.tune_spec): the search's settings and its space, each entry
    one distribution."""
    from nnrun.config.callback_specs import MODES

    def pair(item: dict) -> dict:
        return {"type": "array", "items": _loose(item), "minItems": 2, "maxItems": 2}

    number = {"type": "number"}
    distribution = {
        "type": "object", "additionalProperties": False,
        "properties": {"choice": {"type": "array", "minItems": 1,
                                  "description": "one of these values"},
                       "uniform": {**pair(number), "description": "a number in [lo, hi]"},
                       "loguniform": {**pair({"type": "number", "exclusiveMinimum": 0}),
                                      "description": "a number in [lo, hi], on a log scale"},
                       "int": {**pair({"type": "integer"}),
                               "description": "an integer in [lo, hi] (both included)"},
                       "step": {**_loose(POSITIVE), "description": "int: every step-th"}},
        "oneOf": [{"required": [kind]} for kind in DISTRIBUTIONS],
        "dependencies": {"step": ["int"]}}

    def choice(key: str, names: tuple[str, ...]) -> dict:
        return {"enum": list(names), "default": TUNE_DEFAULTS[key]}

    return _section({
        "metric": {"type": "string", "minLength": 1,
                   "description": "what trials are scored by, as logged per epoch "
                                  "(val_loss, val_accuracy...)"},
        "mode": choice("mode", MODES), "sampler": choice("sampler", SAMPLERS),
        "pruner": choice("pruner", PRUNERS),
        "trials": {**_loose(POSITIVE), "default": TUNE_DEFAULTS["trials"]},
        "batch": {**_loose(POSITIVE), "default": TUNE_DEFAULTS["batch"],
                  "description": "trials asked at once and trained together"},
        "seed": {**_loose({"type": "integer", "minimum": 0}),
                 "description": "the sampler's seed; default: the config's seed"},
        "space": {"type": "object", "minProperties": 1, "additionalProperties": distribution,
                  "description": "config path (as --set) -> distribution"},
    }, TUNE_KEYS, description="nnrun tune's search; training ignores it")


def build_schema(names: Mapping[str, list[str]]) -> dict[str, Any]:
    """The whole config's JSON Schema (draft-07). `names` holds the registered names
    of each kind (activation, initializer, regularizer, constraint, loss, metric,
    optimizer, dataset; aliases included): the registries live in nn/ and data/, which
    config/ does not import, so the caller (nnrun.cli.config_cmds.config_schema) reads them."""
    types = {**{t: layer_schema(t, spec) for t, spec in s.LAYERS.items()},
             **{alias: layer_schema(alias, s.LAYERS[target])
                for alias, target in s.TYPE_ALIASES.items()}}
    types["Merge"] = _merge_layer()
    layer = by_type("string", {"enum": sorted(types), "description": "a layer, no arguments"},
                    {"type": "object", "properties": types, "additionalProperties": False,
                     "minProperties": 1, "maxProperties": 1})
    per_output = {"type": "object", "not": {"required": ["name"]}}
    compile_ = _section({
        "optimizer": identifier("optimizer"),
        "loss": {"anyOf": [identifier("loss"),
                           {**per_output, "additionalProperties": identifier("loss")}]},
        "metrics": {"anyOf": [
            identifier("metric"),
            {"type": "array", "items": identifier("metric")},
            {**per_output, "additionalProperties": {"anyOf": [
                identifier("metric"),
                {"type": "array", "items": identifier("metric")}]}}]},
        "loss_weights": {"anyOf": [{"type": "object",
                                    "additionalProperties": _loose({"type": "number"})},
                                   {"type": "array", "items": _loose({"type": "number"})}]},
        "precision": {"enum": [*PRECISIONS, "mixed_bfloat16"], "default": PRECISIONS[0],
                      "description": "float32; mixed: bfloat16 compute, float32 weights "
                                     "and loss (Keras's mixed_bfloat16); bfloat16: weights "
                                     "too"},
    }, COMPILE_KEYS)  # loss is required, but may come from an extended file
    split = _loose({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1})
    data = _section({"train": _data_source(names["dataset"]),
                     "validation": _data_source(names["dataset"]),
                     "test": _data_source(names["dataset"]), "validation_split": split,
                     **_data_options()}, DATA_KEYS)
    fit = _section({"batch_size": _loose(POSITIVE), "epochs": _loose(POSITIVE),
                    "shuffle": _loose({"type": "boolean"}), "validation_split": split,
                    "callbacks": _callbacks(),
                    "devices": {"anyOf": [{"const": "all"}, _loose(POSITIVE)],
                                "description": "data parallelism: all local devices or N"},
                    "terminate_on_nan": {**_loose({"type": "boolean"}), "description":
                                         "false: a non-finite loss does not stop training"}},
                   FIT_KEYS)
    files = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    top = {
        "version": {"const": CONFIG_VERSION, "description": "the config format's version"},
        "name": {"type": "string"}, "seed": _loose({"type": "integer"}),
        "data": data,
        "model": by_type("string", {"description": "a saved model.yaml"},
                         {"$ref": "#/definitions/model"}),
        "compile": compile_, "fit": fit,
        "distributed": {"anyOf": [{"type": "boolean"}, _section({
            "coordinator_address": {"type": "string", "pattern": ".+:[0-9]+$"},
            "num_processes": _loose({"type": "integer", "minimum": 1}),
            "process_id": _loose({"type": "integer", "minimum": 0}),
            "local_device_ids": {"type": "array", "items": {"type": "integer"}}},
            DISTRIBUTED_KEYS)], "description": "several processes (hosts): "
            "jax.distributed.initialize's arguments, or true for its own detection"},
        "tune": _tune(),
    }
    out = _section(top, TOP_KEYS)
    out["properties"].update({
        "extends": {**files, "description": "base config file(s), deep-merged under this "
                                            "one; relative to this file"},
        "vars": {"type": "object", "description": "values for ${vars.NAME} interpolation"}})
    return {"$schema": "http://json-schema.org/draft-07/schema#", "$id": SCHEMA_ID,
            "title": "nnrun config", **out,
            # a config that extends others may get model: and compile: from them
            "if": {"not": {"required": ["extends"]}}, "then": {"required": ["model", "compile"]},
            "definitions": {"layer": layer,
                            "interpolation": {"type": "string", "pattern": r"\$\{[^}]*\}",
                                              "description": "${a.b}, ${vars.x}, ${env:NAME}"},
                            **{k: identifier_definition(k, names) for k in IDENTIFIER_KINDS},
                            "layers": {"type": "array", "items": {"$ref": "#/definitions/layer"},
                                       "minItems": 1},
                            "model": _model()}}
