"""Regularizers and constraints: Keras 3 formulas, and one training epoch equal to Keras's."""

import jax
import keras
import numpy as np
import pytest
from keras_twin import assert_fit_equals_keras

from nnrun import api
from nnrun.config.errors import ConfigError
from nnrun.config.spec import spec_from_dict
from nnrun.nn.regularizers import get_constraint, get_regularizer
from nnrun.train.epoch import resolve_objective
from nnrun.train.fitter import Fitter

W = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)


def dense_weights(ts):
    """Two Dense layers' weights in Keras's order."""
    return [ts.params[layer][w] for layer in ("dense", "dense_1") for w in ("kernel", "bias")]


@pytest.mark.parametrize("ours, theirs", [
    ("l1", keras.regularizers.L1()),
    ("l2", keras.regularizers.L2()),
    ({"name": "l1_l2", "l1": 0.1, "l2": 0.2}, keras.regularizers.L1L2(l1=0.1, l2=0.2)),
    ({"name": "L2", "l2": 1e-4}, keras.regularizers.L2(1e-4)),
])
def test_regularizers_equal_keras(ours, theirs):
    assert float(get_regularizer(ours)(W)) == pytest.approx(float(theirs(W)), rel=1e-6)


@pytest.mark.parametrize("ours, theirs", [
    ("max_norm", keras.constraints.MaxNorm()),
    ({"name": "max_norm", "max_value": 0.5, "axis": 1}, keras.constraints.MaxNorm(0.5, axis=1)),
    ({"name": "min_max_norm", "min_value": 1.0, "max_value": 1.5, "rate": 0.5},
     keras.constraints.MinMaxNorm(1.0, 1.5, rate=0.5)),
    ("non_neg", keras.constraints.NonNeg()),
    ("unit_norm", keras.constraints.UnitNorm()),
])
def test_constraints_equal_keras(ours, theirs):
    np.testing.assert_allclose(np.asarray(get_constraint(ours)(W)), np.asarray(theirs(W)),
                               rtol=1e-6, atol=1e-7)


def test_unknown_names_and_arguments():
    with pytest.raises(ConfigError, match="did you mean 'l1_l2'"):
        get_regularizer("l1_l3")
    with pytest.raises(ConfigError, match="did you mean 'max_value'"):
        get_constraint({"name": "max_norm", "max_valu": 2})


def test_an_epoch_with_regularizers_and_constraints_equals_keras():
    spec = spec_from_dict({
        "seed": 2, "data": {"train": {"builtin": "xor", "samples": 25}},
        "model": {"input_shape": [2], "layers": [
            {"Dense": {"units": 4, "activation": "tanh",
                       "W_regularizer": {"name": "l2", "l2": 0.05},       # Keras 1 names
                       "b_regularizer": "l1",
                       "kernel_constraint": {"name": "max_norm", "max_value": 0.8}}},
            {"Dense": {"units": 1, "activation": "sigmoid", "bias_constraint": "non_neg"}}]},
        "compile": {"optimizer": {"name": "sgd", "learning_rate": 0.5}, "loss": "mse"},
        "fit": {"batch_size": 10, "shuffle": False}})
    splits = api.load_data(spec)
    x, y = splits.train.x, splits.train.y
    model = api.build(spec)
    obj = resolve_objective("mse", (), (2, 1), (2, 1))
    fitter = Fitter(model, obj, spec.compile.optimizer, seed=2, batch_size=10, shuffle=False,
                    x=x, y=y)
    ts = fitter.initial_state()
    p = jax.device_get(ts.params)
    k = keras.Sequential([
        keras.Input((2,)),
        keras.layers.Dense(4, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.05),
                           bias_regularizer="l1",
                           kernel_constraint=keras.constraints.MaxNorm(0.8)),
        keras.layers.Dense(1, activation="sigmoid", bias_constraint=keras.constraints.NonNeg())])
    k.set_weights([p["dense"]["kernel"], p["dense"]["bias"], p["dense_1"]["kernel"],
                   p["dense_1"]["bias"]])
    assert_fit_equals_keras(fitter, ts, k, x, y, dense_weights)


def test_an_epoch_with_an_activity_regularizer_equals_keras():
    spec = spec_from_dict({
        "seed": 4, "data": {"train": {"builtin": "xor", "samples": 25}},
        "model": {"input_shape": [2], "layers": [
            {"Dense": {"units": 4, "activation": "tanh",
                       "activity_regularizer": {"name": "l2", "l2": 0.1}}},
            {"Dense": {"units": 1, "activation": "sigmoid"}}]},
        "compile": {"optimizer": {"name": "sgd", "learning_rate": 0.5}, "loss": "mse"},
        "fit": {"batch_size": 10, "shuffle": False}})
    splits = api.load_data(spec)
    x, y = splits.train.x, splits.train.y
    obj = resolve_objective("mse", (), (2, 1), (2, 1))
    fitter = Fitter(api.build(spec), obj, spec.compile.optimizer, seed=4, batch_size=10,
                    shuffle=False, x=x, y=y)
    ts = fitter.initial_state()
    p = jax.device_get(ts.params)
    k = keras.Sequential([
        keras.Input((2,)),
        keras.layers.Dense(4, activation="tanh",
                           activity_regularizer=keras.regularizers.L2(0.1)),
        keras.layers.Dense(1, activation="sigmoid")])
    k.set_weights([p["dense"]["kernel"], p["dense"]["bias"], p["dense_1"]["kernel"],
                   p["dense_1"]["bias"]])
    assert_fit_equals_keras(fitter, ts, k, x, y, dense_weights)


@pytest.mark.parametrize("layer, args, penalised", [
    ("DepthwiseConv2D", {"kernel_size": 2, "depthwise_regularizer": {"name": "l2", "l2": 0.1},
                         "depthwise_constraint": "non_neg"}, "kernel"),
    ("SeparableConv2D", {"filters": 2, "kernel_size": 2,
                         "pointwise_regularizer": {"name": "l2", "l2": 0.1},
                         "pointwise_constraint": "non_neg"}, "pointwise_kernel"),
    ("LSTM", {"units": 2, "recurrent_regularizer": {"name": "l2", "l2": 0.1},
              "recurrent_constraint": "non_neg"}, "recurrent_kernel"),
])
def test_named_weight_options_reach_keras_weight_names(layer, args, penalised):
    """Keras names some weight options after the weight's role (depthwise_, pointwise_,
    recurrent_): each must reach the right parameter."""
    from nnrun.nn.builder import build_model

    shape = [4, 3] if layer == "LSTM" else [4, 4, 3]
    model = build_model(spec_from_dict({"model": {"input_shape": shape, "layers": [
        {layer: args}]}, "compile": {"loss": "mse"}}).model)
    params, _ = model.init(jax.random.key(0))
    (name,) = params
    expected = 0.1 * float(np.sum(np.square(np.asarray(params[name][penalised]))))
    assert float(model.regularization(params)) == pytest.approx(expected, rel=1e-5)
    projected = model.constrain(params)[name]
    assert float(np.min(np.asarray(projected[penalised]))) >= 0.0
    others = [k for k in params[name] if k != penalised]
    for k in others:
        np.testing.assert_array_equal(np.asarray(projected[k]), np.asarray(params[name][k]))
