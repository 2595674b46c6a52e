"""Optimizers from a config: `{name: adam, learning_rate: 1e-3, clipnorm: 1.0, ...}`.

An optimizer is `optax.chain(clipping, rule, weight decay)` of the transformations in
`nnrun.nn.optimizer_rules` (Keras 3's update rules); the chain's output is the parameter
delta for `optax.apply_updates`. Parameters take Keras 3 names and defaults.
`current_learning_rate` finds the rate the next update will use in the state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.registry import did_you_mean, unknown_name_message
from nnrun.nn.lazy import jax, jnp, optax
from nnrun.nn.optimizer_rules import (  # noqa: F401  (re-exported: the rules are public)
    BASE_DEFAULTS,
    CLIP_OPTIONS,
    CLIPPERS,
    OPTIMIZERS,
    OptimizerDef,
    adadelta_rule,
    adagrad_rule,
    adam_rule,
    adamax_rule,
    keras_clip_by_global_norm,
    keras_clip_by_norm,
    keras_clip_by_value,
    keras_weight_decay,
    nadam_rule,
    rmsprop_rule,
    sgd_rule,
)
from nnrun.nn.schedules import build_schedule, inverse_time_decay, is_schedule

ALIASES = {"lr": "learning_rate"}  # Keras 1
UNSUPPORTED = {
    **{key: f"the Keras option {key!r} is not supported by nnrun" for key in (
        "use_ema", "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor",
        "gradient_accumulation_steps")},
}


# ---------------------------------------------------------------- config -> optimizer

_FRACTIONS = ("momentum", "rho", "beta_1", "beta_2")  # decay factors: in [0, 1]


def _number(value: Any) -> float:
    # PyYAML reads `1e-3` (no dot) as a string; accept what Python reads as a number.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _check_value(key: str, default: Any, value: Any) -> Any:
    """The value converted to its type, or ValueError saying what was expected."""
    if key == "learning_rate" and callable(value):
        return value
    if key == "learning_rate" and is_schedule(value):
        return build_schedule(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if value is None and default is None:  # AdamW's weight_decay (0.004) is never None
        return None
    number = _number(value)
    if key in CLIP_OPTIONS and number <= 0:
        raise ValueError(f"expected a positive number, got {value!r}")
    if key in _FRACTIONS and not 0.0 <= number <= 1.0:
        raise ValueError(f"expected a number in [0, 1], got {value!r}")
    if number < 0:
        raise ValueError(f"expected a non-negative number, got {value!r}")
    return number


def _canonical_name(name: str) -> str:
    # Case-insensitive, so RMSProp and ADAM work too (Keras's own spellings are aliases);
    # the error suggests and lists the lower-case names only.
    for candidate in (name, name.lower()):
        if candidate in OPTIMIZERS:
            return OPTIMIZERS.canonical(candidate)
    raise ConfigError(unknown_name_message(OPTIMIZERS.kind, name, OPTIMIZERS.names()))


def _split_identifier(identifier: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(identifier, str):
        return identifier, {}
    if isinstance(identifier, Mapping) and isinstance(identifier.get("name"), str):
        params = dict(identifier)
        return params.pop("name"), params
    raise ConfigError("expected an optimizer name or a mapping with `name:` and parameters, "
                      f"got {identifier!r}")


def resolve_optimizer(identifier: str | Mapping[str, Any],
                      where: str | None = None) -> tuple[str, dict[str, Any]]:
    """(canonical name, every parameter with its value or Keras 3 default), validated.

    Raises one ConfigError listing every problem found.
    """
    try:
        name, given = _split_identifier(identifier)
        name = _canonical_name(name)
    except ConfigError as exc:
        raise ConfigError(exc.message, where=where) from None
    definition: OptimizerDef = OPTIMIZERS.get(name)
    allowed = list(definition.defaults)
    values = dict(definition.defaults)
    problems: list[tuple[str | None, str]] = []

    def problem(key: str, message: str) -> None:
        problems.append((f"{where}.{key}" if where else key, message))

    given = dict(given)
    decay = given.pop("decay", None)
    for key, value in given.items():
        canonical = ALIASES.get(key, key)
        if canonical != key and canonical in given:
            problem(key, f"give {key!r} or {canonical!r}, not both")
        elif key in UNSUPPORTED:
            problem(key, UNSUPPORTED[key])
        elif canonical not in values:
            problem(key, f"unknown parameter {key!r} for optimizer {name!r}"
                         f"{did_you_mean(str(key), allowed)}; allowed: {', '.join(allowed)}")
        else:
            try:
                values[canonical] = _check_value(canonical, definition.defaults[canonical], value)
            except ValueError as exc:
                problem(key, str(exc))
            except ConfigError as exc:  # a schedule's argument
                problem(f"{key}.{exc.where}" if exc.where else key, exc.message)
    if decay is not None:
        _keras1_decay(values, decay, problem)
    clips = [key for key in CLIP_OPTIONS if values[key] is not None]
    if len(clips) > 1:
        problem(clips[1], f"only one of clipnorm, clipvalue and global_clipnorm can be set; "
                          f"got {' and '.join(clips)}")
    if problems:
        raise ConfigError(problems[0][1], where=problems[0][0], problems=problems)
    return name, values


def _keras1_decay(values: dict[str, Any], decay: Any, problem: Callable) -> None:
    """Keras 1/2's `decay`: the rate at step t is learning_rate / (1 + decay * t)."""
    try:
        decay = _number(decay)
        if decay < 0:
            raise ValueError(f"expected a non-negative number, got {decay!r}")
    except ValueError as exc:
        problem("decay", str(exc))
        return
    if callable(values["learning_rate"]):
        problem("decay", "give `decay` (Keras 1) or a learning-rate schedule, not both")
    elif decay > 0:
        values["learning_rate"] = inverse_time_decay(values["learning_rate"], 1, decay)


