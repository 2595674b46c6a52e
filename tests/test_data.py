"""Tests for nnrun.data: built-in datasets, file sources, splits and prediction writers."""

from __future__ import annotations

import csv
import hashlib
import pathlib

import numpy as np
import pytest

from nnrun.config.errors import ConfigError, DataError
from nnrun.data.arrays import Dataset, sha256_file
from nnrun.data.datasets import DATASETS, generate
from nnrun.data.sources import load_features, load_source
from nnrun.data.splitting import validation_split
from nnrun.runs.predictions import write_predictions

# name -> (x shape for 120 samples, y shape, y dtype, number of classes or None)
BUILTINS = {
    "xor": ((120, 2), (120, 1), np.float32, 2),
    "moons": ((120, 2), (120, 1), np.float32, 2),
    "circles": ((120, 2), (120, 1), np.float32, 2),
    "spirals": ((120, 2), (120,), np.int32, 3),
    "blobs": ((120, 2), (120,), np.int32, 3),
    "sine": ((120, 1), (120, 1), np.float32, None),
    "sequences": ((120, 20, 1), (120, 1), np.float32, 2),
    "tokens": ((120, 20), (120, 1), np.float32, 2),
    "shapes": ((120, 16, 16, 1), (120,), np.int32, 3),
    "pairs": ({"first": (120, 8), "second": (120, 8)}, (120, 1), np.float32, 2),
}


def _arrays(x):
    """A builtin's feature arrays (one, or a graph model's several)."""
    return dict(x) if isinstance(x, dict) else {"x": x}


def _load(source: dict, base_dir: pathlib.Path = pathlib.Path("."), seed: int = 0) -> Dataset:
    return load_source(source, seed=seed, base_dir=base_dir)


# ---------------------------------------------------------------- built-in datasets


def test_registry_lists_every_builtin():
    from nnrun.data.sklearn_datasets import ROWS  # fixed-size ones: tests/test_tables.py

    assert sorted(DATASETS.names()) == sorted([*BUILTINS, *ROWS])


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_shapes_and_dtypes(name):
    x_shape, y_shape, y_dtype, _ = BUILTINS[name]
    x, y = generate(name, 120, 0)
    shapes = {k: v.shape for k, v in _arrays(x).items()}
    assert shapes == (x_shape if isinstance(x_shape, dict) else {"x": x_shape})
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in _arrays(x).values())
    assert y.shape == y_shape and y.dtype == y_dtype


def test_tokens_with_min_length_are_zero_padded_after_their_end():
    x, _ = generate("tokens", 200, 0, length=12, min_length=3)
    lengths = (x != 0).sum(axis=1)
    assert lengths.min() >= 3 and lengths.max() == 12 and len(set(lengths)) > 5
    for row, n in zip(x, lengths):   # ids first, then only padding
        assert (row[:n] != 0).all() and (row[n:] == 0).all()
    with pytest.raises(ConfigError, match="min_length must be in"):
        generate("tokens", 10, 0, length=5, min_length=6)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_is_deterministic_given_seed(name):
    x1, y1 = generate(name, 64, 7)
    x2, y2 = generate(name, 64, 7)
    for k, v in _arrays(x1).items():
        np.testing.assert_array_equal(v, _arrays(x2)[k])
    np.testing.assert_array_equal(y1, y2)
    x3, _ = generate(name, 64, 8)
    assert not np.array_equal(_arrays(x1)[next(iter(_arrays(x1)))],
                              _arrays(x3)[next(iter(_arrays(x3)))])


