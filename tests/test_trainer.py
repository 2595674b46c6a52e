"""The trainer: Keras-equal steps with a padded last batch, one compile, reproducible runs."""

from pathlib import Path

import jax
import keras
import numpy as np
import pytest
from keras_twin import assert_fit_equals_keras

from nnrun import api
from nnrun.config.spec import spec_from_dict
from nnrun.train.epoch import finalize, make_eval, resolve_objective
from nnrun.train.fitter import Fitter


def small_spec(**fit):
    return spec_from_dict({
        "seed": 3,
        "data": {"train": {"builtin": "xor", "samples": 25}},
        "model": {"input_shape": [2], "layers": [
            {"Dense": {"units": 4, "activation": "tanh"}}, {"Dense": {"units": 1,
                                                                   "activation": "sigmoid"}}]},
        "compile": {"optimizer": {"name": "sgd", "learning_rate": 0.5}, "loss": "mse",
                    "metrics": ["accuracy"]},
        "fit": {"batch_size": 10, "shuffle": False, **fit},
    })


def make_fitter(spec, x, y):
    model = api.build(spec)
    obj = resolve_objective(spec.compile.loss, spec.compile.metrics, (2, *y.shape[1:]),
                            (2, *model.output_shape))
    return model, Fitter(model, obj, spec.compile.optimizer, seed=spec.seed,
                         batch_size=spec.fit.batch_size, shuffle=spec.fit.shuffle, x=x, y=y)


def keras_twin(params):
    k = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="tanh"),
                          keras.layers.Dense(1, activation="sigmoid")])
    k.layers[0].set_weights([np.asarray(params["dense"]["kernel"]),
                             np.asarray(params["dense"]["bias"])])
    k.layers[1].set_weights([np.asarray(params["dense_1"]["kernel"]),
                             np.asarray(params["dense_1"]["bias"])])
    k.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="mse",
              metrics=["accuracy"])
    return k


@pytest.fixture
def twins():
    """nnrun and Keras on the same 25 rows, from the same initial weights."""
    spec = small_spec()
    splits = api.load_data(spec)
    x, y = splits.train.x, splits.train.y
    model, fitter = make_fitter(spec, x, y)
    ts = fitter.initial_state()
    return x, y, model, fitter, ts, keras_twin(jax.device_get(ts.params))


def test_epoch_with_partial_last_batch_equals_keras(twins):
    x, y, model, fitter, ts, k = twins
    history = k.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0).history
    for epoch in range(2):
        ts, res = fitter.run_epoch(ts)
        assert res.logs["loss"] == pytest.approx(history["loss"][epoch], rel=1e-5)
        assert res.logs["accuracy"] == pytest.approx(history["accuracy"][epoch], rel=1e-6)
    for ours, theirs in zip([ts.params["dense"]["kernel"], ts.params["dense"]["bias"],
                             ts.params["dense_1"]["kernel"], ts.params["dense_1"]["bias"]],
                            k.get_weights()):
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-5, atol=1e-6)


def test_evaluate_equals_keras_evaluate(twins):
    x, y, model, fitter, ts, k = twins
    loss, acc = k.evaluate(x, y, batch_size=10, verbose=0)
    logs = finalize(fitter.obj, jax.jit(make_eval(model, fitter.obj, len(x), 10))(
        ts.params, ts.state, x, y))
    assert logs["loss"] == pytest.approx(loss, rel=1e-5)
    assert logs["accuracy"] == pytest.approx(acc, rel=1e-6)


def test_one_compile_for_all_epochs():
    spec = small_spec(shuffle=True)
    splits = api.load_data(spec)
    _, fitter = make_fitter(spec, splits.train.x, splits.train.y)
    ts = fitter.initial_state()
    for _ in range(3):
        ts, _ = fitter.run_epoch(ts)
    assert fitter.traces == {"epoch": 1}


def test_shuffle_changes_order_per_epoch_but_is_seeded():
    spec = small_spec(shuffle=True)
    splits = api.load_data(spec)
    runs = []
    for _ in range(2):
        _, fitter = make_fitter(spec, splits.train.x, splits.train.y)
        ts = fitter.initial_state()
        logs = []
        for _ in range(3):
            ts, res = fitter.run_epoch(ts)
            logs.append(res.logs["loss"])
        runs.append(logs)
    assert runs[0] == runs[1]


def test_founding_network_learns_xor(tmp_path):
    from nnrun.config.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "configs" / "mlp.yaml")
    result = api.train(spec, runs_root=tmp_path, quiet=True)
    assert result.status == "finished"
    assert result.history["val_accuracy"][-1] >= 0.95
    scores = api.evaluate(spec, result.run_dir)
    assert scores["data"] == "test" and scores["accuracy"] >= 0.95


