"""Tests for nnrun.nn.activations: every activation against numpy (float64) and Keras 3."""

from __future__ import annotations

import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from nnrun.config.errors import ConfigError
from nnrun.nn import activations
from nnrun.nn.activations import ACTIVATIONS

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6

# Random values away from the kinks, plus a few exact ones on either side of them.
X = np.concatenate([
    np.random.default_rng(0).normal(0, 3, 18),
    [-7.0, -3.5, -1.5, -0.7, -0.2, 0.0, 0.3, 0.8, 1.2, 2.5, 3.5, 7.0],
]).reshape(5, 6)

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def np_elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(x))


np_erf = np.vectorize(math.erf)

# name -> numpy float64 reference
REFERENCES = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
    "sigmoid": np_sigmoid,
    "hard_sigmoid": lambda x: np.clip(x / 6 + 0.5, 0, 1),
    "hard_swish": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "tanh": np.tanh,
    "hard_tanh": lambda x: np.clip(x, -1, 1),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "softmax": np_softmax,
    "log_softmax": lambda x: np.log(np_softmax(x)),
    "elu": np_elu,
    "celu": lambda x: np.maximum(x, 0) + np.minimum(np.expm1(x), 0),
    "selu": lambda x: SELU_SCALE * np_elu(x, SELU_ALPHA),
    "gelu": lambda x: 0.5 * x * (1 + np_erf(x / np.sqrt(2))),
    "swish": lambda x: x * np_sigmoid(x),
    "mish": lambda x: x * np.tanh(np.log1p(np.exp(x))),
    "exponential": np.exp,
    "log_sigmoid": lambda x: -np.log1p(np.exp(-x)),
    "squareplus": lambda x: (x + np.sqrt(x**2 + 4)) / 2,
    "sparse_plus": lambda x: np.where(x <= -1, 0, np.where(x >= 1, x, (x + 1) ** 2 / 4)),
    "sparse_sigmoid": lambda x: np.clip((x + 1) / 2, 0, 1),
    "soft_shrink": lambda x: np.sign(x) * np.maximum(np.abs(x) - 0.5, 0),
    "hard_shrink": lambda x: np.where(np.abs(x) > 0.5, x, 0),
}


def test_every_registered_activation_has_a_reference():
    assert sorted(REFERENCES) == sorted(ACTIVATIONS.names())


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_matches_numpy(name):
    ours = np.asarray(activations.get(name)(jnp.asarray(X, jnp.float32)))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, REFERENCES[name](X), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS.names(aliases=True)))
def test_matches_keras(name):
    x = X.astype(np.float32)
    ours = np.asarray(activations.get(name)(x))
    np.testing.assert_allclose(ours, np.asarray(keras.activations.get(name)(x)),
                               rtol=RTOL, atol=ATOL)


# (identifier mapping, Keras call with the same arguments)
WITH_ARGUMENTS = [
    ({"name": "relu", "negative_slope": 0.1},
     lambda x: keras.activations.relu(x, negative_slope=0.1)),
    ({"name": "relu", "max_value": 6.0}, lambda x: keras.activations.relu(x, max_value=6.0)),
    ({"name": "relu", "max_value": 2.0, "threshold": 0.5},
     lambda x: keras.activations.relu(x, max_value=2.0, threshold=0.5)),
    ({"name": "relu", "negative_slope": 0.3, "threshold": 1.0, "max_value": 4.0},
     lambda x: keras.activations.relu(x, negative_slope=0.3, threshold=1.0, max_value=4.0)),
    ({"name": "leaky_relu", "negative_slope": 0.01},
     lambda x: keras.activations.leaky_relu(x, negative_slope=0.01)),
    ({"name": "elu", "alpha": 0.5}, lambda x: keras.activations.elu(x, alpha=0.5)),
    ({"name": "celu", "alpha": 2.0}, lambda x: keras.activations.celu(x, alpha=2.0)),
    ({"name": "gelu", "approximate": True}, lambda x: keras.activations.gelu(x, True)),
    ({"name": "softmax", "axis": 0}, lambda x: keras.activations.softmax(x, axis=0)),
    ({"name": "log_softmax", "axis": 0}, lambda x: keras.activations.log_softmax(x, axis=0)),
    ({"name": "squareplus", "b": 1.0}, lambda x: keras.activations.squareplus(x, b=1.0)),
    ({"name": "soft_shrink", "threshold": 1.0},
     lambda x: keras.activations.soft_shrink(x, threshold=1.0)),
    ({"name": "hard_shrink", "threshold": 1.0},
     lambda x: keras.activations.hard_shrink(x, threshold=1.0)),
]


@pytest.mark.parametrize("identifier, keras_fn", WITH_ARGUMENTS,
                         ids=[str(sorted(c[0].items())) for c in WITH_ARGUMENTS])
def test_arguments_match_keras(identifier, keras_fn):
    x = X.astype(np.float32)
    ours = np.asarray(activations.get(identifier)(x))
    np.testing.assert_allclose(ours, np.asarray(keras_fn(x)), rtol=RTOL, atol=ATOL)


def test_none_and_callables():
    assert activations.get(None) is activations.linear
    assert activations.get("linear") is activations.linear
    assert activations.get(jnp.sin) is jnp.sin
    assert activations.get("silu") is activations.get("swish")


@pytest.mark.parametrize("identifier, fragment", [
    ("relux", "did you mean 'relu'"),
    ("sigmod", "did you mean 'sigmoid'"),
    ({"name": "leaky_relu", "alpha": 0.1}, "'alpha'"),
    ({"name": "softmax", "axes": 0}, "did you mean 'axis'"),
    ({"negative_slope": 0.1}, "'name:'"),
    (3, "cannot interpret"),
])
def test_errors(identifier, fragment):
    with pytest.raises(ConfigError) as err:
        activations.get(identifier)
    assert fragment in str(err.value)