@pytest.mark.parametrize("name", [n for n, v in BUILTINS.items() if v[3] is not None])
def test_builtin_labels_are_balanced(name):
    classes = BUILTINS[name][3]
    _, y = generate(name, 120, 3)
    counts = np.bincount(y.reshape(-1).astype(int), minlength=classes)
    assert counts.tolist() == [120 // classes] * classes


@pytest.mark.parametrize("name", ["xor", "moons", "circles", "spirals", "blobs"])
def test_builtin_rows_are_shuffled(name):
    _, y = generate(name, 200, 0)
    labels = y.reshape(-1)
    assert (labels[:-1] != labels[1:]).sum() > 20


def test_xor_corners_and_labels():
    x, y = generate("xor", 400, 0, noise=0.0)
    corners = x.astype(int)
    assert set(map(tuple, corners.tolist())) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    np.testing.assert_array_equal(y[:, 0], corners[:, 0] ^ corners[:, 1])


def test_xor_is_solvable_by_the_founding_dense5_dense1_net():
    """Weights for Dense(5, relu) -> Dense(1, sigmoid) exist that reach >= 0.95 accuracy."""
    x, y = generate("xor", 2000, 0)
    w1 = np.zeros((2, 5))
    w1[:, 0] = w1[:, 1] = 1.0
    b1 = np.array([0.0, -1.0, 0, 0, 0])  # h0 = relu(x1 + x2), h1 = relu(x1 + x2 - 1)
    w2 = np.array([[1.0], [-2.0], [0], [0], [0]])
    logits = np.maximum(x @ w1 + b1, 0) @ w2 - 0.5
    prob = 1 / (1 + np.exp(-10 * logits))
    assert ((prob > 0.5) == (y > 0.5)).mean() >= 0.95


def test_moons_without_noise_lie_on_the_two_half_circles():
    x, y = generate("moons", 101, 0, noise=0.0)
    outer, inner = x[y[:, 0] == 0], x[y[:, 0] == 1]
    assert len(outer) == 50 and len(inner) == 51  # as make_moons: n // 2 outer
    np.testing.assert_allclose(np.hypot(outer[:, 0], outer[:, 1]), 1, atol=1e-6)
    assert (outer[:, 1] >= -1e-6).all()
    np.testing.assert_allclose(np.hypot(inner[:, 0] - 1, inner[:, 1] - 0.5), 1, atol=1e-6)
    assert (inner[:, 1] <= 0.5 + 1e-6).all()


def test_circles_without_noise_have_radius_one_and_factor():
    x, y = generate("circles", 100, 0, noise=0.0, factor=0.3)
    radius = np.hypot(x[:, 0], x[:, 1])
    np.testing.assert_allclose(radius[y[:, 0] == 0], 1, atol=1e-6)
    np.testing.assert_allclose(radius[y[:, 0] == 1], 0.3, atol=1e-6)


def test_sine_targets_and_range():
    x, y = generate("sine", 500, 0, noise=0.0)
    assert x.min() >= -np.pi and x.max() <= np.pi
    np.testing.assert_allclose(y, np.sin(x), atol=1e-6)
    _, noisy = generate("sine", 500, 0)
    assert 0.02 < np.std(noisy - np.sin(x)) < 0.1


def test_spirals_and_blobs_options():
    x, y = generate("spirals", 100, 0, classes=5)
    assert x.shape == (100, 2) and sorted(set(y.tolist())) == [0, 1, 2, 3, 4]
    x, y = generate("blobs", 90, 0, classes=4, features=7, cluster_std=0.01)
    assert x.shape == (90, 7) and sorted(set(y.tolist())) == [0, 1, 2, 3]
    # tight clusters: every point sits next to its class mean
    for c in range(4):
        assert np.abs(x[y == c] - x[y == c].mean(0)).max() < 0.1


@pytest.mark.parametrize(
    "name, classes, options",
    [
        ("xor", 2, {}),
        ("moons", 2, {}),
        ("circles", 2, {}),
        ("spirals", 4, {"classes": 4}),
        ("blobs", 3, {}),
    ],
)
def test_one_hot(name, classes, options):
    _, labels = generate(name, 60, 1, **options)
    _, y = generate(name, 60, 1, one_hot=True, **options)
    assert y.shape == (60, classes) and y.dtype == np.float32
    np.testing.assert_array_equal(y.argmax(1), labels.reshape(-1))
    np.testing.assert_array_equal(y.sum(1), 1)


def test_unknown_option_names_the_allowed_ones():
    with pytest.raises(ConfigError) as e:
        generate("xor", 10, 0, nosie=0.2)
    msg = str(e.value)
    assert "nosie" in msg and "did you mean 'noise'" in msg and "allowed:" in msg


def test_one_hot_is_not_an_option_of_a_regression_set():
    with pytest.raises(ConfigError, match="one_hot"):
        generate("sine", 10, 0, one_hot=True)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("xor", {"noise": "big"}),
        ("xor", {"noise": -1.0}),
        ("blobs", {"classes": 2.5}),
        ("spirals", {"classes": 1}),
        ("circles", {"factor": 1.5}),
        ("xor", {"one_hot": 1}),
    ],
)
def test_bad_option_values(name, kwargs):
    with pytest.raises(ConfigError):
        generate(name, 10, 0, **kwargs)


