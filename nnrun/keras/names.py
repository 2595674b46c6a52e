"""Keras <-> nnrun names: initializers, regularizers, constraints, activations, and the
compile section (optimizer, loss, metrics), both ways.

Jax-free: names and defaults come from nnrun's registries (which load jax only when
used); the Keras class names are tables here that tests check against Keras.
Keras serializes these as
`{"module": "keras.initializers", "class_name": "GlorotUniform", "config": {...}}`;
nnrun writes a name, or `{name: ..., parameter: value}` for parameters that differ
from the defaults. Problems raise `KerasNameError`, which the caller locates.
"""

from __future__ import annotations

import inspect
import re
import struct
from typing import Any

from nnrun.config.registry import unknown_name_message
from nnrun.config.values import ArgTypeError, named_parts
from nnrun.nn import activations as _activations
from nnrun.nn import initializers as _initializers
from nnrun.nn import regularizers as _regularizers
from nnrun.nn.optimizer_rules import OPTIMIZERS as _OPTIMIZER_REGISTRY
from nnrun.nn.schedules import SCHEDULES as _SCHEDULE_REGISTRY


class KerasNameError(ValueError):
    """A value with no counterpart on the other side; the message says which."""


# canonical nnrun name -> its Keras class
_INITIALIZER_CLASSES = {
    "zeros": "Zeros", "ones": "Ones", "constant": "Constant", "identity": "Identity",
    "uniform": "RandomUniform", "normal": "RandomNormal", "truncated_normal": "TruncatedNormal",
    "variance_scaling": "VarianceScaling", "glorot_uniform": "GlorotUniform",
    "glorot_normal": "GlorotNormal", "he_uniform": "HeUniform", "he_normal": "HeNormal",
    "lecun_uniform": "LecunUniform", "lecun_normal": "LecunNormal", "orthogonal": "Orthogonal"}
_REGULARIZER_CLASSES = {"l1": "L1", "l2": "L2", "l1_l2": "L1L2"}
_CONSTRAINT_CLASSES = {"max_norm": "MaxNorm", "min_max_norm": "MinMaxNorm",
                       "non_neg": "NonNeg", "unit_norm": "UnitNorm"}


def _with_defaults(classes: dict[str, str], registry) -> dict[str, tuple[str, dict[str, Any]]]:
    """canonical name -> (Keras class, every nnrun parameter with its default), the
    defaults read from the registered function's signature."""
    return {name: (cls, {k: p.default for k, p in
                         inspect.signature(registry.get(name)).parameters.items()})
            for name, cls in classes.items()}


INITIALIZERS = _with_defaults(_INITIALIZER_CLASSES, _initializers.INITIALIZERS)
REGULARIZERS = _with_defaults(_REGULARIZER_CLASSES, _regularizers.REGULARIZERS)
CONSTRAINTS = _with_defaults(_CONSTRAINT_CLASSES, _regularizers.CONSTRAINTS)
# Other spellings nnrun's registries accept (Keras class names are added below).
_EXTRA_ALIASES = {"zero": "zeros", "one": "ones", "random_uniform": "uniform",
                  "random_normal": "normal", "IdentityInitializer": "identity",
                  "OrthogonalInitializer": "orthogonal", "l1l2": "l1_l2",
                  "maxnorm": "max_norm", "nonneg": "non_neg", "unitnorm": "unit_norm"}
KINDS = {"initializer": ("keras.initializers", INITIALIZERS),
         "regularizer": ("keras.regularizers", REGULARIZERS),
         "constraint": ("keras.constraints", CONSTRAINTS)}

ACTIVATIONS = tuple(_activations.ACTIVATIONS.names(aliases=True))
_REGISTRIES = {"initializer": _initializers.INITIALIZERS,
               "regularizer": _regularizers.REGULARIZERS,
               "constraint": _regularizers.CONSTRAINTS, "activation": _activations.ACTIVATIONS}

