"""Learning-rate schedules: Keras 3's equal Keras's values at every step; an optimizer
with a schedule (or Keras 1's `decay`) moves the weights as Keras's does; config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax
import pytest

from nnrun.config.errors import ConfigError
from nnrun.nn.optimizers import build_optimizer, current_learning_rate, resolve_optimizer
from nnrun.nn.schedules import SCHEDULES, build_schedule

STEPS = [0, 1, 2, 5, 9, 10, 11, 37, 99, 100, 101, 250, 1000]

KERAS_CASES = [
    ("ExponentialDecay", {"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5}),
    ("ExponentialDecay", {"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5,
                          "staircase": True}),
    ("InverseTimeDecay", {"initial_learning_rate": 0.1, "decay_steps": 5, "decay_rate": 0.3,
                          "staircase": True}),
    ("PiecewiseConstantDecay", {"boundaries": [10, 100], "values": [1.0, 0.5, 0.1]}),
    ("PolynomialDecay", {"initial_learning_rate": 0.1, "decay_steps": 100,
                         "end_learning_rate": 0.01, "power": 2.0}),
    ("PolynomialDecay", {"initial_learning_rate": 0.1, "decay_steps": 100, "cycle": True}),
    ("CosineDecay", {"initial_learning_rate": 0.1, "decay_steps": 100, "alpha": 0.1}),
    ("CosineDecay", {"initial_learning_rate": 0.0, "decay_steps": 100, "warmup_target": 0.2,
                     "warmup_steps": 10}),
    ("CosineDecayRestarts", {"initial_learning_rate": 0.1, "first_decay_steps": 10}),
    ("CosineDecayRestarts", {"initial_learning_rate": 0.1, "first_decay_steps": 10,
                             "t_mul": 1.0, "m_mul": 0.5, "alpha": 0.05}),
]


def ids(case):
    return case[0] + "-" + "-".join(f"{k}={v}" for k, v in case[1].items())


@pytest.mark.parametrize("case", KERAS_CASES, ids=[ids(c) for c in KERAS_CASES])
@pytest.mark.parametrize("form", ["snake", "keras"])
def test_keras_schedules_equal_keras(case, form):
    cls, args = case
    reference = getattr(keras.optimizers.schedules, cls)(**args)
    if form == "snake":
        name = SCHEDULES.canonical(cls)
        schedule = build_schedule({"schedule": name, **args})
    else:  # Keras's serialized form, as in a model's JSON
        schedule = build_schedule({"class_name": cls, "config": {**args, "name": cls}})
    want = [float(reference(step)) for step in STEPS]
    got = [float(jax.jit(schedule)(jnp.int32(step))) for step in STEPS]
    # float32: a fused cosine may differ from the eager one in the last bit
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    assert len(set(np.round(want, 6))) > 2, "a case that does not vary tests little"


@pytest.mark.parametrize("config, step, value", [
    ({"schedule": "constant", "value": 0.3}, 50, 0.3),
    ({"schedule": "linear", "init_value": 1.0, "end_value": 0.0, "transition_steps": 10}, 5, 0.5),
    ({"schedule": "linear", "init_value": 1.0, "end_value": 0.0, "transition_steps": 10}, 50, 0.0),
    ({"schedule": "warmup_cosine", "init_value": 0.0, "peak_value": 1.0, "warmup_steps": 10,
      "decay_steps": 110}, 5, 0.5),
    ({"schedule": "warmup_cosine", "init_value": 0.0, "peak_value": 1.0, "warmup_steps": 10,
      "decay_steps": 110}, 60, 0.5),
    ({"schedule": "one_cycle", "transition_steps": 100, "peak_value": 1.0}, 30, 1.0),
    ({"schedule": "one_cycle", "transition_steps": 100, "peak_value": 1.0}, 0, 1.0 / 25),
])
def test_optax_schedules_by_hand(config, step, value):
    assert float(build_schedule(config)(step)) == pytest.approx(value, abs=1e-6)


def test_an_optimizer_with_a_schedule_moves_weights_as_keras():
    args = {"initial_learning_rate": 0.2, "decay_steps": 2, "decay_rate": 0.5}
    keras_opt = keras.optimizers.SGD(
        learning_rate=keras.optimizers.schedules.ExponentialDecay(**args), momentum=0.9)
    ours = build_optimizer({"name": "sgd", "momentum": 0.9,
                            "learning_rate": {"schedule": "exponential_decay", **args}})
    _compare(keras_opt, ours)


def test_keras1_decay_is_inverse_time_decay_per_step():
    """Keras 1/2: lr_t = lr / (1 + decay * iterations)."""
    ours = build_optimizer({"name": "sgd", "lr": 0.5, "decay": 0.3})
    reference = keras.optimizers.SGD(learning_rate=keras.optimizers.schedules.InverseTimeDecay(
        0.5, decay_steps=1, decay_rate=0.3))
    rates = _compare(reference, ours)
    assert rates[:3] == pytest.approx([0.5 / 1.3, 0.5 / 1.6, 0.5 / 1.9], rel=1e-6)


def _compare(keras_opt, ours, steps=5):
    """Both optimizers from the same weights with the same gradients: equal weights after
    every step. Returns the learning rates nnrun's state reports."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 2)).astype(np.float32)
    grads = [rng.normal(size=(3, 2)).astype(np.float32) for _ in range(steps)]
    variable = keras.Variable(start)
    params, state, rates = jnp.asarray(start), ours.init(jnp.asarray(start)), []
    for g in grads:
        keras_opt.apply_gradients([(jnp.asarray(g), variable)])
        updates, state = ours.update(jnp.asarray(g), state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(np.asarray(params), np.asarray(variable.value), rtol=1e-6,
                                   atol=1e-7)
        rates.append(float(current_learning_rate(state)))
    return rates


@pytest.mark.parametrize("lr, needle, where", [
    ({"schedule": "cosine_decy", "initial_learning_rate": 0.1, "decay_steps": 10},
     "did you mean 'cosine_decay'", "learning_rate.schedule"),
    ({"schedule": "cosine_decay", "initial_learning_rate": 0.1},
     "needs 'decay_steps'", "learning_rate.schedule"),
    ({"schedule": "cosine_decay", "initial_learning_rate": 0.1, "decay_steps": 0},
     "unexpected value 0", "learning_rate.decay_steps"),
    ({"schedule": "cosine_decay", "initial_learning_rate": "fast", "decay_steps": 10},
     "unexpected value 'fast'", "learning_rate.initial_learning_rate"),
    ({"schedule": "exponential_decay", "initial_learning_rate": 0.1, "decay_steps": 10,
      "decay_rate": 0.5, "decay_rat": 1}, "did you mean 'decay_rate'", None),
    ({"schedule": "piecewise_constant", "boundaries": [10], "values": [1.0]},
     "one more entry", None),
])
def test_schedule_errors_name_the_argument(lr, needle, where):
    with pytest.raises(ConfigError) as err:
        resolve_optimizer({"name": "adam", "learning_rate": lr}, "compile.optimizer")
    assert needle in str(err.value)
    if where:
        assert err.value.problems[0][0] == f"compile.optimizer.{where}"


def test_decay_and_a_schedule_together_are_refused():
    with pytest.raises(ConfigError, match="not both"):
        resolve_optimizer({"name": "sgd", "decay": 0.1, "learning_rate": {
            "schedule": "constant", "value": 0.1}})
    with pytest.raises(ConfigError, match="non-negative"):
        resolve_optimizer({"name": "sgd", "decay": -1})


def test_schedules_cross_to_keras_and_back():
    """Keras interop: a schedule in an exported compile config is Keras's class, and a
    Keras optimizer with a schedule imports as the same nnrun schedule."""
    from nnrun.keras.names import KERAS_SCHEDULES, compile_from_keras, compile_to_keras

    assert {SCHEDULES.canonical(cls) for cls in KERAS_SCHEDULES} == set(KERAS_SCHEDULES.values())
    ours = {"name": "sgd", "momentum": 0.5, "learning_rate": {
        "schedule": "cosine_decay", "initial_learning_rate": 0.1, "decay_steps": 100,
        "alpha": 0.1}}
    exported = compile_to_keras({"optimizer": ours, "loss": "mse", "metrics": []})
    keras_opt = keras.optimizers.deserialize(exported["optimizer"])
    schedule = keras_opt.learning_rate if callable(keras_opt.learning_rate) else \
        keras_opt._learning_rate
    assert float(schedule(50)) == pytest.approx(float(build_schedule(ours["learning_rate"])(50)))
    keras_config = {"optimizer": keras.optimizers.serialize(keras.optimizers.SGD(
        momentum=0.5, learning_rate=keras.optimizers.schedules.PiecewiseConstantDecay(
            [10, 20], [0.3, 0.2, 0.1]))), "loss": "mse"}
    imported = compile_from_keras(keras_config, ["out"])["optimizer"]
    assert imported["learning_rate"] == {"schedule": "piecewise_constant",
                                         "boundaries": [10, 20], "values": [0.3, 0.2, 0.1]}
    build_optimizer(imported)  # resolves
    assert float(build_schedule(imported["learning_rate"])(15)) == pytest.approx(0.2)