@pytest.mark.parametrize("samples", [0, -5, 2.5, True, "10"])
def test_bad_sample_counts(samples):
    with pytest.raises(ConfigError, match="samples"):
        generate("xor", samples, 0)


def test_load_source_builtin():
    ds = _load({"builtin": "moons", "samples": 50, "noise": 0.2}, seed=4)
    assert ds.source == "builtin:moons" and len(ds) == 50 and ds.files == []
    np.testing.assert_array_equal(ds.x, generate("moons", 50, 4, noise=0.2)[0])
    own = _load({"builtin": "moons", "samples": 50, "noise": 0.2, "seed": 9}, seed=4)
    np.testing.assert_array_equal(own.x, generate("moons", 50, 9, noise=0.2)[0])
    assert len(_load({"builtin": "xor"})) == 1000


def test_load_source_errors_carry_where():
    with pytest.raises(ConfigError) as e:
        load_source({"builtin": "xr"}, seed=0, base_dir=pathlib.Path("."), where="data.train")
    assert str(e.value).startswith("data.train.builtin:") and "did you mean 'xor'" in str(e.value)
    with pytest.raises(ConfigError, match="data.test.nosie"):
        load_source(
            {"builtin": "xor", "nosie": 1}, seed=0, base_dir=pathlib.Path("."), where="data.test"
        )
    with pytest.raises(ConfigError):
        _load({"builtin": "xor", "path": "a.csv"})


# ---------------------------------------------------------------- file sources


def _write_csv(path: pathlib.Path, rows: list[list], delimiter: str = ",") -> pathlib.Path:
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def test_npz_default_and_named_arrays(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    labels = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "d.npz", x=x, y=labels, feats=x * 2, t=x[:, :1])
    ds = _load({"path": "d.npz"}, tmp_path)
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int32 and ds.y.shape == (6,)
    np.testing.assert_array_equal(ds.x, x)
    assert ds.source == "d.npz"
    record = ds.files[0]
    assert record["path"] == str((tmp_path / "d.npz").resolve())
    assert record["size"] == (tmp_path / "d.npz").stat().st_size
    assert record["sha256"] == hashlib.sha256((tmp_path / "d.npz").read_bytes()).hexdigest()
    named = _load({"path": "d.npz", "x": "feats", "y": "t"}, tmp_path)
    np.testing.assert_array_equal(named.x, x * 2)
    assert named.y.dtype == np.float32 and named.y.shape == (6, 1)


def test_npz_without_targets(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((3, 2)))
    assert _load({"path": str(tmp_path / "d.npz")}).y is None
    assert _load({"path": "d.npz", "y": None}, tmp_path).y is None


def test_npy_with_target(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 3))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "labels.npy", np.array([1, 0, 1, 1, 0], dtype=np.int64))
    ds = _load({"path": "x.npy", "target": "labels.npy"}, tmp_path)
    np.testing.assert_allclose(ds.x, x.astype(np.float32))
    assert ds.y.tolist() == [1, 0, 1, 1, 0] and ds.y.dtype == np.int32
    assert [pathlib.Path(f["path"]).name for f in ds.files] == ["x.npy", "labels.npy"]
    assert _load({"path": "x.npy"}, tmp_path).y is None


def test_npy_int32_dtype_and_1d_features(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([[1, 2, 3], [4, 5, 6]]))
    ds = _load({"path": "ids.npy", "dtype": "int32"}, tmp_path)
    assert ds.x.dtype == np.int32 and ds.x.tolist() == [[1, 2, 3], [4, 5, 6]]
    np.save(tmp_path / "v.npy", np.array([1.0, 2.0, 3.0]))
    assert _load({"path": "v.npy"}, tmp_path).x.shape == (3, 1)
    np.save(tmp_path / "frac.npy", np.array([[1.5]]))
    with pytest.raises(DataError, match="frac.npy"):
        _load({"path": "frac.npy", "dtype": "int32"}, tmp_path)


def test_csv_with_one_target(tmp_path):
    _write_csv(tmp_path / "t.csv", [["a", "b", "label"], [1, 2.5, 0], [3, 4, 1], [5, 6e-3, 1]])
    ds = _load({"path": "t.csv", "target": "label"}, tmp_path)
    np.testing.assert_allclose(ds.x, [[1, 2.5], [3, 4], [5, 6e-3]])
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.float32
    assert ds.y.shape == (3, 1) and ds.y[:, 0].tolist() == [0, 1, 1]


