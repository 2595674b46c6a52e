"""Learning-rate schedules: `learning_rate: {schedule: NAME, ...}` in an optimizer.

Each is a function of the optimizer step (the number of updates done so far, as
Keras's `optimizer.iterations`) to a rate, usable by every rule in
`nnrun.nn.optimizer_rules`. Keras 3's schedules keep their class and argument names
and equal Keras's values (tested); `constant`, `linear`, `warmup_cosine` and
`one_cycle` are optax's. Keras's serialized form `{class_name: ExponentialDecay,
config: {...}}` is read too.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

from nnrun.config.errors import ConfigError
from nnrun.config.registry import Registry, did_you_mean
from nnrun.nn.lazy import jnp, optax

Schedule = Callable[[Any], Any]
SCHEDULES = Registry("learning-rate schedule")


def _f(step: Any) -> Any:
    return jnp.asarray(step, jnp.float32)


@SCHEDULES.register("exponential_decay", "ExponentialDecay")
def exponential_decay(initial_learning_rate: float, decay_steps: int, decay_rate: float,
                      staircase: bool = False) -> Schedule:
    """initial * decay_rate ^ (step / decay_steps) (the exponent floored with staircase)."""
    def schedule(step):
        p = _f(step) / decay_steps
        return initial_learning_rate * decay_rate ** (jnp.floor(p) if staircase else p)
    return schedule


@SCHEDULES.register("inverse_time_decay", "InverseTimeDecay")
def inverse_time_decay(initial_learning_rate: float, decay_steps: int, decay_rate: float,
                       staircase: bool = False) -> Schedule:
    """initial / (1 + decay_rate * step / decay_steps)."""
    def schedule(step):
        p = _f(step) / decay_steps
        return initial_learning_rate / (1.0 + decay_rate * (jnp.floor(p) if staircase else p))
    return schedule


@SCHEDULES.register("piecewise_constant", "PiecewiseConstantDecay", "piecewise_constant_decay")
def piecewise_constant(boundaries: list, values: list) -> Schedule:
    """values[0] up to and including step boundaries[0], values[1] up to boundaries[1], ..."""
    if len(values) != len(boundaries) + 1:
        raise ConfigError(f"values needs one more entry than boundaries: got "
                          f"{len(values)} values for {len(boundaries)} boundaries")

    def schedule(step):
        edges, levels = jnp.asarray(boundaries, jnp.float32), jnp.asarray(values, jnp.float32)
        return levels[jnp.searchsorted(edges, _f(step), side="left")]
    return schedule


@SCHEDULES.register("polynomial_decay", "PolynomialDecay")
def polynomial_decay(initial_learning_rate: float, decay_steps: int,
                     end_learning_rate: float = 0.0001, power: float = 1.0,
                     cycle: bool = False) -> Schedule:
    """From initial to end_learning_rate over decay_steps as (1 - step/decay_steps)^power;
    with cycle, again over each next multiple of decay_steps."""
    def schedule(step):
        step = _f(step)
        if cycle:
            steps = decay_steps * jnp.where(step == 0, 1.0, jnp.ceil(step / decay_steps))
        else:
            step, steps = jnp.minimum(step, decay_steps), decay_steps
        p = step / steps
        return (initial_learning_rate - end_learning_rate) * (1 - p) ** power + end_learning_rate
    return schedule


@SCHEDULES.register("cosine_decay", "CosineDecay")
def cosine_decay(initial_learning_rate: float, decay_steps: int, alpha: float = 0.0,
                 warmup_target: float | None = None, warmup_steps: int = 0) -> Schedule:
    """Half a cosine from the rate to alpha * rate over decay_steps; with warmup_target, a
    linear warmup from initial_learning_rate to it over warmup_steps first."""
    def decayed(step, peak):
        return peak * ((1 - alpha) * 0.5 * (1.0 + jnp.cos(math.pi * (step / decay_steps)))
                       + alpha)

    def schedule(step):
        step = _f(step)
        if warmup_target is None:
            return decayed(jnp.minimum(step, decay_steps), initial_learning_rate)
        step = jnp.minimum(step, decay_steps + warmup_steps)
        warm = (warmup_target - initial_learning_rate) * step / max(warmup_steps, 1) \
            + initial_learning_rate
        return jnp.where(step < warmup_steps, warm,
                         decayed(step - warmup_steps, warmup_target))
    return schedule


@SCHEDULES.register("cosine_decay_restarts", "CosineDecayRestarts")
def cosine_decay_restarts(initial_learning_rate: float, first_decay_steps: int,
                          t_mul: float = 2.0, m_mul: float = 1.0,
                          alpha: float = 0.0) -> Schedule:
    """SGDR: cosine decays restarting after first_decay_steps, each t_mul times longer and
    m_mul times lower."""
    def schedule(step):
        fraction = _f(step) / first_decay_steps
        if t_mul == 1.0:
            restart = jnp.floor(fraction)
            fraction = fraction - restart
        else:
            restart = jnp.floor(jnp.log(1.0 - fraction * (1.0 - t_mul)) / math.log(t_mul))
            done = (1.0 - t_mul ** restart) / (1.0 - t_mul)
            fraction = (fraction - done) / t_mul ** restart
        cosine = 0.5 * m_mul ** restart * (1.0 + jnp.cos(math.pi * fraction))
        return initial_learning_rate * ((1 - alpha) * cosine + alpha)
    return schedule


def _optax_schedule(name: str, *args: Any) -> Schedule:
    """`optax.<name>(*args)`, made on the first call: resolving a config's schedule
    (`nnrun check` does) imports no optax."""
    made: list[Schedule] = []

    def schedule(step):
        if not made:
            made.append(getattr(optax, name)(*args))
        return made[0](step)
    return schedule


@SCHEDULES.register("constant")
def constant(value: float) -> Schedule:
    return _optax_schedule("constant_schedule", value)


@SCHEDULES.register("linear")
def linear(init_value: float, end_value: float, transition_steps: int,
           transition_begin: int = 0) -> Schedule:
    """From init_value to end_value over transition_steps (after transition_begin)."""
    return _optax_schedule("linear_schedule", init_value, end_value, transition_steps,
                           transition_begin)


@SCHEDULES.register("warmup_cosine")
def warmup_cosine(init_value: float, peak_value: float, warmup_steps: int, decay_steps: int,
                  end_value: float = 0.0) -> Schedule:
    """Linear warmup to peak_value, then a cosine to end_value; decay_steps counts both."""
    return _optax_schedule("warmup_cosine_decay_schedule", init_value, peak_value,
                           warmup_steps, decay_steps, end_value)


@SCHEDULES.register("one_cycle")
def one_cycle(transition_steps: int, peak_value: float, pct_start: float = 0.3,
              div_factor: float = 25.0, final_div_factor: float = 1e4) -> Schedule:
    """Smith's one-cycle policy (cosine up to peak_value for pct_start, then down)."""
    return _optax_schedule("cosine_onecycle_schedule", transition_steps, peak_value,
                           pct_start, div_factor, final_div_factor)