# canonical nnrun optimizer -> (Keras class, parameters with Keras 3 defaults), and Keras
# 3's learning-rate schedule classes -> nnrun's schedule names: read from nnrun's own
# registries, whose aliases are the Keras class names (importing them loads no jax).
OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    name: (next(alias for alias, target in _OPTIMIZER_REGISTRY.aliases().items()
                if target == name), dict(_OPTIMIZER_REGISTRY.get(name).defaults))
    for name in _OPTIMIZER_REGISTRY.names()}
KERAS_SCHEDULES = {alias: name for alias, name in _SCHEDULE_REGISTRY.aliases().items()
                   if alias[:1].isupper()}
# Keras optimizer options that change nothing at these values (others are refused).
_OPTIMIZER_NEUTRAL = {"use_ema": False, "loss_scale_factor": None,
                      "gradient_accumulation_steps": None, "decay": 0.0}
_OPTIMIZER_DROP = ("name", "is_legacy_optimizer", "jit_compile", "ema_momentum",
                   "ema_overwrite_frequency")
# Keras loss / metric object parameters at their defaults (dropped on import).
_LOSS_DEFAULTS = {"reduction": "sum_over_batch_size", "from_logits": False,
                  "label_smoothing": 0.0, "axis": -1, "ignore_class": None, "threshold": 0.5,
                  "k": 5, "delta": 1.0}
_SHORT_LOSSES = {"mse": "mean_squared_error", "mae": "mean_absolute_error",
                 "mape": "mean_absolute_percentage_error",
                 "msle": "mean_squared_logarithmic_error", "rmse": "root_mean_squared_error",
                 "kld": "kl_divergence", "kullback_leibler_divergence": "kl_divergence",
                 "logcosh": "log_cosh", "huber_loss": "huber", "bce": "binary_crossentropy"}


def _aliases(table: dict[str, tuple[str, dict]]) -> dict[str, str]:
    out = {name: name for name in table}
    out.update({cls: name for name, (cls, _) in table.items()})
    out.update({k: v for k, v in _EXTRA_ALIASES.items() if v in table})
    return out


def snake(name: str) -> str:
    """CamelCase -> snake_case as Keras names things: MeanSquaredError -> mean_squared_error."""
    name = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def short_float(value: Any) -> Any:
    """A float that came from float32 (Keras 2 files: 0.009999999776482582) as the
    shortest decimal with the same float32 value (0.01); anything else unchanged."""
    if not isinstance(value, float) or isinstance(value, bool):
        return value
    as32 = struct.unpack("f", struct.pack("f", value))[0]
    if as32 != value:
        return value
    for digits in range(1, 10):
        short = float(f"{value:.{digits}g}")
        if struct.unpack("f", struct.pack("f", short))[0] == as32:
            return short
    return value


def keras_object(module: str, class_name: str, config: dict,
                 registered: str | None = None) -> dict:
    """A Keras 3 serialized object: `{module, class_name, config, registered_name}`."""
    return {"module": module, "class_name": class_name, "config": config,
            "registered_name": registered}