def test_csv_with_target_list_and_features(tmp_path):
    _write_csv(tmp_path / "t.csv", [["a", "b", "c", "u", "v"], [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    ds = _load({"path": "t.csv", "target": ["v", "u"], "features": ["c", "a"]}, tmp_path)
    assert ds.x.tolist() == [[3, 1], [8, 6]] and ds.y.tolist() == [[5, 4], [10, 9]]
    unlabeled = _load({"path": "t.csv"}, tmp_path)
    assert unlabeled.x.shape == (2, 5) and unlabeled.y is None


def test_tsv_and_custom_delimiter(tmp_path):
    _write_csv(tmp_path / "t.tsv", [["a", "y"], [1, 2], [3, 4]], delimiter="\t")
    ds = _load({"path": "t.tsv", "target": "y"}, tmp_path)
    assert ds.x.tolist() == [[1], [3]] and ds.y.tolist() == [[2], [4]]
    _write_csv(tmp_path / "s.csv", [["a", "y"], [1, 2], [3, 4]], delimiter=";")
    ds = _load({"path": "s.csv", "target": "y", "delimiter": ";"}, tmp_path)
    assert ds.x.tolist() == [[1], [3]]


def test_csv_tolerates_blank_trailing_lines_and_bom(tmp_path):
    (tmp_path / "t.csv").write_text("\ufeffa,y\n1,2\n\n3,4\n\n", encoding="utf-8")
    ds = _load({"path": "t.csv", "target": "y"}, tmp_path)
    assert ds.x.tolist() == [[1], [3]]


# ---------------------------------------------------------------- file errors


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothere.csv.*not found"):
        _load({"path": "nothere.csv", "target": "y"}, tmp_path)
    np.save(tmp_path / "x.npy", np.ones((2, 2)))
    with pytest.raises(DataError, match="nolabels.npy"):
        _load({"path": "x.npy", "target": "nolabels.npy"}, tmp_path)


@pytest.mark.parametrize("name", ["bad.npy", "bad.npz"])
def test_unreadable_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is not numpy data at all")
    with pytest.raises(DataError, match=name):
        _load({"path": name}, tmp_path)


def test_unreadable_text_file(tmp_path):
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81\x82")
    with pytest.raises(DataError, match="bin.csv"):
        _load({"path": "bin.csv"}, tmp_path)


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(DataError, match="dir.npy"):
        _load({"path": "dir.npy"}, tmp_path)


def test_npz_unknown_key_lists_the_keys(tmp_path):
    np.savez(tmp_path / "d.npz", features=np.ones((2, 2)), labels=np.ones(2))
    with pytest.raises(DataError) as e:
        _load({"path": "d.npz"}, tmp_path)
    assert "d.npz" in str(e.value) and "'x'" in str(e.value)
    assert "features" in str(e.value) and "labels" in str(e.value)
    with pytest.raises(DataError, match="'target'.*features, labels"):
        _load({"path": "d.npz", "x": "features", "y": "target"}, tmp_path)


@pytest.mark.parametrize(
    "content", ["", "a,b\n", "a,b\n\n\n"], ids=["no-header", "header-only", "blank-rows"]
)
def test_empty_csv(tmp_path, content):
    (tmp_path / "e.csv").write_text(content)
    with pytest.raises(DataError, match="e.csv"):
        _load({"path": "e.csv"}, tmp_path)


def test_empty_arrays(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 3)))
    with pytest.raises(DataError, match="e.npy.*empty"):
        _load({"path": "e.npy"}, tmp_path)
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 3)), y=np.zeros(0))
    with pytest.raises(DataError, match="e.npz.*'x'.*empty"):
        _load({"path": "e.npz"}, tmp_path)


