"""One layer's arguments between Keras's layer config and nnrun's canonical args, both ways.

nnrun's argument names are Keras 3's (schema.py), so most values pass through; what
differs is how identifiers are written (keras_names.py), a few shapes of values, and
the Keras-only arguments, which are dropped when they change nothing and refused when
nnrun cannot honour them. Jax-free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nnrun.config.layer_schemas import COMMON_ALIASES, LayerSchema
from nnrun.config.values import ArgTypeError, channels_last, nested_layer
from nnrun.keras.names import (
    KerasNameError,
    activation_from_keras,
    activation_to_keras,
    identifier_from_keras,
    identifier_to_keras,
    short_float,
    snake,
)

MERGE_TYPES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
               "Dot")
# nnrun layers without a Keras 3 class.
NO_KERAS_CLASS = {
    "ThresholdedReLU": "Keras 3 removed it (ReLU with threshold: theta is the same except "
                       "at x == theta)",
    "ParametricSoftplus": "it is a Keras 1 layer that Keras 3 does not have",
    "ThresholdedLinear": "it is a Keras 1 layer that Keras 3 does not have",
}
# Keras-only layer arguments that do not change what nnrun builds.
IGNORED = {"name", "trainable", "dtype", "autocast", "seed", "zero_output_for_mask",
           "use_cudnn", "implementation", "lora_alpha", "renorm_momentum", "synchronized",
           "fused", "input_length", "input_dim", "input_shape", "batch_input_shape",
           "batch_shape", "input_dtype", "backward_layer", "consume_less", "weights"}
# Keras-only arguments that nnrun honours at these values only.
NEUTRAL = {"groups": (1,), "rms_scaling": (False,), "renorm": (False,), "time_major": (False,),
           "sparse": (False,), "ragged": (False,), "mode": (0,), "optional": (False,),
           "dropout": (0, 0.0)}
KERAS1_ALIASES = {"beta_init": "beta_initializer", "gamma_init": "gamma_initializer"}
KERAS1_KERNEL_DIMS = (("nb_row", "nb_col"), ("kernel_dim1", "kernel_dim2", "kernel_dim3"))


class LayerProblem(Exception):
    """An unreadable part of a Keras file: its JSON path and what is wrong."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path, self.message = path, message


def plain(value: Any) -> Any:
    """Tuples as lists, recursively (what YAML and JSON hold)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def fresh_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_1`, `base_2`, ... if taken."""
    name, n = base, 1
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def _kind(key: str) -> str | None:
    """initializer / regularizer / constraint for an argument holding one."""
    for kind in ("initializer", "regularizer", "constraint"):
        if key.endswith(f"_{kind}"):
            return kind
    return None


# ---------------------------------------------------------------- nnrun -> Keras

def arg_to_keras(type_: str, key: str, value: Any) -> dict:
    """One resolved nnrun argument as Keras config entries (none when Keras lacks it and
    it changes nothing). KerasNameError when the value has no Keras form."""
    if key == "consume_less":
        return {}   # Keras 1's; no effect
    kind = _kind(key)
    if kind:
        return {key: identifier_to_keras(kind, value)}
    if key in ("activation", "recurrent_activation"):
        return {key: activation_to_keras(value)}
    if type_ in ("Cropping1D", "ZeroPadding1D"):
        return {key: value[0]}   # nnrun's [[before, after]] is Keras's (before, after)
    return {key: value}


# ---------------------------------------------------------------- Keras -> nnrun

def args_from_keras(type_: str, schema: LayerSchema, config: dict, path: str,
                    read_layer: Callable[[Any, str], dict]) -> dict:
    """A Keras layer config -> nnrun's args (canonical names, values differing from the
    defaults only). `read_layer` reads a wrapper's inner layer."""
    config = _keras1_kernel_size(dict(config))
    if type_ == "GRU" and "reset_after" not in config:
        config["reset_after"] = False   # Keras 1 and early Keras 2 GRUs
    if "forget_bias_init" in config:   # Keras 1 LSTM
        config["unit_forget_bias"] = config.pop("forget_bias_init") in ("one", "ones")
    checked: dict[str, Any] = {}
    for key, value in config.items():
        kpath = f"{path}.{key}"
        canon = key if schema.arg(key) else (schema.aliases.get(key) or KERAS1_ALIASES.get(key)
                                             or COMMON_ALIASES.get(key, key))
        arg = schema.arg(canon)
        if arg is None or canon == "consume_less":
            _keras_only(type_, key, value, kpath)
            continue
        try:
            value = _value_from_keras(type_, canon, short_float(value), kpath, read_layer)
            checked[canon] = value if arg.check is nested_layer else arg.check(value)
        except (ArgTypeError, KerasNameError) as exc:
            raise LayerProblem(kpath, f"{type_}: {exc}") from None
    return {a.name: plain(checked[a.name]) for a in schema.args   # in Keras's order
            if a.name in checked and not _is_default(type_, schema, a.name,
                                                     checked[a.name], checked)}


def _keras_only(type_: str, key: str, value: Any, path: str) -> None:
    """An argument nnrun's layer lacks: fine if it changes nothing, else a problem."""
    if key in IGNORED or value is None:
        return
    if key in NEUTRAL:
        if value in NEUTRAL[key]:
            return
        raise LayerProblem(path, f"{type_}: nnrun cannot honour {key}={value!r} (only "
                                 f"{', '.join(map(repr, NEUTRAL[key]))})")
    if key == "data_format":
        try:
            channels_last(value)
            return
        except ArgTypeError as exc:
            raise LayerProblem(path, f"{type_}: {exc}") from None
    raise LayerProblem(path, f"{type_}: nnrun's {type_} has no argument {key!r} "
                             f"(= {value!r})")


def _value_from_keras(type_: str, canon: str, value: Any, path: str,
                      read_layer: Callable[[Any, str], dict]) -> Any:
    kind = _kind(canon)
    if kind or canon == "activity_regularizer":
        return identifier_from_keras(kind or "regularizer", value)
    if canon in ("activation", "recurrent_activation"):
        return activation_from_keras(value)
    if canon == "layer" and type_ in ("Bidirectional", "TimeDistributed"):
        inner = read_layer(value, path)
        inner_type, args = next(iter(inner.items()))
        name = str(args.get("name", ""))
        if type_ == "Bidirectional" and name.startswith("forward_"):
            name = name[len("forward_"):]   # Keras names the forward copy
        args["name"] = name
        if name == snake(inner_type):
            del args["name"]
        return inner
    if type_ == "BatchNormalization" and canon == "axis" and isinstance(value, list) \
            and len(value) == 1:
        return value[0]   # Keras 2 writes [3]
    return value


def _is_default(type_: str, schema: LayerSchema, key: str, value: Any, checked: dict) -> bool:
    default = schema.arg(key).default
    if key in ("activation", "recurrent_activation") and value == "linear" and default is None:
        return True
    if key == "strides" and "Pooling" in type_:   # Keras writes pool_size's value
        return value is None or value == checked.get("pool_size",
                                                     schema.arg("pool_size").default)
    return value == default


def _keras1_kernel_size(config: dict) -> dict:
    """Keras 1's Convolution2D nb_row, nb_col (Convolution3D kernel_dim1..3) -> kernel_size."""
    for names in KERAS1_KERNEL_DIMS:
        if all(n in config for n in names):
            config["kernel_size"] = [config.pop(n) for n in names]
    return config