def _split(value: Any, kind: str) -> tuple[str, dict]:
    """(name, parameters) of an identifier: a name or `{name: l2, l2: 0.01}`; a layer's
    (initializer, regularizer, constraint, activation) also `{l2: 0.01}` (one key: its
    value is the parameters, or the first parameter's value) or Keras's
    `{class_name: L2, config: {l2: 0.01}}`."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        params = dict(value)
        return params.pop("name"), params
    if not isinstance(value, dict) or kind not in _REGISTRIES:
        raise KerasNameError(f"expected a {kind} name or {{name: ..., parameters}}, got "
                             f"{value!r}")
    try:
        name, params, _, _ = named_parts(value, kind)
    except ArgTypeError as exc:
        raise KerasNameError(str(exc)) from None
    if params is None or isinstance(params, dict):
        return name, dict(params or {})
    registry = _REGISTRIES[kind]
    if name not in registry:
        raise KerasNameError(unknown_name_message(kind, name, registry.names(aliases=True)))
    first = list(inspect.signature(registry.get(name)).parameters)[kind == "activation":][:1]
    if not first:
        raise KerasNameError(f"{kind} {name!r} takes no parameters, got {params!r}")
    return name, {first[0]: params}


def _keras_class(value: dict, kind: str) -> tuple[str, dict]:
    """(class_name, config) of a Keras object; refuses objects from outside Keras."""
    module = value.get("module")
    registered = value.get("registered_name")
    if (module and not str(module).startswith("keras")) or (registered and ">" in registered):
        raise KerasNameError(f"{kind} {value.get('class_name')!r} is a custom object "
                             f"(module {module!r}); nnrun only reads Keras's own")
    config = value.get("config") or {}
    if not isinstance(config, dict):
        raise KerasNameError(f"expected a mapping as the {kind}'s config, got {config!r}")
    return str(value.get("class_name")), config


def identifier_to_keras(kind: str, value: Any) -> Any:
    """An nnrun initializer / regularizer / constraint -> Keras's serialized object."""
    if value is None:
        return None
    module, table = KINDS[kind]
    name, params = _split(value, kind)
    canonical = _aliases(table).get(name)
    if canonical is None:
        raise KerasNameError(unknown_name_message(kind, name, list(table)))
    class_name, defaults = table[canonical]
    # Every parameter (Keras's Constant needs its value), but no None the Keras of the
    # day may not know (input_axes).
    config = {k: v for k, v in defaults.items() if v is not None}
    return keras_object(module, class_name, {**config, **params})


def identifier_from_keras(kind: str, value: Any) -> Any:
    """A Keras initializer / regularizer / constraint (object or name) -> nnrun's name, or
    `{name: ..., params}` with the parameters that differ from nnrun's defaults."""
    if value is None:
        return None
    _, table = KINDS[kind]
    if isinstance(value, dict) and "class_name" in value:
        name, params = _keras_class(value, kind)
    else:
        name, params = _split(value, kind)
    canonical = _aliases(table).get(name)
    if canonical is None:
        raise KerasNameError(unknown_name_message(f"Keras {kind}", name, list(table)))
    if canonical == "variance_scaling":
        canonical, params = _named_scaling(params)
    defaults = table[canonical][1]
    kept = {}
    for key, v in params.items():
        if key not in defaults:
            if v is None:
                continue
            raise KerasNameError(f"{kind} {name!r}: nnrun has no parameter {key!r}; "
                                 f"allowed: {', '.join(defaults) or 'none'}")
        v = short_float(v)
        if v != defaults[key]:
            kept[key] = v
    return {"name": canonical, **kept} if kept else canonical


def _named_scaling(params: dict) -> tuple[str, dict]:
    """VarianceScaling with Glorot's, He's or LeCun's settings (Keras 2.2 wrote
    glorot_uniform so) -> that initializer's name."""
    key = (short_float(params.get("scale", 1.0)), params.get("mode", "fan_in"),
           {"normal": "truncated_normal"}.get(params.get("distribution", "truncated_normal"),
                                              params.get("distribution")))
    named = {(1.0, "fan_avg", "uniform"): "glorot_uniform",
             (1.0, "fan_avg", "truncated_normal"): "glorot_normal",
             (2.0, "fan_in", "uniform"): "he_uniform",
             (2.0, "fan_in", "truncated_normal"): "he_normal",
             (1.0, "fan_in", "uniform"): "lecun_uniform",
             (1.0, "fan_in", "truncated_normal"): "lecun_normal"}.get(key)
    if named is None:
        return "variance_scaling", params
    return named, {k: v for k, v in params.items() if k not in ("scale", "mode", "distribution")}


def activation_to_keras(value: Any) -> str:
    """nnrun's activation (None: linear) -> the name Keras 3 serializes."""
    if value is None:
        return "linear"
    name, params = _split(value, "activation")
    if name not in ACTIVATIONS:
        raise KerasNameError(unknown_name_message("activation", name, list(ACTIVATIONS)))
    if params:
        raise KerasNameError(f"Keras serializes an activation by name only, so "
                             f"{name!r} with {params} has no Keras form; use the layer "
                             "(e.g. LeakyReLU, ELU, ReLU) or the default parameters")
    return name