def test_row_count_mismatch(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((4, 2)), y=np.ones(3))
    with pytest.raises(DataError, match="d.npz.*4 rows.*3 rows"):
        _load({"path": "d.npz"}, tmp_path)
    np.save(tmp_path / "x.npy", np.ones((4, 2)))
    np.save(tmp_path / "y.npy", np.ones(5))
    with pytest.raises(DataError, match="x.npy.*5 rows.*y.npy"):
        _load({"path": "x.npy", "target": "y.npy"}, tmp_path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_arrays(tmp_path, bad):
    x = np.ones((3, 2))
    x[1, 1] = bad
    np.savez(tmp_path / "d.npz", x=x, y=np.ones(3))
    with pytest.raises(DataError, match=r"d.npz.*'x'.*NaN or inf.*\(1, 1\)"):
        _load({"path": "d.npz"}, tmp_path)
    np.savez(tmp_path / "t.npz", x=np.ones((3, 2)), y=x[:, 1])
    with pytest.raises(DataError, match="t.npz.*'y'"):
        _load({"path": "t.npz"}, tmp_path)


def test_non_finite_csv_names_row_and_column(tmp_path):
    _write_csv(tmp_path / "n.csv", [["a", "b", "y"], [1, 2, 0], [3, "nan", 1]])
    with pytest.raises(DataError, match=r"n.csv.*row 2 \(line 3\), column 'b'.*NaN"):
        _load({"path": "n.csv", "target": "y"}, tmp_path)


@pytest.mark.parametrize("cell, what", [("abc", "'abc' is not a number"), ("", "empty cell")])
def test_non_numeric_csv_cell(tmp_path, cell, what):
    _write_csv(tmp_path / "c.csv", [["a", "b", "y"], [1, 2, 0], [3, 4, 1], [5, 6, cell]])
    with pytest.raises(DataError) as e:
        _load({"path": "c.csv", "target": "y"}, tmp_path)
    msg = str(e.value)
    assert "c.csv" in msg and "row 3 (line 4)" in msg and "column 'y'" in msg and what in msg


def test_ragged_csv_row(tmp_path):
    (tmp_path / "r.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match="r.csv.*line 3 has 1 cells"):
        _load({"path": "r.csv"}, tmp_path)


def test_missing_target_and_feature_columns_list_the_columns(tmp_path):
    _write_csv(tmp_path / "t.csv", [["a", "b", "label"], [1, 2, 0]])
    with pytest.raises(DataError) as e:
        _load({"path": "t.csv", "target": "class"}, tmp_path)
    assert "t.csv" in str(e.value) and "'class'" in str(e.value) and "a, b, label" in str(e.value)
    with pytest.raises(DataError, match="no feature column 'z'.*a, b, label"):
        _load({"path": "t.csv", "target": "label", "features": ["a", "z"]}, tmp_path)
    _write_csv(tmp_path / "only.csv", [["label"], [1]])
    with pytest.raises(DataError, match="only.csv.*no feature columns"):
        _load({"path": "only.csv", "target": "label"}, tmp_path)


def test_duplicate_header(tmp_path):
    _write_csv(tmp_path / "d.csv", [["a", "a"], [1, 2]])
    with pytest.raises(DataError, match="d.csv.*duplicate"):
        _load({"path": "d.csv"}, tmp_path)


@pytest.mark.parametrize(
    "source, pattern",
    [
        ({"path": "d.json"}, "unsupported data file type '.json'"),
        ({"path": "d.npz", "target": "y"}, "unknown key for a .npz source 'target'"),
        ({"path": "d.csv", "taget": "y"}, "did you mean 'target'"),
        ({"path": "d.csv", "target": 3}, "column name"),
        ({"path": "d.csv", "dtype": "float64"}, "float32 or int32"),
        ({"path": 3}, "file path"),
        ({"path": "d.npz", "x": ["a"]}, "array name"),
        ({"x": "a"}, "'builtin' or 'path'"),
    ],
)
def test_config_errors_in_file_sources(tmp_path, source, pattern):
    _write_csv(tmp_path / "d.csv", [["a", "y"], [1, 2]])
    np.savez(tmp_path / "d.npz", x=np.ones((1, 1)))
    with pytest.raises(ConfigError, match=pattern):
        _load(source, tmp_path)


# ---------------------------------------------------------------- validation_split


@pytest.mark.parametrize(
    "n, fraction", [(100, 0.2), (10, 0.25), (7, 0.5), (1000, 0.1), (3, 0.01), (100, 0.001)]
)
def test_validation_split_as_keras(n, fraction):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    ds = Dataset(x=x, y=np.arange(n, dtype=np.int32), source="s", files=[{"path": "p"}])
    train, val = validation_split(ds, fraction)
    split_at = int(n * (1 - fraction))  # keras.src.trainers.data_adapters.data_adapter_utils
    assert len(train) == split_at and len(val) == n - split_at
    np.testing.assert_array_equal(train.x, x[:split_at])
    np.testing.assert_array_equal(val.x, x[split_at:])
    assert val.y.tolist() == list(range(split_at, n))
    assert val.source == "s" and val.files == [{"path": "p"}]


def test_validation_split_without_targets():
    train, val = validation_split(Dataset(np.ones((10, 1), np.float32), None, "s"), 0.3)
    assert (len(train), len(val)) == (7, 3) and train.y is None and val.y is None


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, True, "0.2", None])
def test_validation_split_bad_fraction(fraction):
    with pytest.raises(ConfigError, match="validation_split"):
        validation_split(Dataset(np.ones((10, 1), np.float32), None, "s"), fraction)


