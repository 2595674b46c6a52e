"""The Python API (nnrun/api/model.py, docs/python-api.md): every ```python block of the
docs page run as written (from a copy of configs/ and data/), then each method on its
own: predict's inputs and batches, evaluate, weights in Keras 3's get_weights() order
(an MLP with BatchNormalization, an LSTM: checked against Keras itself), train's
overrides and errors, `import nnrun` importing nothing heavy."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnrun
from nnrun.api.model import _assignment
from nnrun.config.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "python-api.md"


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """(line, code) of each ```python block."""
    text = page.read_text(encoding="utf-8")
    return [(text[:m.start()].count("\n") + 1, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)]


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    """The docs page's blocks run in order in one namespace, in a folder with configs/
    and data/; yields (folder, namespace)."""
    folder = tmp_path_factory.mktemp("python-api")
    for name in ("configs", "data"):
        shutil.copytree(ROOT / name, folder / name)
    before = os.getcwd()
    os.chdir(folder)
    namespace: dict = {"SIGINT handler before": signal.getsignal(signal.SIGINT)}
    try:
        for line, code in python_blocks(PAGE):
            try:
                exec(compile(code, f"{PAGE.name}:{line}", "exec"), namespace)
            except Exception as exc:   # noqa: BLE001 - name the block that failed
                raise AssertionError(f"docs/python-api.md:{line}: {exc!r}") from exc
        yield folder, namespace
    finally:
        os.chdir(before)


def test_the_docs_examples_run(docs):
    _, ns = docs
    assert len(python_blocks(PAGE)) >= 8
    assert ns["run"].status == "finished"
    assert ns["probs"].shape == (2, 3)
    assert set(ns["out"]) == {"cls", "recon"} and ns["trunk"].shape == (3, 16)
    assert signal.getsignal(signal.SIGINT) is ns["SIGINT handler before"]   # none left


def test_import_nnrun_imports_nothing_heavy():
    code = ("import sys, nnrun; assert 'nnrun.api' not in sys.modules; nnrun.train; "
            "assert 'nnrun.train' not in sys.modules; print(nnrun.load.__module__); "
            "assert 'jax' not in sys.modules, 'jax'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "nnrun.api.model"


def test_nnrun_train_is_the_call_and_the_training_wing():
    import nnrun.train.fitter  # the wing of the same name, imported: nnrun.train stays

    assert callable(nnrun.train) and repr(nnrun.train) == "<function nnrun.train>"
    assert nnrun.train.fitter is sys.modules["nnrun.train.fitter"]
    assert nnrun.train.epoch.make_predict is sys.modules["nnrun.train.epoch"].make_predict
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nnrun.nope  # noqa: B018


def test_predict_and_evaluate_agree_with_the_cli(docs):
    folder, ns = docs
    m = ns["m"]
    from click.testing import CliRunner

    from nnrun.cli.main import main

    os.chdir(folder)
    result = CliRunner().invoke(main, ["predict", str(m.run_dir), "-i", "data/xor_new.csv",
                                       "-o", "p.npz", "--checkpoint", m.checkpoint])
    assert result.exit_code == 0, result.output
    fresh = nnrun.load(m.run_dir, checkpoint=m.checkpoint)
    np.testing.assert_allclose(np.load(folder / "p.npz")["probs"], fresh.predict(
        "data/xor_new.csv"), rtol=1e-6)
    from nnrun import api

    spec, run = api.resolve_target(m.run_dir)
    cli = api.evaluate(spec, run, checkpoint=m.checkpoint)
    assert fresh.evaluate() == pytest.approx({k: cli[k] for k in ("loss", "accuracy")})


def test_predict_batches_layers_and_bad_input(docs):
    _, ns = docs
    m = nnrun.load(ns["m"].run_dir)
    x = np.random.default_rng(0).random((23, 2)).astype(np.float32)
    whole = m.predict(x)
    np.testing.assert_allclose(m.predict(x, batch_size=4), whole, rtol=1e-6)
    np.testing.assert_allclose(m.predict(x[:3]), whole[:3], rtol=1e-6)
    hidden = m.predict(x, layers=["dense"])
    assert hidden["dense"].shape == (23, 5)
    with pytest.raises(ConfigError, match="unknown layer 'dense_9'"):
        m.predict(x, layers=["dense_9"])
    with pytest.raises(DataError, match=r"features have shape \(None, 3\)"):
        m.predict(np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="positive number of rows"):
        m.predict(x, batch_size=0)
    with pytest.raises(ConfigError, match="give both x and y"):
        m.evaluate(x)


class _Frame:
    """The part of a pandas DataFrame predict reads: columns, column.to_numpy()."""

    def __init__(self, columns: dict):
        self._columns = columns
        self.columns = list(columns)

    def __getitem__(self, name):
        values = np.asarray(self._columns[name])
        return type("Column", (), {"to_numpy": lambda self: values})()

    def to_numpy(self):
        return np.array(list(self._columns.values()), dtype=object).T


def test_a_table_run_takes_columns_encoded_as_in_training(docs):
    folder, ns = docs
    fruit = ns["fruit"]
    columns = {"acidity_ph": ["3.11", "2.34"], "weight_g": [138.6, 104.3],
               "diameter_cm": [7.37, 5.43], "sugar_brix": [13.2, 5.8], "label": ["?", "?"]}
    from_file = fruit.predict(str(folder / "data" / "fruit_new.csv"))[:2]
    np.testing.assert_allclose(fruit.predict(columns), from_file, rtol=1e-6)
    np.testing.assert_allclose(fruit.predict(_Frame(columns)), from_file, rtol=1e-6)
    with pytest.raises(DataError, match="no column 'sugar_brix'"):
        fruit.predict({k: v for k, v in columns.items() if k != "sugar_brix"})
    with pytest.raises(DataError, match="unknown class 'kiwi'"):
        fruit.evaluate(columns, ["kiwi", "apple"])


def test_weights_round_trip_and_checked_shapes(docs):
    _, ns = docs
    m = nnrun.load(ns["m"].run_dir)
    weights = m.get_weights()
    x = np.eye(2, dtype=np.float32)
    before = m.predict(x)
    m.set_weights([np.zeros_like(w) for w in weights])
    np.testing.assert_allclose(m.predict(x), 0.5)
    m.set_weights(weights)
    np.testing.assert_allclose(m.predict(x), before)
    with pytest.raises(ConfigError, match="expected 4 arrays"):
        m.set_weights(weights[:3])
    with pytest.raises(ConfigError, match=r"dense/kernel has shape \(2, 5\), got \(5, 2\)"):
        m.set_weights([weights[0].T, *weights[1:]])


def _train(config: dict, folder: Path):
    os.chdir(folder)
    return nnrun.train(config, quiet=True, runs_dir=folder / "runs")


def _matches_keras(m, k, x) -> None:
    """Same shapes in the same order both ways, and the same predictions."""
    assert [w.shape for w in m.get_weights()] == [w.shape for w in k.get_weights()]
    k.set_weights(m.get_weights())
    np.testing.assert_allclose(k.predict(x, verbose=0), m.predict(x), rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(1)
    theirs = [rng.normal(size=w.shape).astype(np.float32) for w in k.get_weights()]
    theirs = [np.abs(w) + 0.5 if "variance" in v.path else w
              for w, v in zip(theirs, k.weights)]
    k.set_weights(theirs)
    m.set_weights(k.get_weights())
    np.testing.assert_allclose(k.predict(x, verbose=0), m.predict(x), rtol=1e-5, atol=1e-5)
    for ours, kw in zip(m.get_weights(), k.get_weights()):
        np.testing.assert_array_equal(ours, kw)


def test_get_weights_is_keras_order_mlp_with_batchnorm(docs):
    keras = pytest.importorskip("keras")
    folder, _ = docs
    run = _train({"name": "bn", "data": {"train": {"builtin": "blobs", "samples": 64,
                                                   "features": 4, "classes": 3}},
                  "model": {"input_shape": [4], "layers": [
                      {"Dense": {"units": 6, "activation": "relu"}},
                      {"BatchNormalization": {}},
                      {"Dense": {"units": 3, "activation": "softmax"}}]},
                  "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
                  "fit": {"epochs": 1, "batch_size": 16}}, folder)
    m = run.load("last")
    moving = m.get_weights()[4:6]   # moving_mean, moving_variance: trained, not the start
    assert not np.allclose(moving[0], 0) and not np.allclose(moving[1], 1)
    k = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu"),
                          keras.layers.BatchNormalization(),
                          keras.layers.Dense(3, activation="softmax")])
    _matches_keras(m, k, np.random.default_rng(2).normal(size=(9, 4)).astype(np.float32))


def test_get_weights_is_keras_order_lstm(docs):
    keras = pytest.importorskip("keras")
    folder, _ = docs
    rng = np.random.default_rng(3)
    np.savez(folder / "seq.npz", x=rng.normal(size=(32, 5, 3)).astype(np.float32),
             y=rng.normal(size=(32, 1)).astype(np.float32))
    run = _train({"name": "lstm", "data": {"train": {"path": "seq.npz"}},
                  "model": {"input_shape": [5, 3], "layers": [
                      {"LSTM": {"units": 4}}, {"Dense": {"units": 1}}]},
                  "compile": {"optimizer": "sgd", "loss": "mse"},
                  "fit": {"epochs": 1, "batch_size": 16}}, folder)
    m = run.load()
    assert [w.shape for w in m.get_weights()] == [(3, 16), (4, 16), (16,), (4, 1), (1,)]
    k = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(1)])
    _matches_keras(m, k, rng.normal(size=(7, 5, 3)).astype(np.float32))


def test_overrides_as_keywords_become_set_assignments():
    assert _assignment("fit__epochs", 5) == "fit.epochs=5"
    assert _assignment("compile__optimizer__learning_rate", 1e-5) == \
        "compile.optimizer.learning_rate=1.0e-05"
    assert _assignment("model__layers__0__Dense__units", np.int64(8)) == \
        "model.layers[0].Dense.units=8"
    assert _assignment("compile__optimizer", {"name": "adam", "beta_1": 0.8}) == \
        "compile.optimizer={name: adam, beta_1: 0.8}"
    with pytest.raises(ConfigError, match="not a config value"):
        _assignment("fit__epochs", object())


def test_train_errors_come_before_training_and_leave_no_handlers(docs):
    folder, _ = docs
    os.chdir(folder)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(ConfigError) as info:
        nnrun.train("configs/mlp.yaml", fit__epochs=0, quiet=True)
    assert "--set fit.epochs=0" in str(info.value.where)
    with pytest.raises(ConfigError, match="extends: is for config files"):
        nnrun.train({"extends": "configs/mlp.yaml"})
    with pytest.raises(ConfigError) as info:
        nnrun.train({"model": {"layers": [{"Dense": 1}]}, "compile": {"loss": "msee"}})
    assert "msee" in info.value.message or any("msee" in m for _, m in info.value.problems)
    assert signal.getsignal(signal.SIGINT) is handler
    with pytest.raises(ConfigError, match="no run of 'tiny-xor-2'"):
        nnrun.load("configs/mlp.yaml", set=["name=tiny-xor-2"])
