"""Keras 1's `weights=` layer argument: initial arrays in Keras's get_weights() order."""

from __future__ import annotations

import jax
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from nnrun import api
from nnrun.cli.main import main
from nnrun.config.errors import ConfigError
from nnrun.config.spec import spec_from_dict

# (nnrun layer, Keras layer factory, input shape, input dtype)
CASES = {
    "dense": ({"Dense": {"units": 3}}, lambda: keras.layers.Dense(3), (5,), "float32"),
    "conv2d": ({"Conv2D": {"filters": 2, "kernel_size": 3}},
               lambda: keras.layers.Conv2D(2, 3), (6, 6, 2), "float32"),
    "batchnorm": ({"BatchNormalization": {}}, keras.layers.BatchNormalization, (4,),
                  "float32"),
    "lstm": ({"LSTM": {"units": 4}}, lambda: keras.layers.LSTM(4), (7, 3), "float32"),
    "gru": ({"GRU": {"units": 3}}, lambda: keras.layers.GRU(3), (7, 2), "float32"),
    "bidirectional": ({"Bidirectional": {"layer": {"LSTM": {"units": 2}}}},
                      lambda: keras.layers.Bidirectional(keras.layers.LSTM(2)), (5, 3),
                      "float32"),
    "embedding": ({"Embedding": {"input_dim": 10, "output_dim": 3}},
                  lambda: keras.layers.Embedding(10, 3), (6,), "int32"),
    "prelu": ({"PReLU": {}}, keras.layers.PReLU, (4,), "float32"),
}


def _spec(layer: dict, shape, dtype="float32", **extra):
    model = {"input_shape": list(shape), "layers": [layer]}
    if dtype != "float32":
        model["input_dtype"] = dtype
    return spec_from_dict({"name": "w", "model": model, "compile": {"loss": "mse"},
                           **extra})


@pytest.mark.parametrize("case", sorted(CASES))
def test_weights_argument_gives_keras_outputs(case):
    ours, make, shape, dtype = CASES[case]
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 10, (4, *shape)) if dtype == "int32"
         else rng.normal(size=(4, *shape))).astype(dtype)
    layer = make()
    layer.build((None, *shape))
    weights = [rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()]
    if case == "batchnorm":
        weights[3] = np.abs(weights[3]) + 0.5   # a variance
    layer.set_weights(weights)
    want = np.asarray(layer(x, training=False))
    (kind, args), = ours.items()
    spec = _spec({kind: {**args, "weights": [w.tolist() for w in weights]}}, shape, dtype)
    model = api.build(spec)
    params, state = model.init(jax.random.key(1))
    got, _ = model.apply(params, state, x, training=False)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    # the resolved config keeps the arrays: the run's config.yaml rebuilds the same model
    again = spec_from_dict(spec.resolved)
    p2, s2 = api.build(again).init(jax.random.key(2))
    assert jax.tree.all(jax.tree.map(np.array_equal, (p2, s2), (params, state)))


def test_wrong_count_or_shape_is_a_located_config_error():
    with pytest.raises(ConfigError) as err:
        api.build(_spec({"Dense": {"units": 2, "weights": [[[1, 2]] * 3]}}, (3,)))
    assert "Dense 'dense' has the weights kernel (3, 2), bias (2,)" in err.value.message
    assert "`weights:` gives (3, 2)" in err.value.message
    assert "model.layers[0].Dense.weights" in str(err.value)
    with pytest.raises(ConfigError, match="gives \\(2, 3\\), \\(2,\\)"):
        api.build(_spec({"Dense": {"units": 2, "weights": [[[1, 2, 3]] * 2, [0, 0]]}},
                        (3,)))


def test_check_reports_bad_weights_without_training(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "model:\n  input_shape: [2]\n  layers:\n"
        "    - Dense: {units: 1, weights: [[[1], [2]], [0, 0]]}\n"
        "    - Dense: {units: 1, weights: [[1, x]]}\n"
        "compile: {loss: mse}\n")
    result = CliRunner().invoke(main, ["check", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2, result.output
    assert "c.yaml:5:" in result.output and "not a rectangular nest of numbers" in result.output


def test_a_trained_run_starts_from_the_given_weights(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "data: {train: {builtin: sine, samples: 64}}\n"
        "model:\n  layers:\n"
        "    - Dense: {units: 1, weights: [[[0.5]], [0.25]], trainable: false}\n"
        "compile: {loss: mse, optimizer: sgd}\nfit: {epochs: 1}\n")
    result = CliRunner().invoke(main, ["train", str(tmp_path / "c.yaml"), "--runs-dir",
                                       str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    import h5py

    run = (tmp_path / "runs" / "latest").resolve()
    with h5py.File(run / "checkpoints" / "last.h5") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        kernel = next(f[n][()] for n in names if n.endswith("dense/kernel"))
        bias = next(f[n][()] for n in names if n.endswith("dense/bias"))
    assert kernel.tolist() == [[0.5]] and bias.tolist() == [0.25]   # frozen: unchanged