def test_rmse_loss_epoch_value_is_the_weighted_mean_of_batch_values():
    spec = spec_from_dict({
        "data": {"train": {"builtin": "sine", "samples": 25}},
        "model": {"input_shape": [1], "layers": [{"Dense": 1}]},
        "compile": {"optimizer": {"name": "sgd", "learning_rate": 0.0}, "loss": "rmse"},
        "fit": {"batch_size": 10, "shuffle": False}})
    splits = api.load_data(spec)
    x, y = splits.train.x, splits.train.y
    model, fitter = make_fitter(spec, x, y)
    ts = fitter.initial_state()
    preds = np.asarray(model.apply(ts.params, ts.state, x)[0])
    batches = [np.sqrt(np.mean((preds[i:i + 10] - y[i:i + 10]) ** 2)) for i in (0, 10, 20)]
    expected = (batches[0] * 10 + batches[1] * 10 + batches[2] * 5) / 25
    _, res = fitter.run_epoch(ts)
    assert res.logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_batch_normalization_epoch_equals_keras():
    spec = spec_from_dict({
        "seed": 1, "data": {"train": {"builtin": "moons", "samples": 25}},
        "model": {"input_shape": [2], "layers": [
            {"Dense": {"units": 4, "activation": "tanh"}}, {"BatchNormalization": {}},
            {"Dense": {"units": 1, "activation": "sigmoid"}}]},
        "compile": {"optimizer": {"name": "sgd", "learning_rate": 0.5}, "loss": "mse"},
        "fit": {"batch_size": 10, "shuffle": False}})
    splits = api.load_data(spec)
    x, y = splits.train.x, splits.train.y
    model, fitter = make_fitter(spec, x, y)
    ts = fitter.initial_state()
    p, s = jax.device_get((ts.params, ts.state))
    k = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="tanh"),
                          keras.layers.BatchNormalization(),
                          keras.layers.Dense(1, activation="sigmoid")])
    bn = p["batch_normalization"]
    k.set_weights([p["dense"]["kernel"], p["dense"]["bias"], bn["gamma"], bn["beta"],
                   s["batch_normalization"]["moving_mean"],
                   s["batch_normalization"]["moving_variance"],
                   p["dense_1"]["kernel"], p["dense_1"]["bias"]])
    def ours(ts):
        bn, stats = ts.params["batch_normalization"], ts.state["batch_normalization"]
        return [ts.params["dense"]["kernel"], ts.params["dense"]["bias"], bn["gamma"],
                bn["beta"], stats["moving_mean"], stats["moving_variance"],
                ts.params["dense_1"]["kernel"], ts.params["dense_1"]["bias"]]

    assert_fit_equals_keras(fitter, ts, k, x, y, ours, weights_rtol=1e-4)


def test_masked_sequence_output_fit_equals_keras():
    """Embedding(mask_zero) -> LSTM(return_sequences) -> Dense: the loss skips the padded
    steps as Keras's does, over two epochs with a partial last batch."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 9, size=(25, 6)).astype(np.int32)
    for i, length in enumerate(rng.integers(1, 7, size=25)):
        ids[i, length:] = 0
    y = rng.normal(size=(25, 6, 1)).astype(np.float32)
    spec = spec_from_dict({
        "seed": 2, "model": {"input_shape": [6], "layers": [
            {"Embedding": {"input_dim": 9, "output_dim": 4, "mask_zero": True}},
            {"LSTM": {"units": 3, "return_sequences": True}}, {"Dense": 1}]},
        "compile": {"optimizer": {"name": "sgd", "learning_rate": 0.5}, "loss": "mse",
                    "metrics": ["mae"]},
        "fit": {"batch_size": 10, "shuffle": False}})
    model, fitter = make_fitter(spec, ids, y)
    ts = fitter.initial_state()
    p = jax.device_get(ts.params)
    k = keras.Sequential([keras.Input((6,), dtype="int32"),
                          keras.layers.Embedding(9, 4, mask_zero=True),
                          keras.layers.LSTM(3, return_sequences=True), keras.layers.Dense(1)])
    order = [("embedding", "embeddings"), ("lstm", "kernel"), ("lstm", "recurrent_kernel"),
             ("lstm", "bias"), ("dense", "kernel"), ("dense", "bias")]
    k.set_weights([np.asarray(p[a][b]) for a, b in order])
    ts = assert_fit_equals_keras(fitter, ts, k, ids, y,
                                 lambda ts: [ts.params[a][b] for a, b in order])
    k.compile(loss="mse", metrics=["mae"])
    expected = k.evaluate(ids, y, batch_size=10, verbose=0, return_dict=True)
    sums = jax.jit(make_eval(model, fitter.obj, 25, 10))(ts.params, ts.state, ids, y)
    logs = finalize(fitter.obj, sums)
    assert logs["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert logs["mae"] == pytest.approx(expected["mae"], rel=1e-5)
