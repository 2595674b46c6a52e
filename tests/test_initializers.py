"""Tests for nnrun.nn.initializers: Keras 3 values bit for bit, statistics, fans, errors."""

from __future__ import annotations

import math
import os

import jax
import numpy as np
import pytest

from nnrun.config.errors import ConfigError
from nnrun.nn import initializers
from nnrun.nn.initializers import INITIALIZERS, TRUNCATION_STDDEV, compute_fans

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402

KEY = jax.random.PRNGKey(0)


def draw(init, shape, key=KEY):
    """One draw. Tests share a few shapes: each new shape compiles the random kernels anew."""
    return init(key, shape)

# Few shapes on purpose: each (distribution, shape) pair compiles JAX's random kernels once.
DENSE, CONV = (60, 100), (3, 3, 16, 32)  # conv fans: in 3*3*16 = 144, out 3*3*32 = 288
TALL, WIDE, KERNEL = (30, 20), (20, 30), (3, 2, 5, 20)  # orthogonal: all draw a (30, 20) normal

# (nnrun name, kwargs, Keras class name, shape): with the same seed, identical values.
SAME_AS_KERAS = [
    ("glorot_uniform", {}, "GlorotUniform", CONV),
    ("glorot_normal", {}, "GlorotNormal", DENSE),
    ("he_uniform", {}, "HeUniform", DENSE),
    ("he_normal", {}, "HeNormal", DENSE),
    ("lecun_uniform", {}, "LecunUniform", CONV),
    ("lecun_normal", {}, "LecunNormal", DENSE),
    ("uniform", {"minval": -0.2, "maxval": 0.3}, "RandomUniform", DENSE),
    ("random_normal", {"mean": 1.0, "stddev": 0.5}, "RandomNormal", DENSE),
    ("truncated_normal", {"stddev": 0.2}, "TruncatedNormal", DENSE),
    ("variance_scaling", {"scale": 0.3, "mode": "fan_out", "distribution": "untruncated_normal"},
     "VarianceScaling", DENSE),
    ("variance_scaling", {"mode": "fan_avg", "distribution": "uniform"}, "VarianceScaling", CONV),
    ("variance_scaling", {"scale": 2.0, "distribution": "normal"}, "VarianceScaling", DENSE),
    ("orthogonal", {"gain": 1.5}, "Orthogonal", TALL),
    ("orthogonal", {}, "Orthogonal", KERNEL),
    ("orthogonal", {}, "Orthogonal", WIDE),
]


@pytest.mark.parametrize("name, kwargs, keras_class, shape", SAME_AS_KERAS,
                         ids=[f"{c[2]}-{c[3]}-{c[1]}" for c in SAME_AS_KERAS])
def test_same_seed_same_values_as_keras(name, kwargs, keras_class, shape):
    ours = draw(initializers.get({"name": name, "seed": 7, **kwargs}), shape)
    theirs = keras.initializers.get({"class_name": keras_class, "config": {"seed": 7, **kwargs}})
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs(shape)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("identifier, keras_class, shape", [
    ("zeros", "Zeros", (3, 4)),
    ("ones", "Ones", (3, 4)),
    ({"name": "constant", "value": 0.25}, "Constant", (2, 3, 4)),
    ({"name": "Identity", "gain": 2.0}, "Identity", (3, 5)),
])
def test_constant_initializers(identifier, keras_class, shape):
    config = {k: v for k, v in identifier.items() if k != "name"} if isinstance(
        identifier, dict) else {}
    ours = initializers.get(identifier)(KEY, shape)
    theirs = keras.initializers.get({"class_name": keras_class, "config": config})(shape)
    assert ours.shape == shape and ours.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


# (name, kwargs, shape, distribution, expected std of the samples)
def glorot(shape, scale=1.0):
    fan_in, fan_out = compute_fans(shape)
    return math.sqrt(scale / ((fan_in + fan_out) / 2))


STATISTICS = [
    ("glorot_uniform", {}, DENSE, "uniform", glorot(DENSE)),
    ("glorot_uniform", {}, CONV, "uniform", math.sqrt(1 / 216)),
    ("glorot_normal", {}, DENSE, "truncated", math.sqrt(1 / 80)),
    ("he_uniform", {}, CONV, "uniform", math.sqrt(2 / 144)),
    ("he_normal", {}, DENSE, "truncated", math.sqrt(2 / 60)),
    ("lecun_uniform", {}, DENSE, "uniform", math.sqrt(1 / 60)),
    ("lecun_normal", {}, DENSE, "truncated", math.sqrt(1 / 60)),
    ("VarianceScaling", {"scale": 0.5, "mode": "fan_out", "distribution": "untruncated_normal"},
     DENSE, "normal", math.sqrt(0.5 / 100)),
    ("RandomUniform", {}, DENSE, "uniform", 0.05 * 2 / math.sqrt(12)),
    ("RandomNormal", {}, DENSE, "normal", 0.05),
    ("TruncatedNormal", {}, DENSE, "truncated", 0.05 * TRUNCATION_STDDEV),
]