@pytest.mark.parametrize("n, fraction", [(1, 0.5), (3, 0.9), (2, 0.99), (5, 1e-17)])
def test_validation_split_leaving_no_rows(n, fraction):
    with pytest.raises(DataError, match="validation_split"):
        validation_split(Dataset(np.ones((n, 1), np.float32), None, "s"), fraction)


# ---------------------------------------------------------------- writing and features


def _read_rows(path: pathlib.Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_write_predictions_npy_and_npz(tmp_path):
    probs = np.random.default_rng(0).random((6, 3)).astype(np.float32)
    classes = probs.argmax(1)
    write_predictions(tmp_path / "p.npy", probs, classes)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), probs)
    write_predictions(tmp_path / "p.npz", probs, classes, class_names=["a", "b", "c"])
    with np.load(tmp_path / "p.npz") as z:
        np.testing.assert_array_equal(z["probs"], probs)
        np.testing.assert_array_equal(z["classes"], classes)
        assert z["class_names"].tolist() == ["a", "b", "c"]
    write_predictions(tmp_path / "r.npz", probs[:, :1], None)
    with np.load(tmp_path / "r.npz") as z:
        assert z.files == ["probs"]


def test_write_predictions_csv_multiclass_round_trip(tmp_path):
    probs = np.random.default_rng(1).random((5, 3)).astype(np.float32)
    classes = probs.argmax(1)
    write_predictions(tmp_path / "p.csv", probs, classes)
    rows = _read_rows(tmp_path / "p.csv")
    assert rows[0] == ["row", "p0", "p1", "p2", "class"]
    body = np.array(rows[1:], dtype=np.float64)
    assert body[:, 0].tolist() == list(range(5))
    np.testing.assert_array_equal(body[:, 1:4].astype(np.float32), probs)  # exact for float32
    assert body[:, 4].astype(int).tolist() == classes.tolist()


def test_write_predictions_csv_binary_regression_and_names(tmp_path):
    probs = np.array([[0.1], [0.9]], np.float32)
    write_predictions(tmp_path / "b.csv", probs, np.array([0, 1]))
    assert _read_rows(tmp_path / "b.csv") == [
        ["row", "p1", "class"],
        ["0", "0.100000001", "0"],
        ["1", "0.899999976", "1"],
    ]
    write_predictions(tmp_path / "n.csv", probs, np.array([0, 1]), class_names=["cat", "dog"])
    assert _read_rows(tmp_path / "n.csv")[0] == ["row", "p_dog", "class"]
    assert [r[2] for r in _read_rows(tmp_path / "n.csv")[1:]] == ["cat", "dog"]
    write_predictions(tmp_path / "r.csv", np.array([1.5, -2.0], np.float32), None)
    assert _read_rows(tmp_path / "r.csv") == [["row", "prediction"], ["0", "1.5"], ["1", "-2"]]
    write_predictions(tmp_path / "m.csv", np.ones((2, 2), np.float32), None)
    assert _read_rows(tmp_path / "m.csv")[0] == ["row", "prediction_0", "prediction_1"]


