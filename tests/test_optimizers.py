"""Optimizers against Keras 3 itself (same gradients, same variables after every step),
a numpy Adam, the config errors, and the state as a jit/scan/HDF5-friendly pytree."""

import inspect

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax
import pytest

from nnrun.config.errors import ConfigError
from nnrun.nn.optimizers import OPTIMIZERS, build_optimizer, current_learning_rate, optimizer_params

KERAS_CLASSES = {"sgd": "SGD", "adagrad": "Adagrad", "adadelta": "Adadelta",
                 "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW",
                 "adamax": "Adamax", "nadam": "Nadam"}
SHAPES = {"kernel": (3, 4), "bias": (4,)}
STEPS = 6


def exp_schedule(count):
    """An optax schedule, handed to both Keras (wrapped) and nnrun."""
    return optax.exponential_decay(0.1, transition_steps=2, decay_rate=0.5)(count)


class KerasSchedule(keras.optimizers.schedules.LearningRateSchedule):
    def __call__(self, step):
        return exp_schedule(keras.ops.convert_to_tensor(step))


# (optimizer, parameters): large learning rates so that each rule's step is far above
# float32 rounding of the parameters, plus the defaults.
CASES = [
    ("sgd", {}),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9}),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
    ("adagrad", {}),
    ("adagrad", {"learning_rate": 0.3, "initial_accumulator_value": 0.5, "epsilon": 1e-3}),
    ("adadelta", {"learning_rate": 1.0}),
    ("adadelta", {"learning_rate": 2.0, "rho": 0.8, "epsilon": 1e-4}),
    ("rmsprop", {}),
    ("rmsprop", {"learning_rate": 0.05, "centered": True}),
    ("rmsprop", {"learning_rate": 0.05, "momentum": 0.9}),
    ("rmsprop", {"learning_rate": 0.05, "rho": 0.8, "momentum": 0.5, "centered": True,
                 "epsilon": 1e-3}),
    ("adam", {}),
    ("adam", {"learning_rate": 0.1, "amsgrad": True}),
    ("adam", {"learning_rate": 0.1, "beta_1": 0.8, "beta_2": 0.9, "epsilon": 0.1}),
    ("adamw", {}),
    ("adamw", {"learning_rate": 0.1, "weight_decay": 0.5, "amsgrad": True}),
    ("adamax", {}),
    ("adamax", {"learning_rate": 0.1, "beta_1": 0.8, "beta_2": 0.9, "epsilon": 0.01}),
    ("nadam", {}),
    ("nadam", {"learning_rate": 0.1, "beta_1": 0.95, "beta_2": 0.9, "epsilon": 0.01}),
    ("sgd", {"learning_rate": 0.1, "clipnorm": 2.5}),
    ("adam", {"learning_rate": 0.1, "clipvalue": 0.5}),
    ("rmsprop", {"learning_rate": 0.05, "global_clipnorm": 1.0}),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 0.3}),
    ("adagrad", {"learning_rate": 0.3, "weight_decay": 0.2, "clipnorm": 1.0}),
    ("nadam", {"learning_rate": 0.1, "weight_decay": 0.1, "global_clipnorm": 2.0}),
    ("adam", {"learning_rate": exp_schedule, "weight_decay": 0.5}),
    ("rmsprop", {"learning_rate": exp_schedule, "momentum": 0.5, "clipvalue": 1.0}),
]


def case_id(case):
    name, params = case
    parts = [f"{k}={getattr(v, '__name__', v)}" for k, v in params.items()]
    return "-".join([name, *parts]) or name