def activation_from_keras(value: Any) -> str | None:
    """A Keras activation (a name, or Keras 3's `{class_name: function, config: name}`)."""
    if value is None:
        return None
    if isinstance(value, dict):
        class_name, config = value.get("class_name"), value.get("config")
        if class_name == "function" and isinstance(config, str):
            value = config
        else:
            _keras_class(value, "activation")
            raise KerasNameError(f"activation {class_name!r} is not a built-in activation")
    if not isinstance(value, str) or value not in ACTIVATIONS:
        raise KerasNameError(unknown_name_message("activation", value, list(ACTIVATIONS)))
    return value


# ---------------------------------------------------------------- compile

def _optimizer_to_keras(value: Any) -> Any:
    name, params = _split(value, "optimizer")
    canonical = name.lower()
    if canonical not in OPTIMIZERS:
        raise KerasNameError(unknown_name_message("optimizer", name, list(OPTIMIZERS)))
    params = {("learning_rate" if k == "lr" else k): v for k, v in params.items()}
    if isinstance(params.get("learning_rate"), dict):
        params["learning_rate"] = _schedule_to_keras(params["learning_rate"])
    return keras_object("keras.optimizers", OPTIMIZERS[canonical][0], params)


def _schedule_to_keras(value: dict) -> dict:
    config = dict(value)
    name = config.pop("schedule", None)
    classes = {v: k for k, v in KERAS_SCHEDULES.items()}
    if name not in classes and name not in KERAS_SCHEDULES:
        raise KerasNameError(f"the learning-rate schedule {name!r} has no Keras class; "
                             f"Keras has: {', '.join(KERAS_SCHEDULES.values())}")
    cls = classes.get(name, name)
    return keras_object("keras.optimizers.schedules", cls, {**config, "name": cls})


def _schedule_from_keras(value: dict) -> dict:
    cls = value.get("class_name")
    if cls not in KERAS_SCHEDULES:
        raise KerasNameError(f"the learning-rate schedule {cls!r} is not one nnrun has: "
                             f"{', '.join(KERAS_SCHEDULES)}")
    config = {k: short_float(v) for k, v in (value.get("config") or {}).items() if k != "name"}
    return {"schedule": KERAS_SCHEDULES[cls], **config}


def _keras_loss_class(name: str) -> str:
    name = _SHORT_LOSSES.get(name, name)
    if name == "kl_divergence":
        return "KLDivergence"
    if name[:1].isupper():   # already a Keras class name
        return name
    return "".join(part.capitalize() for part in name.split("_"))


def _named_to_keras(value: Any, kind: str) -> Any:
    """A loss or metric: names pass through; `{name: x, params}` -> a Keras object."""
    if isinstance(value, str):
        return value
    name, params = _split(value, kind)
    return keras_object(f"keras.{kind}es" if kind == "loss" else f"keras.{kind}s",
                        _keras_loss_class(name), params)


def _per_output(value: Any, convert) -> Any:
    if isinstance(value, dict) and "name" not in value:
        return {k: convert(v) for k, v in value.items()}
    return convert(value)


def compile_to_keras(compile_: dict) -> dict:
    """nnrun's resolved `compile:` -> Keras 3's `compile_config`."""
    def metrics(items):
        return [_named_to_keras(m, "metric") for m in items]

    given = compile_.get("metrics") or []
    return {"optimizer": _optimizer_to_keras(compile_["optimizer"]),
            "loss": _per_output(compile_["loss"], lambda v: _named_to_keras(v, "loss")),
            "loss_weights": compile_.get("loss_weights"),
            "metrics": ({k: metrics(v) for k, v in given.items()} if isinstance(given, dict)
                        else metrics(given))}


