"""Validation splits (last rows, shuffle_split, stratify) and class weights
(nnrun.data.splitting), through the config too (data.shuffle_split / stratify / class_weight)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from nnrun import api
from nnrun.cli.main import main
from nnrun.config.errors import ConfigError, DataError
from nnrun.config.spec import spec_from_dict
from nnrun.data.arrays import Dataset
from nnrun.data.splitting import (
    apply_class_weight,
    class_ids,
    class_weight_table,
    row_class_weights,
    split_rows,
    validation_split,
)


def _ds(y, n=None, sw=None, names=None) -> Dataset:
    n = len(y) if n is None else n
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    return Dataset(x=x, y=y, source="t", sample_weight=sw, class_names=names)


def _spec(data: dict, **model) -> object:
    return spec_from_dict({
        "seed": 0, "data": data,
        "model": {"layers": [{"Dense": {"units": 3, "activation": "softmax"}}], **model},
        "compile": {"optimizer": "sgd", "loss": "sparse_categorical_crossentropy"},
    })


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize("n, fraction", [(10, 0.2), (25, 0.3), (7, 0.5), (100, 0.01)])
def test_default_split_is_keras_last_rows(n, fraction):
    ds = _ds(np.arange(n, dtype=np.int32), n)
    train, val = validation_split(ds, fraction)
    split_at = int(n * (1 - fraction))   # Keras's fit(validation_split=...): the last rows
    for part, rows in ((train, slice(0, split_at)), (val, slice(split_at, n))):
        np.testing.assert_array_equal(part.x, ds.x[rows])
        np.testing.assert_array_equal(part.y, ds.y[rows])


def test_shuffle_split_same_seed_same_split():
    train, val = split_rows(100, 0.2, seed=4, shuffle=True)
    again_train, again_val = split_rows(100, 0.2, seed=4, shuffle=True)
    np.testing.assert_array_equal(val, again_val)
    np.testing.assert_array_equal(train, again_train)
    assert len(val) == 20 and len(train) == 80
    assert sorted([*train, *val]) == list(range(100))
    assert not np.array_equal(val, np.arange(80, 100))          # not the last rows
    assert not np.array_equal(val, split_rows(100, 0.2, seed=5, shuffle=True)[1])
    # the "split" stream of the seed, drawn on the host as trainer.epoch_order does
    expected = np.sort(np.random.default_rng([4, 3]).permutation(100)[:20])
    np.testing.assert_array_equal(val, expected)


def test_stratified_split_keeps_each_class_share():
    y = np.array([0] * 70 + [1] * 30, dtype=np.int32)
    for shuffle in (False, True):
        train, val = validation_split(_ds(y), 0.2, shuffle=shuffle, stratify=True, seed=1)
        assert np.bincount(val.y).tolist() == [14, 6]
        assert np.bincount(train.y).tolist() == [56, 24]
    # without shuffle: the last rows of each class
    _, val = validation_split(_ds(y), 0.2, stratify=True)
    np.testing.assert_array_equal(val.x[:, 0] / 2, [*range(56, 70), *range(94, 100)])


def test_stratified_counts_use_largest_remainders():
    y = np.array([0] * 50 + [1] * 33 + [2] * 17)   # 0.25 of them: 12.5, 8.25, 4.25 -> 25
    _, val = split_rows(100, 0.25, classes=y, shuffle=True, seed=0)
    assert np.bincount(y[val]).tolist() == [13, 8, 4]
    halves = np.array([0] * 5 + [1] * 5)   # 2.5 each: the tie goes to the lower id
    _, val = split_rows(10, 0.5, classes=halves)
    assert np.bincount(halves[val]).tolist() == [3, 2]
    np.testing.assert_array_equal(val, [2, 3, 4, 8, 9])


def test_stratify_one_hot_and_binary_column_targets():
    ids = np.array([0] * 40 + [1] * 40 + [2] * 20)
    onehot = np.eye(3, dtype=np.float32)[ids]
    _, val = validation_split(_ds(onehot), 0.1, stratify=True, shuffle=True)
    assert np.bincount(val.y.argmax(1)).tolist() == [4, 4, 2]
    column = (ids > 0).astype(np.float32).reshape(-1, 1)   # 40 zeros, 60 ones
    _, val = validation_split(_ds(column), 0.1, stratify=True)
    assert int(val.y.sum()) == 6 and len(val) == 10


@pytest.mark.parametrize("y, message", [
    (np.linspace(0, 1, 20, dtype=np.float32).reshape(-1, 1), "non-integer"),
    (np.ones((20, 3), np.float32) / 3, "not one-hot"),
    ({"a": np.zeros(20, np.int32), "b": np.zeros(20, np.int32)}, "several"),
    (np.full(20, -1, np.int32), ">= 0"),
])
def test_stratify_refuses_non_class_targets(y, message):
    with pytest.raises(ConfigError, match=message) as info:
        validation_split(_ds(y, 20), 0.2, stratify=True)
    assert info.value.where == "stratify"


def test_split_carries_sample_weights_and_names():
    y = np.array([0, 1] * 10, dtype=np.int32)
    sw = np.arange(20, dtype=np.float32)
    train, val = validation_split(_ds(y, sw=sw, names=["a", "b"]), 0.25, shuffle=True)
    np.testing.assert_array_equal(train.sample_weight, train.x[:, 0] / 2)
    np.testing.assert_array_equal(val.sample_weight, val.x[:, 0] / 2)
    assert val.class_names == ["a", "b"]


def test_split_leaving_no_rows_is_a_data_error():
    with pytest.raises(DataError, match="leaves 0 training"):
        validation_split(_ds(np.zeros(1, np.int32)), 0.5, shuffle=True)


def test_config_split_options_through_load_data():
    data = {"train": {"builtin": "blobs", "samples": 200}, "validation_split": 0.25,
            "shuffle_split": True, "stratify": True}
    a, b = api.load_data(_spec(data)), api.load_data(_spec(data))
    np.testing.assert_array_equal(a.validation.x, b.validation.x)
    full = api.load_data(_spec({"train": data["train"]})).train
    counts = np.bincount(a.validation.y)
    assert counts.sum() == 50
    assert np.all(np.abs(counts - np.bincount(full.y) / 4) < 1)
    # fit.validation_split works with data.shuffle_split as well
    spec = spec_from_dict({**_spec(data).resolved, "data": {
        "train": data["train"], "shuffle_split": True}, "fit": {"validation_split": 0.25}})
    plain = {k: v for k, v in data.items() if k != "stratify"}
    np.testing.assert_array_equal(api.load_data(spec).validation.x,
                                  api.load_data(_spec(plain)).validation.x)


# ---------------------------------------------------------------- class weights


def test_balanced_is_scikit_learns_formula():
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    table = class_weight_table(y, "balanced")
    assert table == pytest.approx({0: 10 / (3 * 6), 1: 10 / (3 * 3), 2: 10 / (3 * 1)})
    w = row_class_weights(y.astype(np.int32), "balanced")
    assert w.dtype == np.float32 and w.shape == (10,)
    assert float(w.sum()) == pytest.approx(10.0)        # balanced: weights sum to n
    try:
        from sklearn.utils.class_weight import compute_class_weight
    except ImportError:
        return
    np.testing.assert_allclose([table[c] for c in range(3)],
                               compute_class_weight("balanced", classes=np.arange(3), y=y))


def test_mapping_by_id_and_by_name_others_weigh_one():
    y = np.array([0, 1, 2, 1], dtype=np.int32)
    np.testing.assert_array_equal(row_class_weights(y, {1: 3.0}), [1, 3, 1, 3])
    np.testing.assert_array_equal(row_class_weights(y, {"2": 0.5}), [1, 1, 0.5, 1])
    np.testing.assert_array_equal(row_class_weights(y, {"cat": 2}, ["dog", "cat", "eel"]),
                                  [1, 2, 1, 2])
    onehot = np.eye(3, dtype=np.float32)[y]   # one-hot rows: by argmax, as Keras
    np.testing.assert_array_equal(row_class_weights(onehot, {2: 4}), [1, 1, 4, 1])
    # a class absent from the rows but a column of the one-hot targets is known
    np.testing.assert_array_equal(row_class_weights(np.eye(4, dtype=np.float32)[y], {3: 9}),
                                  [1, 1, 1, 1])


@pytest.mark.parametrize("weights, where, message", [
    ({7: 1.0}, "class_weight.7", "unknown class '7'"),
    ({"kat": 1.0}, "class_weight.kat", "did you mean 'cat'"),
    ({1: -1.0}, "class_weight.1", "weight >= 0"),
    ("balancd", "class_weight", "did you mean 'balanced'"),
])
def test_class_weight_errors(weights, where, message):
    y = np.array([0, 1, 2], dtype=np.int32)
    with pytest.raises(ConfigError, match=message) as info:
        row_class_weights(y, weights, ["dog", "cat", "eel"])
    assert info.value.where == where


def test_class_weight_on_regression_targets_is_an_error():
    with pytest.raises(ConfigError, match="non-integer"):
        row_class_weights(np.array([[0.5], [1.5]], np.float32), "balanced")


def test_class_weight_multiplies_existing_sample_weight():
    ds = _ds(np.array([0, 1, 1, 1], np.int32), sw=np.array([1, 2, 3, 4], np.float32))
    out = apply_class_weight(ds, "balanced")
    np.testing.assert_allclose(out.sample_weight, [1 * 2, 2 * 2 / 3, 3 * 2 / 3, 4 * 2 / 3],
                               rtol=1e-6)
    assert out.sample_weight.dtype == np.float32


def test_class_weight_only_on_the_training_split():
    data = {"train": {"builtin": "blobs", "samples": 100}, "validation_split": 0.2,
            "class_weight": {0: 2.0}}
    splits = api.load_data(_spec(data))
    assert splits.validation.sample_weight is None
    np.testing.assert_array_equal(splits.train.sample_weight,
                                  np.where(splits.train.y == 0, 2.0, 1.0))


def test_unknown_class_in_the_config_is_located_at_its_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  train: {builtin: blobs, samples: 60}\n"
                      "  class_weight: {0: 1.0, 9: 2.0}\n"
                      "model:\n  layers:\n    - Dense: {units: 3, activation: softmax}\n"
                      "compile: {optimizer: sgd, loss: sparse_categorical_crossentropy}\n")
    with pytest.raises(ConfigError) as info:
        api.load_data(api.load_checked(config))
    assert str(info.value).startswith(f"{config}:3:26: data.class_weight[9]: unknown class")
    result = CliRunner().invoke(main, ["train", str(config), "--runs-dir",
                                       str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_class_ids_of_a_whole_valued_float_column():
    np.testing.assert_array_equal(class_ids(np.array([[0.0], [2.0]], np.float32), "k"), [0, 2])