_POSITIVE_STEPS = ("decay_steps", "first_decay_steps", "transition_steps")


def is_schedule(value: Any) -> bool:
    """A learning-rate value that names a schedule (rather than a number)."""
    return isinstance(value, Mapping) and ("schedule" in value or "class_name" in value)


def build_schedule(value: Mapping[str, Any]) -> Schedule:
    """`{schedule: name, **arguments}` or Keras's `{class_name, config}` -> a schedule.
    Problems (unknown name or argument, missing or non-numeric one) are ConfigErrors
    naming the argument."""
    if "class_name" in value:
        name, given = value["class_name"], dict(value.get("config") or {})
        given.pop("name", None)
    else:
        given = dict(value)
        name = given.pop("schedule")
    if not isinstance(name, str) or name not in SCHEDULES:
        raise ConfigError(f"unknown learning-rate schedule {name!r}"
                          f"{did_you_mean(str(name), SCHEDULES.names())}; allowed: "
                          f"{', '.join(SCHEDULES.names())}", where="schedule")
    factory = SCHEDULES.checked(name, given)
    params = inspect.signature(factory).parameters
    for key, param in params.items():
        if param.default is inspect.Parameter.empty and key not in given:
            raise ConfigError(f"schedule {SCHEDULES.canonical(name)!r} needs {key!r}",
                              where="schedule")
    for key, item in given.items():
        if key in ("boundaries", "values"):
            ok = isinstance(item, list) and item and all(_is_number(v) for v in item)
        elif isinstance(params[key].default, bool):
            ok = isinstance(item, bool)
        else:
            ok = _is_number(item) or (item is None and params[key].default is None)
            ok = ok and not (key in _POSITIVE_STEPS and item <= 0)
        if not ok:
            raise ConfigError(f"unexpected value {item!r} for schedule argument {key!r}",
                              where=key)
    return factory(**given)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)
