"""data.preprocess (nnrun.data.preprocess): statistics from the training split, accumulated over
chunks, saved as <run>/preprocessing.json and applied by evaluate and predict; the config
checks of the data options; class_weight trained against Keras."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from nnrun import api
from nnrun.cli.main import main
from nnrun.config.errors import ConfigError, DataError
from nnrun.config.spec import spec_from_dict
from nnrun.data.preprocess import FeatureScaler, Preprocessing, fit_preprocessing

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- feature statistics


def test_standardize_matches_population_mean_and_std():
    x = RNG.normal(3.0, 2.0, size=(500, 4)).astype(np.float32)
    s = FeatureScaler("standardize")
    s.update(x)
    s.finish()
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(s.offset, x64.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.scale, x64.std(0), rtol=1e-12)
    out = s.transform(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(0), 1, atol=1e-5)


@pytest.mark.parametrize("method", ["standardize", "minmax"])
@pytest.mark.parametrize("chunk", [1, 7, 100, 1000])
def test_chunked_statistics_equal_one_pass(method, chunk):
    x = (RNG.normal(size=(333, 3)) * [1.0, 1e3, 1e-3] + [5.0, -1e4, 0.0]).astype(np.float32)
    whole = FeatureScaler(method)
    whole.update(x)
    whole.finish()
    chunked = FeatureScaler(method)
    for i in range(0, len(x), chunk):
        chunked.update(x[i:i + chunk])
    chunked.finish()
    np.testing.assert_allclose(chunked.offset, whole.offset, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(chunked.scale, whole.scale, rtol=1e-9)
    assert chunked.count == whole.count == 333


def test_minmax_maps_the_training_range_to_0_1():
    x = np.array([[0.0, -2.0], [5.0, 2.0], [10.0, 0.0]], np.float32)
    s = FeatureScaler("minmax")
    s.update(x)
    np.testing.assert_allclose(s.finish().transform(x), [[0, 0], [0.5, 1], [1, 0.5]])


@pytest.mark.parametrize("method", ["standardize", "minmax"])
def test_constant_feature_gets_scale_one(method):
    x = np.column_stack([np.full(10, 0.1), np.arange(10)]).astype(np.float32)
    s = FeatureScaler(method)
    for i in range(0, 10, 3):
        s.update(x[i:i + 3])
    out = s.finish().transform(x)
    assert s.scale[0] == 1.0
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0], 0, atol=1e-7)


def test_statistics_per_feature_along_the_last_axis():
    images = RNG.normal(size=(20, 4, 4, 3)).astype(np.float32) + [0, 10, 100]
    s = FeatureScaler("standardize")
    s.update(images)
    s.finish()
    assert s.offset.shape == (3,)
    np.testing.assert_allclose(s.offset, images.reshape(-1, 3).astype(np.float64).mean(0))
    assert s.transform(images).shape == images.shape


def test_json_round_trip_transforms_identically():
    x = RNG.normal(size=(50, 2)).astype(np.float32)
    y = RNG.integers(0, 4, size=(50, 1)).astype(np.int32)
    pre = fit_preprocessing({"x": "standardize", "y": "one_hot"}, x, y)
    back = Preprocessing.from_json(json.loads(json.dumps(pre.to_json())))
    np.testing.assert_array_equal(back.transform_x(x), pre.transform_x(x))
    np.testing.assert_array_equal(back.transform_y(y), pre.transform_y(y))


def test_wrong_width_and_unfinished_scaler():
    s = FeatureScaler("minmax")
    with pytest.raises(RuntimeError):
        s.transform(np.zeros((2, 2), np.float32))
    s.update(np.zeros((2, 2), np.float32))
    with pytest.raises(DataError, match="3 columns"):
        s.finish().transform(np.zeros((2, 3), np.float32))
    with pytest.raises(DataError, match="no rows"):
        FeatureScaler("minmax").finish()


# ---------------------------------------------------------------- targets and names


def test_one_hot_and_sparse_targets():
    ids = np.array([0, 2, 1, 2], np.int32)
    pre = fit_preprocessing({"y": "one_hot"}, np.zeros((4, 1), np.float32), ids)
    np.testing.assert_array_equal(pre.transform_y(ids), np.eye(3)[ids])
    assert pre.transform_y(ids).dtype == np.float32
    wider = fit_preprocessing({"y": "one_hot"}, np.zeros((4, 1), np.float32), ids,
                              num_classes=5)      # the model's output width
    assert wider.transform_y(ids).shape == (4, 5)
    with pytest.raises(DataError, match="class id 3 .* not below y: one_hot's 3 classes"):
        pre.transform_y(np.array([3], np.int32))
    sparse = fit_preprocessing({"y": "sparse"}, np.zeros((4, 1), np.float32), np.eye(3)[ids])
    out = sparse.transform_y(np.eye(3, dtype=np.float32)[ids])
    np.testing.assert_array_equal(out, ids)
    assert out.dtype == np.int32
    with pytest.raises(DataError, match="one-hot"):
        sparse.transform_y(np.full((2, 3), 0.5, np.float32))


def test_one_hot_refuses_float_values():
    with pytest.raises(DataError, match="non-integer"):
        fit_preprocessing({"y": "one_hot"}, np.zeros((2, 1), np.float32),
                          np.array([0.5, 1.0], np.float32))


def test_graph_inputs_by_name():
    x = {"left": RNG.normal(5, 2, size=(30, 2)).astype(np.float32),
         "right": RNG.normal(size=(30, 3)).astype(np.float32),
         "ids": RNG.integers(0, 9, size=(30, 4)).astype(np.int32)}
    pre = fit_preprocessing({"x": {"left": "standardize", "right": "minmax",
                                   "ids": "none"}}, x)
    out = pre.transform_x(x)
    np.testing.assert_allclose(out["left"].mean(0), 0, atol=1e-5)
    assert out["right"].min() == 0 and out["right"].max() == 1
    assert out["ids"] is x["ids"]
    with pytest.raises(ConfigError, match="did you mean 'left'") as info:
        fit_preprocessing({"x": {"lefft": "standardize"}}, x)
    assert info.value.where == "preprocess.x.lefft"
    with pytest.raises(ConfigError, match="integer values") as info:
        fit_preprocessing({"x": "standardize"}, x)        # every input: ids are int32
    assert info.value.where == "preprocess.x.ids"
    with pytest.raises(ConfigError, match="several inputs"):
        fit_preprocessing({"x": {"left": "minmax"}}, x["left"])


# ---------------------------------------------------------------- config checks


def _check(tmp_path, data: str):
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  train: {builtin: xor}\n" + data +
                      "model:\n  input_shape: [2]\n  layers:\n    - Dense: 1\n"
                      "compile: {optimizer: sgd, loss: mse}\n")
    result = CliRunner().invoke(main, ["check", str(config)])
    return result, str(config)


@pytest.mark.parametrize("data, where, message", [
    ("  shuffle_split: true\n", "3:3: data.shuffle_split", "applies to validation_split"),
    ("  stratify: 1\n", "3:13: data.stratify", "expected true or false"),
    ("  validation_split: 0.2\n  preprocess: {x: standardise}\n", "4:19: data.preprocess.x",
     "did you mean 'standardize'"),
    ("  preprocess: {x: minmax, z: one_hot}\n", "3:27: data.preprocess.z",
     "unknown key in data.preprocess 'z'"),
    ("  preprocess: {y: onehot}\n", "3:19: data.preprocess.y", "did you mean 'one_hot'"),
    ("  preprocess: standardize\n", "3:15: data.preprocess", "expected a mapping"),
    ("  class_weight: {0: 1, 1: -2}\n", "3:27: data.class_weight[1]", "weight >= 0"),
    ("  class_weight: balance\n", "3:17: data.class_weight", "did you mean 'balanced'"),
    ("  class_weight: [1, 2]\n", "3:17: data.class_weight", "expected balanced or a mapping"),
    ("  class_wieght: balanced\n", "3:3: data.class_wieght", "did you mean 'class_weight'"),
])
def test_check_locates_bad_data_options(tmp_path, data, where, message):
    result, config = _check(tmp_path, data)
    assert result.exit_code == 2, result.output
    assert f"{config}:{where}: " in result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_check_accepts_the_data_options(tmp_path):
    result, _ = _check(tmp_path, "  validation_split: 0.2\n  shuffle_split: true\n"
                                 "  stratify: true\n  preprocess: {x: standardize, y: none}\n"
                                 "  class_weight: {0: 1.0, 1: 2.5}\n")
    assert result.exit_code == 0, result.output


def test_check_knows_a_graph_models_input_names(tmp_path):
    config = tmp_path / "g.yaml"
    config.write_text("data:\n  train: {builtin: pairs}\n"
                      "  preprocess: {x: {first: standardize, secnd: minmax}}\n"
                      "model:\n  inputs: {first: [8], second: [8]}\n  layers:\n"
                      "    - Concatenate: {name: c, inputs: [first, second]}\n"
                      "    - Dense: {name: out, units: 1, inputs: c}\n"
                      "  outputs: [out]\ncompile: {optimizer: sgd, loss: mse}\n")
    result = CliRunner().invoke(main, ["check", str(config)])
    assert result.exit_code == 2, result.output
    assert (f"{config}:3:40: data.preprocess.x.secnd: unknown input 'secnd' (did you mean "
            "'second'") in result.output


# ---------------------------------------------------------------- in the run


def _spec(tmp_path, **data):
    return spec_from_dict({
        "name": "pre", "seed": 0,
        "data": {"train": {"builtin": "blobs", "samples": 200, "classes": 3}, **data},
        "model": {"input_shape": [2], "layers": [
            {"Dense": {"units": 8, "activation": "tanh"}},
            {"Dense": {"units": 3, "activation": "softmax"}}]},
        "compile": {"optimizer": "adam", "loss": "categorical_crossentropy",
                    "metrics": ["accuracy"]},
        "fit": {"batch_size": 32, "epochs": 2},
    }, base_dir=tmp_path)


def test_statistics_come_from_the_training_split_only(tmp_path):
    spec = _spec(tmp_path, validation_split=0.3, shuffle_split=True,
                 preprocess={"x": "standardize", "y": "one_hot"})
    raw = api.load_data(spec_from_dict({**spec.resolved, "data": {
        "train": spec.data.train, "validation_split": 0.3, "shuffle_split": True}}))
    splits = api.load_data(spec)
    scaler = splits.preprocessing.x[None]
    np.testing.assert_allclose(scaler.offset, raw.train.x.astype(np.float64).mean(0))
    np.testing.assert_allclose(scaler.scale, raw.train.x.astype(np.float64).std(0))
    assert scaler.count == len(raw.train)
    np.testing.assert_array_equal(splits.validation.x, scaler.transform(raw.validation.x))
    np.testing.assert_array_equal(splits.validation.y, np.eye(3)[raw.validation.y])


def test_predict_on_raw_input_equals_the_model_on_transformed_input(tmp_path):
    spec = _spec(tmp_path, validation_split=0.2, preprocess={"x": "minmax", "y": "one_hot"},
                 class_weight="balanced")
    result = api.train(spec, runs_root=tmp_path / "runs", quiet=True)
    saved = json.loads((result.run_dir / "preprocessing.json").read_text())
    assert saved["x"][""]["method"] == "minmax" and saved["y"][""]["classes"] == 3
    raw = RNG.normal(0, 6, size=(40, 2)).astype(np.float32)
    np.save(tmp_path / "raw.npy", raw)
    api.predict(spec, result.run_dir, tmp_path / "raw.npy", tmp_path / "out.npy")
    from nnrun.train.epoch import make_predict

    pre = api.load_data(spec).preprocessing        # fitted again, the same
    model, params, state = api.load_trained(spec, result.run_dir, "best")
    expected = np.asarray(make_predict(model, 40, 32)(params, state, pre.transform_x(raw)))
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_evaluate_uses_the_saved_statistics(tmp_path, monkeypatch):
    spec = _spec(tmp_path, preprocess={"x": "standardize", "y": "one_hot"},
                 test={"builtin": "blobs", "samples": 60, "classes": 3})
    result = api.train(spec, runs_root=tmp_path / "runs", quiet=True)
    first = api.evaluate(spec, result.run_dir)
    import nnrun.data.preprocess as pre_mod

    def refuse(*args, **kwargs):
        raise AssertionError("evaluate refitted the preprocessing")

    monkeypatch.setattr(pre_mod, "fit_preprocessing", refuse)
    again = api.evaluate(spec, result.run_dir)
    assert again["loss"] == first["loss"]
    assert again["samples"] == 60


def test_cli_train_then_predict_with_preprocessing(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("name: cli\ndata:\n  train: {builtin: moons, samples: 100}\n"
                      "  validation_split: 0.2\n  stratify: true\n"
                      "  preprocess: {x: standardize}\n  class_weight: {0: 2}\n"
                      "model:\n  layers:\n    - Dense: {units: 1, activation: sigmoid}\n"
                      "compile: {optimizer: sgd, loss: binary_crossentropy}\n"
                      "fit: {epochs: 1}\n")
    runs = tmp_path / "runs"
    result = CliRunner().invoke(main, ["train", str(config), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    run = runs / "latest"
    assert (run / "preprocessing.json").is_file()
    np.save(tmp_path / "x.npy", np.zeros((3, 2), np.float32))
    result = CliRunner().invoke(main, ["predict", str(run), "--input", str(tmp_path / "x.npy"),
                                       "--output", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- against Keras


def test_class_weight_epoch_loss_equals_keras():
    """One epoch of SGD with class weights: Keras 3's fit(class_weight=...) and nnrun's
    data.class_weight (turned into the Fitter's sample_weight) give the same loss."""
    import inspect

    import jax
    import keras

    from nnrun.train.epoch import resolve_objective
    from nnrun.train.fitter import Fitter

    if "sample_weight" not in inspect.signature(Fitter.__init__).parameters:
        pytest.skip("the trainer takes no sample_weight yet")
    spec = spec_from_dict({
        "seed": 2, "data": {"train": {"builtin": "blobs", "samples": 45, "classes": 3},
                            "class_weight": {0: 0.5, 2: 3.0}},
        "model": {"input_shape": [2], "layers": [
            {"Dense": {"units": 3, "activation": "softmax"}}]},
        "compile": {"optimizer": {"name": "sgd", "learning_rate": 0.1},
                    "loss": "sparse_categorical_crossentropy"},
        "fit": {"batch_size": 10, "shuffle": False}})
    train = api.load_data(spec).train
    model = api.build(spec)
    obj = resolve_objective(spec.compile.loss, (), (2,), (2, 3))
    fitter = Fitter(model, obj, spec.compile.optimizer, seed=spec.seed, batch_size=10,
                    shuffle=False, x=train.x, y=train.y, sample_weight=train.sample_weight)
    ts = fitter.initial_state()
    params = jax.device_get(ts.params)
    k = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")])
    k.layers[0].set_weights([np.asarray(params["dense"]["kernel"]),
                             np.asarray(params["dense"]["bias"])])
    k.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
              loss="sparse_categorical_crossentropy")
    history = k.fit(train.x, train.y, batch_size=10, epochs=1, shuffle=False, verbose=0,
                    class_weight={0: 0.5, 2: 3.0}).history
    ts, res = fitter.run_epoch(ts)
    assert res.logs["loss"] == pytest.approx(history["loss"][0], rel=1e-5)
    for ours, theirs in zip([ts.params["dense"]["kernel"], ts.params["dense"]["bias"]],
                            k.get_weights()):
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-5, atol=1e-6)
