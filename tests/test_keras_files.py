"""Keras model files with weights, both ways: `nnrun export --format keras` opens in
`keras.saving.load_model` with the trained weights, and `nnrun import-keras -o` makes a
config and a checkpoint from which nnrun predicts what Keras predicts."""

import io
import json
import zipfile
from pathlib import Path

import jax
import keras
import numpy as np
import pytest
from click.testing import CliRunner
from trained_examples import CONFIGS as EXAMPLES

from nnrun.api.inference import load_trained
from nnrun.api.training import resolve_target
from nnrun.cli.main import main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FAST = ("mlp", "two_inputs", "autoencoder", "gru")


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args):
    result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def _rows(model, rng):
    """Rows for each of the model's inputs: token ids for an integer input, else normal."""
    def one(shape, dtype):
        if np.issubdtype(np.dtype(dtype), np.integer):
            return rng.integers(0, 10, size=(5, *shape)).astype(dtype)
        return rng.normal(size=(5, *shape)).astype(np.float32)
    dtypes = model.input_dtypes
    return {n: one(model.input_shapes[n], dtypes[n]) for n in model.input_names}


@pytest.mark.parametrize("name", [
    pytest.param(c.stem, marks=() if c.stem in FAST else pytest.mark.slow) for c in EXAMPLES])
def test_exported_run_predicts_as_nnrun_in_keras(runner, tmp_path, name, example_run):
    run = example_run(name)
    out = tmp_path / "model.keras"
    result = invoke(runner, "export", run, "--format", "keras", "-o", out)
    assert result.exit_code == 0, result.output
    assert sorted(zipfile.ZipFile(out).namelist()) == ["config.json", "metadata.json",
                                                       "model.weights.h5"]
    spec, _ = resolve_target(run)
    input_shape = json.loads((run / "model.json").read_text())["model"].get("input_shape")
    x0 = None if input_shape is None else np.zeros((1, *input_shape), np.float32)
    model, params, state = load_trained(spec, run, "best", x0)
    x = _rows(model, np.random.default_rng(0))
    ours, _ = model.apply(params, state, x)
    k = keras.saving.load_model(out)
    assert k.compiled and k.loss is not None
    xs = [x[n] for n in model.input_names]
    theirs = k.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    if isinstance(ours, dict):
        ours = [ours[n] for n in model.output_names]
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def _fit(k, x, y):
    k.compile(optimizer="adam", loss="mse")
    k.fit(x, y, epochs=2, batch_size=8, verbose=0)
    return k