def build_optimizer(identifier: str | Mapping[str, Any] | optax.GradientTransformation,
                    where: str | None = None) -> optax.GradientTransformation:
    """An optimizer from a name (`"adam"`) or a mapping (`{name: adam, learning_rate: 0.01}`).

    Parameters take Keras 3 names and defaults; `learning_rate` may also be an optax
    schedule (step -> rate). A GradientTransformation passes through unchanged.
    `where` prefixes error locations (e.g. "compile.optimizer").
    """
    if isinstance(identifier, optax.GradientTransformation):
        return identifier
    name, values = resolve_optimizer(identifier, where)
    learning_rate = values.pop("learning_rate")
    weight_decay = values.pop("weight_decay")
    parts = [CLIPPERS[key](values[key]) for key in CLIP_OPTIONS if values[key] is not None]
    rule_params = {k: v for k, v in values.items() if k not in CLIP_OPTIONS}
    parts.append(OPTIMIZERS.get(name).rule(learning_rate, **rule_params))
    if weight_decay:
        parts.append(keras_weight_decay(weight_decay, learning_rate))
    return optax.chain(*parts)


def optimizer_params(name: str) -> dict[str, Any]:
    """The parameters optimizer `name` accepts, with their Keras 3 defaults."""
    return dict(OPTIMIZERS.get(_canonical_name(name)).defaults)


def _has_learning_rate(node: Any) -> bool:
    fields = getattr(node, "_fields", ())
    return isinstance(node, tuple) and ("learning_rate" in fields or "hyperparams" in fields)


def current_learning_rate(opt_state: Any) -> jax.Array:
    """The learning rate the next update will use, read from the state (jit friendly).

    It is the `learning_rate` field of the rule's state (or an optax
    `inject_hyperparams` state's); NaN for a state that records none.
    """
    for node in jax.tree.leaves(opt_state, is_leaf=_has_learning_rate):
        if _has_learning_rate(node):
            if "learning_rate" in node._fields:
                return node.learning_rate
            if "learning_rate" in node.hyperparams:
                return jnp.asarray(node.hyperparams["learning_rate"])
    return jnp.asarray(jnp.nan, jnp.float32)