def initial_params():
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def gradients(steps=STEPS):
    """Fixed pseudo-random gradients, one {kernel, bias} per step."""
    rng = np.random.default_rng(1)
    return [{k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
            for _ in range(steps)]


_KERAS_RUNS = {}


def run_keras(name, params):
    """Keras's variables and learning rate after each step (cached: two tests use them)."""
    key = case_id((name, params))
    if key not in _KERAS_RUNS:
        _KERAS_RUNS[key] = _run_keras(name, params)
    return _KERAS_RUNS[key]


def _run_keras(name, params):
    kwargs = {k: (KerasSchedule() if callable(v) else v) for k, v in params.items()}
    opt = getattr(keras.optimizers, KERAS_CLASSES[name])(**kwargs)
    variables = {k: keras.Variable(v) for k, v in initial_params().items()}
    history = []
    for grads in gradients():
        opt.apply_gradients([(jnp.asarray(grads[k]), variables[k]) for k in SHAPES])
        history.append(({k: np.asarray(v.value) for k, v in variables.items()},
                        float(opt.learning_rate)))
    return history


def make_step(optimizer, jit=True):
    def step(params, state, grads):
        with jax.numpy_dtype_promotion("strict"):
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state

    return jax.jit(step) if jit else step


def run_nnrun(name, params, jit=True):
    optimizer = build_optimizer({"name": name, **params})
    step = make_step(optimizer, jit)
    values = jax.tree.map(jnp.asarray, initial_params())
    state = optimizer.init(values)
    history = []
    for grads in gradients():
        values, state = step(values, state, grads)
        history.append(({k: np.asarray(v) for k, v in values.items()},
                        float(current_learning_rate(state))))
    return history


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_matches_keras(case):
    name, params = case
    expected, got = run_keras(name, params), run_nnrun(name, params)
    start = initial_params()
    for step, ((want, want_lr), (have, have_lr)) in enumerate(zip(expected, got, strict=True)):
        for key in SHAPES:
            assert not np.allclose(want[key], start[key], rtol=1e-4), "the rule did not move"
            np.testing.assert_allclose(have[key], want[key], rtol=1e-6, atol=1e-7,
                                       err_msg=f"{key} after step {step + 1}")
        assert have_lr == pytest.approx(want_lr, rel=1e-6)


NO_DECAY = [c for c in CASES if not c[1].get("weight_decay") and c[0] != "adamw"]


@pytest.mark.parametrize("case", NO_DECAY, ids=[case_id(c) for c in NO_DECAY])
def test_eager_steps_equal_keras_bit_for_bit(case):
    """Op by op as Keras: run eagerly (no XLA fusion), the parameters are the same floats.
    (Weight decay is left out: a delta cannot always carry Keras's in-place decay exactly.)"""
    name, params = case
    for (want, _), (have, _) in zip(run_keras(name, params), run_nnrun(name, params, jit=False),
                                    strict=True):
        for key in SHAPES:
            np.testing.assert_array_equal(have[key], want[key])


def numpy_adam(lr, beta_1, beta_2, epsilon, params, grads_per_step):
    """Keras's Adam written out in float64."""
    params = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    for t, grads in enumerate(grads_per_step, start=1):
        alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        for k, g in grads.items():
            m[k] = beta_1 * m[k] + (1 - beta_1) * g
            v[k] = beta_2 * v[k] + (1 - beta_2) * g**2
            params[k] = params[k] - alpha * m[k] / (np.sqrt(v[k]) + epsilon)
    return params


def test_adam_matches_numpy_reference_and_not_optax_adam():
    hyper = {"learning_rate": 0.1, "beta_1": 0.8, "beta_2": 0.95, "epsilon": 0.5}
    want = numpy_adam(0.1, 0.8, 0.95, 0.5, initial_params(), gradients())
    have = run_nnrun("adam", hyper)[-1][0]
    for key in SHAPES:
        np.testing.assert_allclose(have[key], want[key], rtol=2e-6, atol=1e-6)
    # optax's adam adds epsilon to sqrt(v_hat): with a large epsilon that is another rule.
    opt = optax.adam(0.1, b1=0.8, b2=0.95, eps=0.5)
    values = jax.tree.map(jnp.asarray, initial_params())
    state = opt.init(values)
    for grads in gradients():
        updates, state = opt.update(grads, state)
        values = optax.apply_updates(values, updates)
    assert not np.allclose(values["kernel"], want["kernel"], rtol=1e-3)


@pytest.mark.parametrize("name", sorted(KERAS_CLASSES))
def test_defaults_are_keras_defaults(name):
    signature = inspect.signature(getattr(keras.optimizers, KERAS_CLASSES[name]).__init__)
    for key, default in optimizer_params(name).items():
        assert signature.parameters[key].default == default, key


def test_names_and_aliases():
    assert OPTIMIZERS.names() == list(KERAS_CLASSES)
    assert optimizer_params("SGD") == {"learning_rate": 0.01, "momentum": 0.0,
                                       "nesterov": False, "weight_decay": None,
                                       "clipnorm": None, "clipvalue": None,
                                       "global_clipnorm": None}
    assert optimizer_params("AdamW")["weight_decay"] == 0.004
    assert optimizer_params("RMSProp") == optimizer_params("RMSprop")
    for identifier in ({"name": "rmsprop", "lr": 0.05},
                       {"name": "RMSprop", "learning_rate": "5e-2"}):  # YAML reads 5e-2 as str
        state = build_optimizer(identifier).init(initial_params())
        assert float(current_learning_rate(state)) == pytest.approx(0.05)


@pytest.mark.parametrize("identifier, message", [
    ("adm", "did you mean 'adam'"),
    ({"name": "rmsprob"}, "did you mean 'rmsprop'"),
    (3, "expected an optimizer name"),
    ({"learning_rate": 0.1}, "expected an optimizer name"),
    ({"name": "adam", "bta_1": 0.8}, "did you mean 'beta_1'"),
    ({"name": "adam", "momentum": 0.8}, "allowed: learning_rate, beta_1, beta_2, epsilon"),
    ({"name": "sgd", "clipnorm": 1.0, "clipvalue": 0.5}, "only one of clipnorm, clipvalue"),
    ({"name": "adam", "global_clipnorm": 1.0, "clipnorm": 1.0}, "clipnorm and global_clipnorm"),
    ({"name": "sgd", "clipnorm": 0}, "expected a positive number"),
    ({"name": "sgd", "momentum": 1.5}, "expected a number in [0, 1]"),
    ({"name": "adam", "epsilon": float("inf")}, "expected a finite number"),
    ({"name": "adam", "amsgrad": "yes"}, "expected true or false"),
    ({"name": "adam", "learning_rate": "fast"}, "expected a finite number"),
    ({"name": "adam", "lr": 0.1, "learning_rate": 0.1}, "not both"),
    ({"name": "adamw", "weight_decay": None}, "expected a finite number, got None"),
    ({"name": "adam", "use_ema": True}, "'use_ema' is not supported"),
    ({"name": "sgd", "decay": "fast"}, "expected a finite number, got 'fast'"),
])
def test_config_errors(identifier, message):
    with pytest.raises(ConfigError) as info:
        build_optimizer(identifier, where="compile.optimizer")
    assert message in str(info.value)
    assert str(info.value).startswith("compile.optimizer")


def test_every_problem_is_reported():
    with pytest.raises(ConfigError) as info:
        build_optimizer({"name": "adam", "bta_1": 0.8, "amsgrad": 1})
    assert [where for where, _ in info.value.problems] == ["bta_1", "amsgrad"]


FULL_STATES = [("sgd", {"momentum": 0.9, "clipnorm": 1.0}),
               ("rmsprop", {"momentum": 0.9, "centered": True, "weight_decay": 0.1}),
               ("adam", {"amsgrad": True, "learning_rate": exp_schedule}),
               ("nadam", {"global_clipnorm": 1.0}),
               ("adadelta", {}), ("adagrad", {}), ("adamax", {}), ("adamw", {})]


@pytest.mark.parametrize("case", FULL_STATES, ids=[case_id(c) for c in FULL_STATES])
def test_state_round_trips_and_scans(case):
    name, params = case
    optimizer = build_optimizer({"name": name, **params})
    step = make_step(optimizer)
    values = jax.tree.map(jnp.asarray, initial_params())
    state = optimizer.init(values)
    grads = gradients()
    for g in grads[:3]:
        values, state = step(values, state, g)

    # What a checkpoint does: leaves by path to numpy, back into a fresh skeleton.
    saved = {jax.tree_util.keystr(path): np.asarray(leaf)
             for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in saved.values())
    skeleton_paths, treedef = jax.tree_util.tree_flatten_with_path(optimizer.init(values))
    restored = jax.tree_util.tree_unflatten(
        treedef, [saved[jax.tree_util.keystr(path)] for path, _ in skeleton_paths])
    jax.tree.map(np.testing.assert_array_equal, restored, state)
    rule_state = next(s for s in restored if hasattr(s, "learning_rate"))
    assert int(rule_state.count) == 3

    # The remaining steps as one lax.scan (state dtypes are stable) equal the loop.
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *grads[3:])
    scanned, _ = jax.lax.scan(lambda c, g: (step(*c, g), None), (values, restored), stacked)
    for g in grads[3:]:
        values, state = step(values, state, g)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 scanned, (values, state))


def test_current_learning_rate_follows_the_schedule():
    optimizer = build_optimizer({"name": "adam", "learning_rate": exp_schedule})
    values = jax.tree.map(jnp.asarray, initial_params())
    state = optimizer.init(values)
    step = make_step(optimizer)
    lr = jax.jit(current_learning_rate)
    for count, grads in enumerate(gradients()):
        assert float(lr(state)) == pytest.approx(float(exp_schedule(count)))
        values, state = step(values, state, grads)
    assert np.isnan(current_learning_rate(optax.adam(0.1).init(values)))
    injected = optax.inject_hyperparams(optax.sgd)(learning_rate=0.25)
    assert float(current_learning_rate(injected.init(values))) == 0.25
    assert build_optimizer(injected) is injected