def _keras_models():
    """Keras models as users make them, fitted briefly: (name, model, rows)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(24, 4)).astype(np.float32)
    mlp = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu"),
                            keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    _fit(mlp, x, rng.normal(size=(24, 2)))
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    shared = keras.layers.Dense(3, activation="tanh", name="shared")
    merged = keras.layers.Concatenate()([shared(a), shared(b)])
    graph = keras.Model([a, b], keras.layers.Dense(1)(merged))
    _fit(graph, [x, x[::-1]], rng.normal(size=(24, 1)))
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="relu"),
                              keras.layers.Dense(3)], name="inner")
    i = keras.Input((4,))
    nested = keras.Model(i, keras.layers.Dense(2)(inner(i)))
    _fit(nested, x, rng.normal(size=(24, 2)))
    s = rng.normal(size=(24, 5, 3)).astype(np.float32)
    bilstm = keras.Sequential([keras.Input((5, 3)),
                               keras.layers.Bidirectional(keras.layers.LSTM(4)),
                               keras.layers.Dense(1)])
    _fit(bilstm, s, rng.normal(size=(24, 1)))
    return [("mlp_bn", mlp, x), ("shared", graph, [x, x[::-1]]), ("nested", nested, x),
            ("bilstm", bilstm, s)]


@pytest.fixture(scope="module")
def keras_models():
    return _keras_models()


def _predict_imported(runner, tmp_path, keras_file, rows):
    """`nnrun import-keras`, then `nnrun predict` on the imported config straight away:
    no run, the weights model.weights names."""
    from nnrun.config.spec import load_spec

    config = tmp_path / "imported.yaml"
    result = invoke(runner, "import-keras", keras_file, "-o", config)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "imported.h5").is_file()
    assert "weights: imported.h5" in config.read_text()
    if isinstance(rows, list):   # several inputs: a .npz by input name
        names = [i.name for i in load_spec(config).model.inputs]
        np.savez(tmp_path / "x.npz", **dict(zip(names, rows, strict=True)))
        given = tmp_path / "x.npz"
    else:
        np.save(tmp_path / "x.npy", rows)
        given = tmp_path / "x.npy"
    runs = tmp_path / "runs"
    result = invoke(runner, "predict", config, "-i", given, "-o", tmp_path / "p.npy",
                    "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    assert "has no run yet: these are the weights of its model.weights" in result.output
    assert not runs.exists()   # nothing was trained or written to a run
    return np.load(tmp_path / "p.npy")


@pytest.mark.parametrize("index", range(4))
def test_imported_keras_file_predicts_as_keras(runner, tmp_path, keras_models, index):
    name, k, rows = keras_models[index]
    path = tmp_path / f"{name}.keras"
    k.save(path)
    ours = _predict_imported(runner, tmp_path, path, rows)
    np.testing.assert_allclose(ours, k.predict(rows, verbose=0), rtol=1e-5, atol=1e-6)


def test_imported_keras2_h5_predicts_as_keras(runner, tmp_path, keras_models):
    name, k, rows = keras_models[0]   # Keras 3 still writes the legacy .h5 format
    path = tmp_path / f"{name}.h5"
    k.save(path)
    ours = _predict_imported(runner, tmp_path, path, rows)
    np.testing.assert_allclose(ours, k.predict(rows, verbose=0), rtol=1e-5, atol=1e-6)


def test_weights_that_do_not_fit_are_a_located_error(runner, tmp_path, keras_models):
    _, k, _ = keras_models[0]
    path = tmp_path / "m.keras"
    k.save(path)
    data = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(data, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "config.json":
                body = body.replace(b'"units": 6', b'"units": 7')
            dst.writestr(info, body)
    path.write_bytes(data.getvalue())
    result = invoke(runner, "import-keras", path, "-o", tmp_path / "c.yaml")
    assert result.exit_code == 2
    assert "m.keras" in result.output and "expects" in result.output
    assert "Traceback" not in result.output


def test_export_keras_needs_a_run_and_a_file(runner, tmp_path):
    result = invoke(runner, "export", CONFIGS / "mlp.yaml", "--format", "keras", "-o",
                    tmp_path / "m.keras", "--runs-dir", tmp_path / "runs")
    assert result.exit_code in (2, 3) and "Traceback" not in result.output
    assert not (tmp_path / "m.keras").exists()
    result = invoke(runner, "export", CONFIGS / "mlp.yaml", "--format", "keras")
    assert result.exit_code == 2 and "-o FILE.keras" in result.output


def test_layers_without_a_keras_class_are_a_located_error(runner, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("name: t\nseed: 0\ndata: {train: {builtin: xor, samples: 20}}\n"
                      "model:\n  input_shape: [2]\n  layers:\n"
                      "    - ParametricSoftplus: {}\n    - Dense: 1\n"
                      "compile: {optimizer: sgd, loss: mse}\nfit: {epochs: 1, batch_size: 10}\n")
    runs = tmp_path / "runs"
    assert invoke(runner, "train", config, "--runs-dir", runs).exit_code == 0
    result = invoke(runner, "export", config, "--format", "keras", "-o", tmp_path / "m.keras",
                    "--runs-dir", runs)
    assert result.exit_code == 2 and "ParametricSoftplus has no Keras 3 class" in result.output
    assert "c.yaml:" in result.output and not (tmp_path / "m.keras").exists()


def test_an_imported_model_evaluates_as_keras_before_any_run(runner, tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    k = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(3, activation="softmax")])
    k.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    k.fit(x, y, epochs=3, batch_size=8, verbose=0)
    k.save(tmp_path / "k.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    config = tmp_path / "k.yaml"
    assert invoke(runner, "import-keras", tmp_path / "k.keras", "-o", config).exit_code == 0
    runs = tmp_path / "runs"
    test = f"data.test={{path: {tmp_path / 'x.npy'}, target: {tmp_path / 'y.npy'}}}"
    result = invoke(runner, "evaluate", config, "--set", test, "--runs-dir", runs, "--json")
    assert result.exit_code == 0, result.output
    ours = json.loads(result.output)
    theirs = k.evaluate(x, y, verbose=0, return_dict=True)
    assert ours["run"] is None and ours["checkpoint"] == "model.weights"
    assert ours["weights"] == str(tmp_path / "k.h5")
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"])
    assert not runs.exists()
    shown = invoke(runner, "evaluate", config, "--set", test, "--runs-dir", runs).output
    assert "model.weights" in shown and "(no run yet)" in shown
    result = invoke(runner, "evaluate", config, "--set", test, "--runs-dir", runs,
                    "--checkpoint", "last")
    assert result.exit_code == 2
    assert "no last.h5: this config has no run yet" in result.output
    named = tmp_path / "copy.h5"   # a checkpoint given by path is not called model.weights
    named.write_bytes((tmp_path / "k.h5").read_bytes())
    result = invoke(runner, "evaluate", config, "--set", test, "--runs-dir", runs, "--json",
                    "--checkpoint", named)
    assert json.loads(result.output)["checkpoint"] == str(named)
    # model.weights problems are the config's (exit 2, located), as for training
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    result = invoke(runner, "evaluate", config, "--set", test, "--runs-dir", runs,
                    "--set", f"model.weights={tmp_path / 'bad.h5'}")
    assert result.exit_code == 2 and "model.weights" in result.output
    result = invoke(runner, "evaluate", config, "--set", test, "--runs-dir", runs,
                    "--set", "model.layers[1].Dense.name=head")
    assert result.exit_code == 2 and "has no weights for head" in result.output
    import nnrun  # the Python API loads it the same way

    model = nnrun.load(config, runs_dir=runs)
    assert model.run_dir is None
    np.testing.assert_allclose(model.predict(x), k.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_a_config_without_weights_or_run_still_needs_training(runner, tmp_path):
    result = invoke(runner, "predict", CONFIGS / "mlp.yaml", "-i", CONFIGS / "mlp.yaml",
                    "-o", tmp_path / "p.npy", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "no run of 'xor-mlp'" in result.output
    assert "train it first" in result.output


def test_training_an_imported_model_starts_from_the_keras_weights(runner, tmp_path):
    rng = np.random.default_rng(2)
    k = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
    _fit(k, rng.normal(size=(16, 2)), rng.normal(size=(16, 1)))
    k.save(tmp_path / "k.keras")
    x = rng.normal(size=(5, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    config = tmp_path / "k.yaml"
    assert invoke(runner, "import-keras", tmp_path / "k.keras", "-o", config).exit_code == 0
    runs = tmp_path / "runs"
    result = invoke(runner, "train", config, "--runs-dir", runs,
                    "--set", "data={train: {builtin: xor, samples: 20}}",
                    "--set", "compile.optimizer={name: sgd, learning_rate: 0.0}")
    assert result.exit_code == 0, result.output
    result = invoke(runner, "predict", config, "--runs-dir", runs, "-i", tmp_path / "x.npy",
                    "-o", tmp_path / "p.npy")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tmp_path / "p.npy").reshape(-1),
                               k.predict(x, verbose=0).reshape(-1), rtol=1e-5, atol=1e-6)


def test_import_without_output_leaves_the_weights_out_and_says_so(runner, tmp_path,
                                                                   keras_models):
    _, k, _ = keras_models[0]
    k.save(tmp_path / "m.keras")
    result = runner.invoke(main, ["import-keras", str(tmp_path / "m.keras")])
    assert result.exit_code == 0
    assert "weights were not imported: give -o" in result.output
    assert "weights:" not in result.output.split("model:")[1]
    assert list(tmp_path.iterdir()) == [tmp_path / "m.keras"]


SHARED_GRAPH = """\
name: shared
seed: 0
data: {train: {builtin: pairs, samples: 40, x: {left: first, right: second}}}
model:
  inputs: {left: [8], right: [8]}
  layers:
    - Dense: {name: tower, units: 4, activation: tanh, inputs: left}
    - Reuse: {layer: tower, name: tower_b, inputs: right}
    - Dense: {name: extra, units: 4, inputs: tower_b}
    - BatchNormalization: {name: norm, inputs: extra}
    - Concatenate: {name: merged, inputs: [tower, norm]}
    - Dense: {name: out, units: 1, activation: sigmoid}
  outputs: [out]
