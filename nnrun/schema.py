"""Layer argument schemas: Keras 3 names, defaults, types and Keras 1 aliases.

Jax-free, so that loading and checking a config stays fast. The layer
implementations in `nnrun.layers` register under the same names; a test
checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Checker = Callable[[Any], Any]
REQUIRED = object()


class ArgTypeError(ValueError):
    """A value of the wrong type or range; the message says what was expected."""


def _got(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"got a {type(value).__name__}"
    return f"got {value!r}"


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ArgTypeError(f"expected a positive integer, {_got(value)}")
    return value


def non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ArgTypeError(f"expected a non-negative integer, {_got(value)}")
    return value


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgTypeError(f"expected an integer, {_got(value)}")
    return value


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgTypeError(f"expected a number, {_got(value)}")
    return float(value)


def rate(value: Any) -> float:
    """A fraction in [0, 1) such as a dropout rate."""
    v = number(value)
    if not 0.0 <= v < 1.0:
        raise ArgTypeError(f"expected a number in [0, 1), got {value!r}")
    return v


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgTypeError(f"expected true or false, {_got(value)}")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ArgTypeError(f"expected a non-empty string, {_got(value)}")
    return value


def optional(check: Checker) -> Checker:
    def check_optional(value: Any) -> Any:
        return None if value is None else check(value)

    return check_optional


def identifier(value: Any) -> Any:
    """A registry identifier: a name, or a mapping with `name:` and parameters."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return value
    raise ArgTypeError(f"expected a name or a mapping with 'name:', {_got(value)}")


def shape(value: Any) -> tuple[int, ...]:
    """An input shape without the batch axis: `[2]`, `[28, 28, 1]` or a single integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ArgTypeError(f"expected a shape such as [28, 28, 1], {_got(value)}")
    for dim in value:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ArgTypeError(f"expected a list of positive integers, got {list(value)!r}")
    return tuple(value)


def noise_shape(value: Any) -> tuple[int | None, ...]:
    """A noise shape with the batch axis: a list of positive integers or nulls."""
    if isinstance(value, (list, tuple)) and value and all(
            v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0)
            for v in value):
        return tuple(value)
    raise ArgTypeError(f"expected a list such as [null, 1, 8] (batch axis first), {_got(value)}")


@dataclass(frozen=True)
class Arg:
    """One layer argument: Keras 3 name, type checker, default (or REQUIRED)."""

    name: str
    check: Checker
    default: Any = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class LayerSchema:
    """The arguments of one layer type, in Keras's positional order."""

    args: tuple[Arg, ...]
    aliases: dict[str, str] = field(default_factory=dict)
    doc: str = ""

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)

    def names(self) -> list[str]:
        return [a.name for a in self.args]


# Arguments accepted by every layer: Keras's `name`, and the input-shape
# arguments that may stand on a Sequential model's first layer.
COMMON_ARGS = ("name", "input_shape", "input_dim", "input_length", "batch_input_shape")

# Keras 1 argument names that mean the same on every layer.
COMMON_ALIASES = {
    "init": "kernel_initializer",
    "output_dim": "units",
    "bias": "use_bias",
    "W_regularizer": "kernel_regularizer",
    "b_regularizer": "bias_regularizer",
    "W_constraint": "kernel_constraint",
    "b_constraint": "bias_constraint",
}

# Keras 1 layer type names.
TYPE_ALIASES: dict[str, str] = {}

LAYERS: dict[str, LayerSchema] = {
    "Dense": LayerSchema(
        args=(
            Arg("units", positive_int, REQUIRED),
            Arg("activation", optional(identifier), None),
            Arg("use_bias", boolean, True),
            Arg("kernel_initializer", identifier, "glorot_uniform"),
            Arg("bias_initializer", identifier, "zeros"),
        ),
        doc="Fully connected layer: y = activation(x @ kernel + bias) on the last axis.",
    ),
    "Activation": LayerSchema(
        args=(Arg("activation", identifier, REQUIRED),),
        doc="Applies an activation function by name.",
    ),
    "Dropout": LayerSchema(
        args=(
            Arg("rate", rate, REQUIRED),
            Arg("noise_shape", optional(noise_shape), None),
            Arg("seed", optional(integer), None),
        ),
        aliases={"p": "rate"},
        doc="Sets a fraction `rate` of inputs to zero in training, scaling the rest by 1/(1-rate).",
    ),
    "Flatten": LayerSchema(args=(), doc="Flattens all axes but the batch axis."),
}


def canonical_type(name: str) -> str:
    return TYPE_ALIASES.get(name, name)