@pytest.mark.parametrize("name, kwargs, shape, distribution, std", STATISTICS,
                         ids=[f"{c[0]}-{c[2]}" for c in STATISTICS])
def test_statistics(name, kwargs, shape, distribution, std):
    w = np.asarray(draw(initializers.get({"name": name, **kwargs}), shape), np.float64)
    assert w.shape == shape
    assert abs(w.mean()) < 4 * std / math.sqrt(w.size)
    np.testing.assert_allclose(w.std(), std, rtol=0.03)
    bound = {"uniform": math.sqrt(3) * std, "truncated": 2 * std / TRUNCATION_STDDEV,
             "normal": None}[distribution]
    if bound is not None:
        assert np.abs(w).max() <= bound * (1 + 1e-6)
        assert np.abs(w).max() > 0.95 * bound


@pytest.mark.parametrize("shape, fans", [
    ((), (1, 1)),
    ((5,), (5, 5)),
    ((3, 4), (3, 4)),
    ((7, 2, 4), (14, 28)),
    ((3, 3, 32, 64), (288, 576)),
    ((2, 3, 3, 4, 5), (72, 90)),
])
def test_compute_fans_as_keras(shape, fans):
    from keras.src.initializers.random_initializers import compute_fans as keras_fans

    assert compute_fans(shape) == fans == keras_fans(shape)


@pytest.mark.parametrize("shape, gain", [(TALL, 1.0), (WIDE, 1.0), (KERNEL, 2.0)])
def test_orthogonal(shape, gain):
    w = np.asarray(draw(initializers.get({"name": "orthogonal", "gain": gain}), shape), np.float64)
    flat = w.reshape(-1, shape[-1])
    gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    np.testing.assert_allclose(gram, gain**2 * np.eye(len(gram)), atol=1e-5)


@pytest.mark.parametrize("name, shape", [
    ("glorot_uniform", DENSE), ("he_normal", DENSE), ("normal", DENSE), ("orthogonal", TALL)])
def test_determinism(name, shape):
    init = initializers.get(name)
    a, b = draw(init, shape), draw(init, shape)
    c = draw(init, shape, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    seeded = initializers.get({"name": name, "seed": 3})
    np.testing.assert_array_equal(np.asarray(draw(seeded, shape)),
                                  np.asarray(draw(seeded, shape, jax.random.PRNGKey(1))))


def test_names_and_forms():
    for name in ["GlorotUniform", "glorot_uniform", "RandomNormal", "random_normal", "normal",
                 "uniform", "TruncatedNormal", "Orthogonal", "Zeros", "Ones", "Constant"]:
        assert callable(initializers.get(name))
    keras_form = {"class_name": "RandomUniform", "config": {"minval": 0.0, "maxval": 1.0}}
    w = np.asarray(draw(initializers.get(keras_form), DENSE))
    assert w.min() >= 0.0 and w.max() <= 1.0
    custom = lambda key, shape, dtype=None: np.full(shape, 3.0)  # noqa: E731
    assert initializers.get(custom) is custom
    assert set(INITIALIZERS.names()) >= {
        "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform",
        "lecun_normal", "uniform", "normal", "truncated_normal", "orthogonal", "zeros", "ones",
        "constant", "variance_scaling"}


@pytest.mark.parametrize("identifier, fragment", [
    ("glorot_unifrom", "did you mean 'glorot_uniform'"),
    ({"name": "normal", "std": 0.1}, "'std'"),
    ({"name": "normal", "sttdev": 0.1}, "did you mean 'stddev'"),
    ({"name": "glorot_uniform", "scale": 2.0}, "allowed: seed"),
    ({"name": "variance_scaling", "mode": "fan_avgg"}, "did you mean 'fan_avg'"),
    ({"name": "variance_scaling", "distribution": "gamma"}, "distribution"),
    ({"name": "variance_scaling", "scale": 0.0}, "positive"),
    ({"minval": 0.0}, "'name:'"),
    (1.5, "cannot interpret"),
])
def test_errors(identifier, fragment):
    with pytest.raises(ConfigError) as err:
        initializers.get(identifier)
    assert fragment in str(err.value)


def test_shape_errors():
    with pytest.raises(ConfigError, match="rank >= 2"):
        initializers.get("orthogonal")(KEY, (5,))
    with pytest.raises(ConfigError, match="2-D"):
        initializers.get("identity")(KEY, (2, 2, 2))