compile: {optimizer: adam, loss: binary_crossentropy}
fit: {epochs: 1, batch_size: 8}
"""


def test_exported_graph_with_a_shared_layer_round_trips(runner, tmp_path):
    """Keras names the weight groups by class and graph order (dense, dense_1, ...): a
    shared layer and layers at different depths land where Keras looks, and the file
    imports back to the same predictions."""
    config = tmp_path / "shared.yaml"
    config.write_text(SHARED_GRAPH)
    runs = tmp_path / "runs"
    assert invoke(runner, "train", config, "--runs-dir", runs).exit_code == 0
    out = tmp_path / "model.keras"
    result = invoke(runner, "export", config, "--format", "keras", "--checkpoint", "last",
                    "-o", out, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    k = keras.saving.load_model(out)
    rng = np.random.default_rng(3)
    rows = [rng.normal(size=(5, 8)).astype(np.float32) for _ in range(2)]
    spec, run = resolve_target(config, runs_root=runs, need_run=True)
    model, params, state = load_trained(spec, run, "last")
    ours, _ = model.apply(params, state, dict(zip(model.input_names, rows, strict=True)))
    np.testing.assert_allclose(np.asarray(ours), k.predict(rows, verbose=0), rtol=1e-5,
                               atol=1e-6)
    back = tmp_path / "back"
    back.mkdir()
    again = _predict_imported(runner, back, out, rows)
    np.testing.assert_allclose(again, np.asarray(ours), rtol=1e-5, atol=1e-6)


def test_a_config_with_weights_and_no_run_fits_its_preprocessing_as_train_does(runner,
                                                                               tmp_path):
    """model.weights with no run: standardize is fitted on the training split as `nnrun
    train` fits it, so predict and evaluate equal the run's own."""
    runs = tmp_path / "runs"
    config = CONFIGS / "preprocess.yaml"
    assert invoke(runner, "train", config, "--runs-dir", runs, "--set", "fit.epochs=1",
                  "-q").exit_code == 0
    (run,) = [p for p in runs.iterdir() if p.name != "latest"]
    x = np.random.default_rng(4).normal(13, 3, size=(9, 13)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    weights = f"model.weights={run / 'checkpoints' / 'best.h5'}"
    for target, extra in ((run, []), (config, ["--set", weights, "--runs-dir",
                                               tmp_path / "none"])):
        out = tmp_path / f"{len(extra)}.npy"
        result = invoke(runner, "predict", target, "-i", tmp_path / "x.npy", "-o", out, *extra)
        assert result.exit_code == 0, result.output
        result = invoke(runner, "evaluate", target, "--json", *extra)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["run"] == (str(run) if not extra else None)
        out.with_suffix(".json").write_text(result.output)
    np.testing.assert_array_equal(np.load(tmp_path / "0.npy"), np.load(tmp_path / "4.npy"))
    ran, fitted = (json.loads((tmp_path / f"{n}.json").read_text()) for n in (0, 4))
    assert fitted["loss"] == ran["loss"] and fitted["samples"] == ran["samples"]
    assert not (tmp_path / "none").exists()


def _keras2_h5(path: Path, rng) -> dict:
    """A model file laid out as Keras 2 (tf.keras 2.13) writes `model.save("m.h5")`:
    Keras 2 JSON in `model_config`, weights under model_weights/LAYER/LAYER/NAME:0 in
    `weight_names` order. Returns the arrays by layer."""
    import h5py

    weights = {"dense": [rng.normal(size=(4, 8)), rng.normal(size=8)],
               "batch_normalization": [rng.uniform(.5, 2, 8), rng.normal(size=8),
                                       rng.normal(size=8), rng.uniform(.5, 2, 8)],
               "dense_1": [rng.normal(size=(8, 2)), rng.normal(size=2)]}
    names = {"dense": ["kernel", "bias"], "dense_1": ["kernel", "bias"],
             "batch_normalization": ["gamma", "beta", "moving_mean", "moving_variance"]}
    zeros, ones = {"class_name": "Zeros", "config": {}}, {"class_name": "Ones", "config": {}}

    def dense(name, units, activation, **extra):
        return {"class_name": "Dense", "config": {
            "name": name, "trainable": True, "dtype": "float32", **extra, "units": units,
            "activation": activation, "use_bias": True, "bias_initializer": zeros,
            "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
            "kernel_regularizer": None, "bias_regularizer": None,
            "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None}}
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4],
                                                "dtype": "float32", "sparse": False,
                                                "ragged": False, "name": "dense_input"}},
        dense("dense", 8, "relu", batch_input_shape=[None, 4]),
        {"class_name": "BatchNormalization", "config": {
            "name": "batch_normalization", "trainable": True, "dtype": "float32",
            "axis": [1], "momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True,
            "beta_initializer": zeros, "gamma_initializer": ones,
            "moving_mean_initializer": zeros, "moving_variance_initializer": ones,
            "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None,
            "gamma_constraint": None}},
        dense("dense_1", 2, "linear")]}, "keras_version": "2.13.1", "backend": "tensorflow"}
    with h5py.File(path, "w") as f:
        f.attrs["backend"], f.attrs["keras_version"] = "tensorflow", "2.13.1"
        f.attrs["model_config"] = json.dumps(config)
        root = f.create_group("model_weights")
        root.attrs["layer_names"] = [b"dense_input", *(n.encode() for n in weights)]
        root.create_group("dense_input").attrs["weight_names"] = np.array([], dtype="S1")
        for layer, arrays in weights.items():
            g = root.create_group(layer)
            g.attrs["weight_names"] = [f"{layer}/{n}:0".encode() for n in names[layer]]
            for n, a in zip(names[layer], arrays, strict=True):
                g.create_dataset(f"{layer}/{n}:0", data=np.asarray(a, np.float32))
    return weights


