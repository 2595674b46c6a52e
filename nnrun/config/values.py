"""Typed config values: one checker per kind of argument (`positive_int`, `rate`,
`shape`, `one_of(...)`...), each `check(value) -> value` raising ArgTypeError with a
message a person can act on. Used by the layer schemas, the spec's sections and the
callbacks' arguments; read by the JSON Schema to describe each argument."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Checker = Callable[[Any], Any]
REQUIRED = object()


class ArgTypeError(ValueError):
    """A value of the wrong type or range; the message says what was expected."""


def got(value: Any) -> str:
    """What was received, for "expected X, got Y" (YAML's words for containers)."""
    if isinstance(value, (dict, list)):
        kind = "mapping" if isinstance(value, dict) else "list"
        return f"got a {kind}" if value else f"got an empty {kind}"
    return f"got {value!r}"


# Sizes (units, filters, dimensions, epochs...) beyond int32 are typos, and no array
# axis can be that long; other integers (seeds, axes) must fit an int64.
MAX_SIZE = 2 ** 31 - 1
MAX_INT = 2 ** 63 - 1


def _size(value: Any, least: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ArgTypeError(f"expected a {what} integer, {got(value)}")
    if value > MAX_SIZE:
        raise ArgTypeError(f"expected a {what} integer of at most {MAX_SIZE}, {got(value)}")
    return value


def positive_int(value: Any) -> int:
    return _size(value, 1, "positive")


def non_negative_int(value: Any) -> int:
    return _size(value, 0, "non-negative")


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_INT:
        raise ArgTypeError(f"expected an integer, {got(value)}")
    return value


def seed_int(value: Any) -> int:
    """A config's seed: a non-negative integer (numpy's generators refuse negative ones)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise ArgTypeError(f"expected a non-negative integer, {got(value)}")
    return value


def number(value: Any) -> float:
    """A finite number (an integer or a float; nan and inf are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        raise ArgTypeError(f"expected a finite number, {got(value)}")
    return float(value)


def non_negative_number(value: Any) -> float:
    """A finite number >= 0 (Keras 3 refuses a negative ReLU threshold, slope or cap)."""
    v = number(value)
    if v < 0:
        raise ArgTypeError(f"expected a number >= 0 (Keras 3 refuses a negative one), "
                           f"got {value!r}")
    return v


def rate(value: Any) -> float:
    """A fraction in [0, 1) such as a dropout rate."""
    v = number(value)
    if not 0.0 <= v < 1.0:
        raise ArgTypeError(f"expected a number in [0, 1), got {value!r}")
    return v


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgTypeError(f"expected true or false, {got(value)}")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ArgTypeError(f"expected a non-empty string, {got(value)}")
    return value


def optional(check: Checker) -> Checker:
    def check_optional(value: Any) -> Any:
        return None if value is None else check(value)

    check_optional.inner = check  # for the JSON Schema (nnrun.config.json_schema)
    return check_optional


def identifier(value: Any) -> Any:
    """A registry identifier: a name, or a mapping with `name:` and parameters."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return value
    raise ArgTypeError(f"expected a name or a mapping with 'name:', {got(value)}")


# Keras 3's serialized object: {module, class_name, config, registered_name}.
KERAS_OBJECT_KEYS = ("class_name", "config", "module", "registered_name")
# The forms of a named object of each kind, for the messages: (a name, one key, name:,
# Keras's).
_EXAMPLES = {
    "initializer": ("he_normal", "{RandomNormal: {stddev: 0.05}}",
                    "{name: RandomNormal, stddev: 0.05}",
                    "{class_name: RandomNormal, config: {stddev: 0.05}}"),
    "regularizer": ("l2", "{l2: 0.01}", "{name: l2, l2: 0.01}",
                    "{class_name: L2, config: {l2: 0.01}}"),
    "constraint": ("max_norm", "{max_norm: 3}", "{name: max_norm, max_value: 3}",
                   "{class_name: MaxNorm, config: {max_value: 3}}"),
    "activation": ("relu", "{leaky_relu: 0.1}", "{name: leaky_relu, negative_slope: 0.1}",
                   "{class_name: leaky_relu, config: {negative_slope: 0.1}}"),
}


def _forms(kind: str) -> str:
    name, one, named, keras = _EXAMPLES.get(kind, _EXAMPLES["regularizer"])
    return (f"expected a {kind or 'name'} such as {name}, or a mapping: {one} (one key, as "
            f"a layer is written), {named} or Keras's {keras}")


def named_parts(value: dict, kind: str = "") -> tuple[str, Any, str, str]:
    """A named object written as a mapping -> (name, parameters, the key that holds the
    name, the key that holds the parameters: '' for the mapping itself). The forms:
    `{name: l2, l2: 0.01}`; Keras's `{class_name: L2, config: {l2: 0.01}}`; and one key,
    as a layer is written, `{l2: 0.01}` or `{RandomNormal: {stddev: 0.05}}`, whose value is
    a mapping of parameters, null (none) or the first parameter's value."""
    if "class_name" in value:
        extra = [k for k in value if k not in KERAS_OBJECT_KEYS]
        if extra:
            raise ArgTypeError(f"a Keras object {{class_name, config}} has no key "
                               f"{extra[0]!r}")
        name, config = value["class_name"], value.get("config")
        if not isinstance(name, str) or not name:
            raise ArgTypeError(f"class_name: expected a non-empty string, {got(name)}")
        if config is not None and not isinstance(config, dict):
            raise ArgTypeError(f"config: expected a mapping of parameters, {got(config)}")
        return name, dict(config or {}), "class_name", "config"
    if "name" in value:
        name = value["name"]
        if not isinstance(name, str) or not name:
            raise ArgTypeError(f"name: expected a non-empty string, {got(name)}")
        return name, {k: v for k, v in value.items() if k != "name"}, "name", ""
    if len(value) == 1:
        (name, params), = value.items()
        if isinstance(name, str) and name:
            return name, params, name, name
    received = (f"got a mapping of {len(value)} keys ({', '.join(map(str, value))}) "
                "without 'name:'" if value else "got an empty mapping")
    raise ArgTypeError(f"{_forms(kind)}, {received}")


def named(kind: str) -> Checker:
    """A layer's `kind` (initializer, regularizer, constraint, activation): a name, or a
    mapping in one of the forms of `named_parts`. The name itself is checked when the
    layer is made (the registries are in nnrun.nn)."""

    def check_named(value: Any) -> Any:
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict):
            named_parts(value, kind)
            return value
        raise ArgTypeError(f"{_forms(kind)}, {got(value)}")

    check_named.kind = kind   # for the JSON Schema (nnrun.config.json_schema)
    return check_named


def named_call(registry: Any, value: dict, *, skip: int = 0) -> tuple[Any, dict]:
    """A named object's mapping (`named_parts`) -> (the registry's entry, its keyword
    arguments), checked against the entry's signature (`skip` leading parameters are
    not the config's: an activation's x). A ConfigError's `where` is the dotted key inside
    the mapping that is wrong (`l3`, `name`, `config.stddev`)."""
    import inspect

    from nnrun.config.errors import ConfigError

    try:
        name, params, name_at, params_at = named_parts(value, registry.kind)
    except ArgTypeError as exc:
        raise ConfigError(str(exc)) from None
    try:
        registry.canonical(name)
    except ConfigError as exc:
        # {minval: 0.0}: parameters without the name (no name is close to "minval")
        hint = (f"; a mapping names the {registry.kind} as its one key or with 'name:'"
                if name_at == name and "did you mean" not in exc.message else "")
        raise ConfigError(exc.message + hint, where=name_at) from None
    if params is None:
        params = {}
    elif not isinstance(params, dict):   # {l2: 0.01}: the first parameter's value
        first = list(inspect.signature(registry.get(name)).parameters)[skip:][:1]
        if not first:
            raise ConfigError(f"{registry.kind} {name!r} takes no parameters, got "
                              f"{params!r}", where=name_at)
        params, params_at = {first[0]: params}, None
    try:
        return registry.checked(name, params, skip=skip), params
    except ConfigError as exc:
        inner = (name_at if params_at is None
                 else ".".join(p for p in (params_at, exc.where) if p))
        raise ConfigError(exc.message, where=inner or None) from None


def shape(value: Any) -> tuple[int, ...]:
    """An input shape without the batch axis: `[2]`, `[28, 28, 1]` or a single integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ArgTypeError(f"expected a shape such as [28, 28, 1], {got(value)}")
    for dim in value:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ArgTypeError(f"expected a list of positive integers, got {list(value)!r}")
        if dim > MAX_SIZE:
            raise ArgTypeError(f"expected sizes of at most {MAX_SIZE}, got {list(value)!r}")
    return tuple(value)


def noise_shape(value: Any) -> tuple[int | None, ...]:
    """A noise shape with the batch axis: a list of positive integers or nulls."""
    if isinstance(value, (list, tuple)) and value and all(
            v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIZE)
            for v in value):
        return tuple(value)
    raise ArgTypeError(f"expected a list such as [null, 1, 8] (batch axis first), {got(value)}")


def one_of(*choices: str) -> Checker:
    def check_choice(value: Any) -> str:
        if value not in choices:
            raise ArgTypeError(f"expected one of {', '.join(choices)}, {got(value)}")
        return value

    check_choice.choices = choices
    return check_choice


def int_list(value: Any) -> tuple[int, ...]:
    """A non-empty list of integers (a target shape may hold one -1)."""
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_SIZE
            for v in value):
        return tuple(value)
    raise ArgTypeError(f"expected a list of integers, {got(value)}")


def _non_negative(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIZE:
        raise ArgTypeError(f"expected non-negative integers, {got(value)}")
    return value


def pairs(n_axes: int) -> Checker:
    """Per-axis (before, after) amounts, Keras-style: `1`, `[1, 2]` (per axis in 2-D,
    before/after in 1-D) or `[[1, 1], [2, 2]]`; normalised to n_axes pairs."""

    def check_pairs(value: Any) -> tuple[tuple[int, int], ...]:
        if isinstance(value, int) and not isinstance(value, bool):
            v = _non_negative(value)
            return ((v, v),) * n_axes
        if not isinstance(value, (list, tuple)):
            raise ArgTypeError(f"expected an integer or a list, {got(value)}")
        if n_axes == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
            return ((_non_negative(value[0]), _non_negative(value[1])),)
        if len(value) != n_axes:
            raise ArgTypeError(f"expected {n_axes} entries, one per spatial axis, got {value!r}")
        out = []
        for item in value:
            if isinstance(item, int) and not isinstance(item, bool):
                out.append((_non_negative(item), item))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                out.append((_non_negative(item[0]), _non_negative(item[1])))
            else:
                raise ArgTypeError(f"expected [before, after] pairs, got {value!r}")
        return tuple(out)

    check_pairs.n_axes = n_axes
    return check_pairs


def sizes(n_axes: int, *, zero: bool = False) -> Checker:
    """A positive (with `zero`: non-negative) integer per spatial axis: `2` or `[2, 3]`."""
    one = non_negative_int if zero else positive_int
    kind = "non-negative" if zero else "positive"

    def check_sizes(value: Any) -> tuple[int, ...]:
        if isinstance(value, int) and not isinstance(value, bool):
            return (one(value),) * n_axes
        if isinstance(value, (list, tuple)) and len(value) == n_axes:
            return tuple(one(v) for v in value)
        raise ArgTypeError(f"expected a {kind} integer or {n_axes} of them, {got(value)}")

    check_sizes.n_axes, check_sizes.minimum = n_axes, 0 if zero else 1
    return check_sizes


def channels_last(value: Any) -> str:
    """Keras's data_format (Keras 1: dim_ordering): nnrun's layouts are channels last."""
    if value in ("channels_last", "tf", "default"):
        return "channels_last"
    if value in ("channels_first", "th"):
        raise ArgTypeError(f"nnrun's layers are channels_last (batch, ..., channels), got "
                           f"{value!r}: transpose the data, or add a Permute layer first")
    raise ArgTypeError(f"expected channels_last, {got(value)}")


def dot_axes(value: Any) -> int | tuple[int, int]:
    """Dot's axes: one axis for both inputs, or [axis of the first, axis of the second]."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SIZE:
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_SIZE
            for v in value):
        return (value[0], value[1])
    raise ArgTypeError(f"expected an axis or a pair of axes such as [1, 1], {got(value)}")


def axes(value: Any) -> tuple[int, ...]:
    """An axis or a list of axes (Keras counts the batch axis as 0)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SIZE:
        return (value,)
    return int_list(value)


def nested_graph(value: Any) -> Any:
    """A nested graph model (inputs, layers, outputs), validated by the spec."""
    return value


def nested_layers(value: Any) -> Any:
    """A nested model's layers: a list of layers, validated by the spec like any layer."""
    return value


def nested_layer(value: Any) -> Any:
    """A wrapped layer, `{LSTM: {units: 8}}`: validated by the spec like any layer."""
    return value


# A run directory is `<name>-YYYYmmdd-HHMMSS[-N]` (a sweep's `<name>-sweep-...`), and a
# file system takes names of at most 255 bytes (NAME_MAX): the rest is the suffix's.
MAX_NAME_BYTES = 200


def run_name(value: Any) -> str:
    """A config's `name:`, the prefix of its run directories' names: one path part, short
    enough for the file system to take it with the run's suffix."""
    value = string(value)
    if any(c in value for c in "/\\\0") or value in (".", ".."):
        raise ArgTypeError(f"expected a name without '/', '\\' or NUL (it names the run "
                           f"directory), got {value!r}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:   # a lone surrogate ("\ud800" in YAML)
        raise ArgTypeError(f"expected a name a file system can take (it names the run "
                           f"directory), got {value!r}") from None
    if size > MAX_NAME_BYTES:
        raise ArgTypeError(f"expected a name of at most {MAX_NAME_BYTES} bytes (it names "
                           f"the run directory, with a date after it), got {size} bytes")
    return value