def test_write_predictions_is_atomic_and_overwrites(tmp_path):
    (tmp_path / "p.csv").write_text("old")
    write_predictions(tmp_path / "p.csv", np.ones((2, 1), np.float32), None)
    assert _read_rows(tmp_path / "p.csv")[0] == ["row", "prediction"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


def test_write_predictions_errors(tmp_path):
    with pytest.raises(ConfigError, match="'.json'"):
        write_predictions(tmp_path / "p.json", np.ones((2, 1)), None)
    with pytest.raises(ConfigError, match="folder"):
        write_predictions(tmp_path / "missing" / "p.csv", np.ones((2, 1)), None)
    assert list(tmp_path.iterdir()) == []


def test_load_features_same_from_csv_npy_npz(tmp_path):
    x = np.random.default_rng(2).normal(size=(8, 3)).astype(np.float32)
    header = [["f0", "f1", "label", "f2"]]
    rows = [[repr(float(a)), repr(float(b)), 1, repr(float(c))] for a, b, c in x]
    _write_csv(tmp_path / "in.csv", header + rows)
    _write_csv(tmp_path / "in.tsv", header + rows, delimiter="\t")
    np.save(tmp_path / "in.npy", x)
    np.savez(tmp_path / "in.npz", x=x, y=np.ones(8))
    for name in ["in.csv", "in.tsv"]:
        out = load_features(tmp_path / name, drop_columns=["label", "absent"])
        np.testing.assert_array_equal(out, x)
        assert out.dtype == np.float32
    np.testing.assert_array_equal(load_features(tmp_path / "in.npy"), x)
    np.testing.assert_array_equal(load_features(tmp_path / "in.npz"), x)
    assert load_features(tmp_path / "in.csv").shape == (8, 4)


def test_load_features_errors(tmp_path):
    with pytest.raises(DataError, match="none.csv"):
        load_features(tmp_path / "none.csv")
    np.savez(tmp_path / "d.npz", features=np.ones((2, 2)))
    with pytest.raises(DataError, match="d.npz.*features"):
        load_features(tmp_path / "d.npz")
    _write_csv(tmp_path / "t.csv", [["label"], [1]])
    with pytest.raises(DataError, match="t.csv"):
        load_features(tmp_path / "t.csv", drop_columns=["label"])
    with pytest.raises(ConfigError, match="'.txt'"):
        load_features(tmp_path / "x.txt")


def test_sha256_file_streams_large_files(tmp_path):
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    assert sha256_file(str(tmp_path / "blob")) == hashlib.sha256(data).hexdigest()


def _save(tmp_path, layout, x, y) -> tuple[dict, list[str]]:
    if layout == "npy":
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        return {"path": "x.npy", "target": "y.npy"}, ["x.npy", "y.npy"]
    (np.savez_compressed if layout == "npz-compressed" else np.savez)(tmp_path / "d.npz",
                                                                      x=x, y=y)
    return {"path": "d.npz"}, ["d.npz"]


@pytest.mark.parametrize("layout", ["npz", "npz-compressed", "npy"])
def test_a_float32_file_is_not_copied_on_its_way_to_the_device(tmp_path, layout):
    """Issue 21: .npy and .npz arrays are read into 64-byte-aligned memory, so sending
    them to the CPU device copies nothing (the MNIST-sized data: 188 MB, 0.1 s)."""
    import jax

    x = np.random.default_rng(1).random((1000, 16), dtype=np.float32)
    source, _ = _save(tmp_path, layout, x, np.arange(1000) % 3)
    ds = _load(source, tmp_path)
    on_device = jax.device_put(ds.x)
    assert on_device.unsafe_buffer_pointer() == ds.x.ctypes.data
    np.testing.assert_array_equal(np.asarray(on_device), x)


@pytest.mark.parametrize("layout", ["npz", "npz-compressed", "npy"])
def test_read_values_and_file_records(tmp_path, layout):
    """A Fortran-ordered big-endian array comes through as saved; each file's record
    (its sha256 computed on a thread while the arrays were read) is right, the
    features' file first."""
    x = np.asfortranarray(np.random.default_rng(0).normal(size=(300, 7)).astype(">f4"))
    source, names = _save(tmp_path, layout, x, np.arange(300) % 3)
    ds = _load(source, tmp_path)
    np.testing.assert_array_equal(ds.x, x)
    assert ds.x.dtype == np.float32 and ds.y.tolist() == (np.arange(300) % 3).tolist()
    assert [pathlib.Path(r["path"]).name for r in ds.files] == names
    for record in ds.files:
        data = pathlib.Path(record["path"]).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["size"] == len(data)


def test_a_damaged_npz_member_is_a_data_error(tmp_path):
    x = np.random.default_rng(2).random((200, 8), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    raw = bytearray((tmp_path / "d.npz").read_bytes())
    raw[raw.index(b"NUMPY") + 2000] ^= 0xFF   # a value's byte: the member's CRC fails
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="CRC"):
        _load({"path": "bad.npz"}, tmp_path)