def _optimizer_from_keras(value: Any) -> Any:
    if isinstance(value, str):
        name, params = value, {}
    elif isinstance(value, dict) and "class_name" in value:
        name, params = _keras_class(value, "optimizer")
    else:
        raise KerasNameError(f"cannot read the optimizer {value!r}")
    canonical = name.lower()
    if canonical not in OPTIMIZERS:
        raise KerasNameError(unknown_name_message("optimizer", name, list(OPTIMIZERS)))
    defaults, kept = OPTIMIZERS[canonical][1], {}
    for key, v in params.items():
        key = "learning_rate" if key == "lr" else key
        if key in _OPTIMIZER_DROP or (key in _OPTIMIZER_NEUTRAL and v == _OPTIMIZER_NEUTRAL[key]):
            continue
        if key not in defaults:
            raise KerasNameError(f"optimizer {name}: nnrun has no {key!r} (= {v!r})")
        if key == "learning_rate" and isinstance(v, dict):
            kept[key] = _schedule_from_keras(v)
            continue
        if isinstance(v, dict):
            raise KerasNameError(f"optimizer {name}: cannot read {key} = {v!r}")
        v = short_float(v)
        if v != defaults[key]:
            kept[key] = v
    return {"name": canonical, **kept} if kept else canonical


def _named_from_keras(value: Any, kind: str) -> Any:
    """A Keras loss or metric (name, function or object) -> nnrun's name or mapping."""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or "class_name" not in value:
        raise KerasNameError(f"cannot read the {kind} {value!r}")
    class_name, config = _keras_class(value, kind)
    if class_name == "function" and isinstance(value.get("config"), str):
        return value["config"]
    if class_name == "MeanMetricWrapper":   # Keras 2: name as compiled, fn resolved
        fn, name = config.get("fn"), config.get("name")
        return name if name in ("accuracy", "acc") or not isinstance(fn, str) else fn
    params = {k: short_float(v) for k, v in config.items()
              if k not in ("name", "dtype", "fn") and v is not None
              and _LOSS_DEFAULTS.get(k, object()) != v}
    name = snake(class_name)
    return {"name": name, **params} if params else name


def _listed(value: Any, outputs: list[str], convert) -> Any:
    """A per-output value: a mapping by output name, or a list in outputs order."""
    if isinstance(value, dict) and "class_name" not in value:
        return {k: convert(v) for k, v in value.items()}
    if isinstance(value, list) and len(value) == len(outputs):
        if len(outputs) == 1:
            return convert(value[0])
        return {name: convert(v) for name, v in zip(outputs, value)}
    return convert(value)


def compile_from_keras(config: dict, outputs: list[str]) -> dict:
    """Keras 3's `compile_config` or Keras 2's `training_config` -> nnrun's `compile:`.

    `outputs`: the model's output names, for per-output lists.
    """
    optimizer = config.get("optimizer", config.get("optimizer_config"))
    out: dict[str, Any] = {"optimizer": _optimizer_from_keras(optimizer or "rmsprop")}
    if config.get("loss") is None:
        raise KerasNameError("the Keras compile config has no loss")
    out["loss"] = _listed(config["loss"], outputs, lambda v: _named_from_keras(v, "loss"))
    metrics = config.get("metrics")
    if metrics:
        def metric_list(items):
            items = items if isinstance(items, list) else [items]
            return [_named_from_keras(m, "metric") for m in items]

        if isinstance(metrics, list) and len(metrics) == len(outputs) and all(
                isinstance(m, list) for m in metrics):   # Keras 2: one list per output
            metrics = dict(zip(outputs, metrics)) if len(outputs) > 1 else metrics[0]
        out["metrics"] = ({k: metric_list(v) for k, v in metrics.items()}
                          if isinstance(metrics, dict) else metric_list(metrics))
    weights = config.get("loss_weights")
    if weights is not None:
        out["loss_weights"] = weights if isinstance(weights, dict) else dict(zip(outputs,
                                                                                 weights))
    return out