def test_a_keras2_h5_file_predicts_its_weights_and_stays_as_it_was(runner, tmp_path):
    rng = np.random.default_rng(5)
    source = tmp_path / "m.h5"
    w = _keras2_h5(source, rng)
    before = source.read_bytes()
    x = rng.normal(size=(6, 4)).astype(np.float32)
    d, bn, d1 = w["dense"], w["batch_normalization"], w["dense_1"]
    h = np.maximum(x @ d[0] + d[1], 0)
    want = (bn[0] * (h - bn[2]) / np.sqrt(bn[3] + 1e-3) + bn[1]) @ d1[0] + d1[1]
    np.save(tmp_path / "x.npy", x)
    result = invoke(runner, "import-keras", source, "-o", tmp_path / "m.yaml")
    assert result.exit_code == 0, result.output
    # m.yaml's weights would be m.h5, the Keras file itself: they go beside it instead
    assert "model.weights: m_weights.h5" in result.output
    assert source.read_bytes() == before
    result = invoke(runner, "predict", tmp_path / "m.yaml", "-i", tmp_path / "x.npy",
                    "-o", tmp_path / "p.npy", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), want, rtol=1e-5, atol=1e-5)


def test_import_overwrites_no_file_it_did_not_write(runner, tmp_path):
    source = tmp_path / "m.h5"
    _keras2_h5(source, np.random.default_rng(6))
    result = invoke(runner, "import-keras", source, "-o", source)
    assert result.exit_code == 2 and "is the Keras file itself" in result.output
    (tmp_path / "data.h5").write_bytes(b"the user's own file")
    result = invoke(runner, "import-keras", source, "-o", tmp_path / "data.yaml")
    assert result.exit_code == 2 and "data.h5, which exists" in result.output
    assert (tmp_path / "data.h5").read_bytes() == b"the user's own file"
    assert not (tmp_path / "data.yaml").exists()
    for _ in range(2):   # an earlier import's weights are replaced
        result = invoke(runner, "import-keras", source, "-o", tmp_path / "again.yaml")
        assert result.exit_code == 0, result.output
