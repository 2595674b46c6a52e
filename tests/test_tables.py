"""Tables (nnrun.data.tables, nnrun.data.table_encoding): header-less files, categorical columns,
class-name targets, missing values and fills, sample weights, the training source's
encoding carried to validation, test and predict; scikit-learn's builtin datasets;
prediction files (.h5, --top-k)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from nnrun.cli.main import main
from nnrun.config.errors import ConfigError, DataError
from nnrun.data.sources import check_source, load_features, load_source
from nnrun.runs.predictions import top_k, write_predictions


def _csv(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _load(source: dict, base: pathlib.Path, encoding: dict | None = None):
    return load_source(source, seed=0, base_dir=base, encoding=encoding)


PETS = """
    size,color,weight,kind
    1.0,red,2.0,cat
    2.0,blue,1.0,dog
    3.0,red,1.0,dog
    4.0,green,0.5,bird
    """


# ---------------------------------------------------------------- header, categories


def test_header_false_names_columns_by_position(tmp_path):
    _csv(tmp_path / "t.csv", "1,2,3,0\n4,5,6,1\n")
    ds = _load({"path": "t.csv", "header": False, "target": 3}, tmp_path)
    assert ds.x.tolist() == [[1, 2, 3], [4, 5, 6]] and ds.y[:, 0].tolist() == [0, 1]
    ds = _load({"path": "t.csv", "header": False, "target": "3", "features": [2, 0]}, tmp_path)
    assert ds.x.tolist() == [[3, 1], [6, 4]]
    assert ds.encoding["columns"] == ["0", "1", "2", "3"]
    with pytest.raises(ConfigError, match="positions need header: false"):
        _load({"path": "t.csv", "target": 3}, tmp_path)
    with pytest.raises(DataError, match="t.csv.*no target column '7'.*0, 1, 2, 3"):
        _load({"path": "t.csv", "header": False, "target": 7}, tmp_path)


def test_categorical_one_hot_index_and_class_name_targets(tmp_path):
    _csv(tmp_path / "t.csv", PETS)
    ds = _load({"path": "t.csv", "target": "kind", "categorical": ["color"]}, tmp_path)
    # color one-hot (blue, green, red) in its place; kind: class ids of sorted names
    assert ds.x.tolist() == [[1, 0, 0, 1, 2], [2, 1, 0, 0, 1], [3, 0, 0, 1, 1],
                             [4, 0, 1, 0, 0.5]]
    assert ds.y.dtype == np.int32 and ds.y.tolist() == [1, 2, 2, 0]
    assert ds.class_names == ["bird", "cat", "dog"]
    assert ds.encoding["feature_names"] == ["size", "color=blue", "color=green", "color=red",
                                            "weight"]
    ds = _load({"path": "t.csv", "target": "kind", "categorical": {"color": "index"}},
               tmp_path)
    assert ds.x[:, 1].tolist() == [2, 0, 2, 1] and ds.x.dtype == np.float32
    ds = _load({"path": "t.csv", "target": "kind", "features": ["color"], "dtype": "int32",
                "categorical": {"color": "index"}}, tmp_path)
    assert ds.x.dtype == np.int32 and ds.x[:, 0].tolist() == [2, 0, 2, 1]   # an Embedding's
    json.dumps(ds.encoding)   # JSON-able


def test_numeric_categories_sort_as_numbers(tmp_path):
    _csv(tmp_path / "t.csv", "code,y\n10,1\n2,0\n1,1\n")
    ds = _load({"path": "t.csv", "target": "y", "categorical": {"code": "index"}}, tmp_path)
    assert ds.encoding["categorical"]["code"]["vocabulary"] == ["1", "2", "10"]
    assert ds.x[:, 0].tolist() == [2, 1, 0]


def test_string_in_numeric_column_hints_categorical(tmp_path):
    _csv(tmp_path / "t.csv", PETS)
    with pytest.raises(DataError) as e:
        _load({"path": "t.csv", "target": "kind"}, tmp_path)
    msg = str(e.value)
    assert "t.csv" in msg and "row 1 (line 2), column 'color'" in msg
    assert "'red' is not a number" in msg and "categorical: [color]" in msg


def test_target_mixing_numbers_and_text_is_an_error(tmp_path):
    _csv(tmp_path / "t.csv", "a,y\n1,0\n2,1\n3,yes\n")
    with pytest.raises(DataError, match=r"row 3 \(line 4\), column 'y'.*categorical: \[y\]"):
        _load({"path": "t.csv", "target": "y"}, tmp_path)
    ds = _load({"path": "t.csv", "target": "y", "categorical": {"y": "index"}}, tmp_path)
    assert ds.class_names == ["0", "1", "yes"] and ds.y.tolist() == [0, 1, 2]


def test_validation_uses_the_training_vocabulary(tmp_path):
    _csv(tmp_path / "t.csv", PETS)
    _csv(tmp_path / "v.csv", "kind,color,size,weight\ndog,green,5,1\n")   # other order
    train = _load({"path": "t.csv", "target": "kind", "categorical": ["color"]}, tmp_path)
    val = _load({"path": "v.csv", "target": "kind"}, tmp_path, train.encoding)
    assert val.x.tolist() == [[5, 0, 1, 0, 1]] and val.y.tolist() == [2]
    _csv(tmp_path / "u.csv", "size,color,weight,kind\n1,purple,1,cat\n")
    with pytest.raises(DataError) as e:
        _load({"path": "u.csv", "target": "kind"}, tmp_path, train.encoding)
    msg = str(e.value)
    assert "u.csv" in msg and "row 1 (line 2), column 'color'" in msg
    assert "unknown category 'purple'" in msg and "'blue', 'green', 'red'" in msg
    _csv(tmp_path / "k.csv", "size,color,weight,kind\n1,red,1,fish\n")
    with pytest.raises(DataError, match="column 'kind': unknown category 'fish'"):
        _load({"path": "k.csv", "target": "kind"}, tmp_path, train.encoding)
    with pytest.raises(ConfigError, match="differs from the training source's"):
        _load({"path": "v.csv", "target": "kind", "categorical": {"color": "index"}},
              tmp_path, train.encoding)


# ---------------------------------------------------------------- missing values


@pytest.mark.parametrize("cell", ["", "NA", "NaN", "nan", "null", "None", "?"])
def test_missing_values_need_a_fill_rule(tmp_path, cell):
    _csv(tmp_path / "m.csv", f"a,b,y\n1,2,0\n3,{cell},1\n")
    with pytest.raises(DataError) as e:
        _load({"path": "m.csv", "target": "y"}, tmp_path)
    msg = str(e.value)
    assert "m.csv" in msg and "row 2 (line 3), column 'b'" in msg and "fill:" in msg


@pytest.mark.parametrize("rule, value", [("mean", 3.75), ("median", 2.5),
                                         ("most_frequent", 1.0), (-1, -1.0)])
def test_fill_rules_use_training_values(tmp_path, rule, value):
    _csv(tmp_path / "t.csv", "a,y\n1,0\n1,1\nNA,0\n4,1\n9,0\n")
    ds = _load({"path": "t.csv", "target": "y", "fill": {"a": rule}}, tmp_path)
    assert ds.x[:, 0].tolist() == [1, 1, value, 4, 9]
    _csv(tmp_path / "v.csv", "a,y\n?,1\n100,0\n")   # filled with the training value
    val = _load({"path": "v.csv", "target": "y"}, tmp_path, ds.encoding)
    assert val.x[:, 0].tolist() == [value, 100]


def test_fill_for_all_columns_and_categories(tmp_path):
    _csv(tmp_path / "t.csv", "a,c,y\n1,x,0\n,y,1\n3,,0\n5,y,1\n")
    ds = _load({"path": "t.csv", "target": "y", "categorical": ["c"], "fill": "mean"},
               tmp_path)   # mean for numbers, most_frequent for categories
    assert ds.x.tolist() == [[1, 1, 0], [3, 0, 1], [3, 0, 1], [5, 0, 1]]
    ds = _load({"path": "t.csv", "target": "y", "categorical": ["c"],
                "fill": {"a": 0, "c": "unknown"}}, tmp_path)
    assert ds.encoding["categorical"]["c"]["vocabulary"] == ["unknown", "x", "y"]
    assert ds.x[2].tolist() == [3, 1, 0, 0]
    with pytest.raises(DataError, match="'z' for column 'a' is not a number"):
        _load({"path": "t.csv", "target": "y", "categorical": ["c"],
               "fill": {"a": "z", "c": "x"}}, tmp_path)


# ---------------------------------------------------------------- sample weights


def test_sample_weight_column_npz_and_npy(tmp_path):
    _csv(tmp_path / "t.csv", "a,w,y\n1,0.5,0\n2,2,1\n")
    ds = _load({"path": "t.csv", "target": "y", "sample_weight": "w"}, tmp_path)
    assert ds.x.tolist() == [[1], [2]] and ds.sample_weight.tolist() == [0.5, 2]
    assert ds.sample_weight.dtype == np.float32
    np.savez(tmp_path / "d.npz", x=np.ones((3, 2)), y=np.ones(3), w=np.array([1, 0, 3]))
    ds = _load({"path": "d.npz", "sample_weight": "w"}, tmp_path)
    assert ds.sample_weight.tolist() == [1, 0, 3]
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    np.save(tmp_path / "w.npy", np.array([[1.0], [2.0], [3.0]]))
    ds = _load({"path": "x.npy", "sample_weight": "w.npy"}, tmp_path)
    assert ds.sample_weight.tolist() == [1, 2, 3] and len(ds.files) == 2


def test_bad_sample_weights(tmp_path):
    _csv(tmp_path / "t.csv", "a,w,y\n1,0.5,0\n2,-1,1\n")
    with pytest.raises(DataError, match=r"t.csv.*row 2 \(line 3\), column 'w'.*negative"):
        _load({"path": "t.csv", "target": "y", "sample_weight": "w"}, tmp_path)
    np.savez(tmp_path / "d.npz", x=np.ones((3, 2)), y=np.ones(3), w=np.array([1, np.nan, 3]),
             short=np.ones(2))
    with pytest.raises(DataError, match="d.npz.*'w'.*nan.*finite and >= 0"):
        _load({"path": "d.npz", "sample_weight": "w"}, tmp_path)
    with pytest.raises(DataError, match="d.npz.*'short'.*one weight per row"):
        _load({"path": "d.npz", "sample_weight": "short"}, tmp_path)


# ---------------------------------------------------------------- config checks


@pytest.mark.parametrize("source, where, pattern", [
    ({"path": "t.csv", "header": "no"}, "header", "true or false"),
    ({"path": "t.csv", "categorical": {"c": "onehot"}}, "categorical.c", "one_hot or index"),
    ({"path": "t.csv", "categorical": [1.5]}, "categorical", "column name"),
    ({"path": "t.csv", "fill": "avg"}, "fill", "mean, median, most_frequent"),
    ({"path": "t.csv", "fill": {"a": [1]}}, "fill.a", "a constant"),
    ({"path": "t.csv", "categorical": ["c"], "fill": {"c": "mean"}}, "fill.c", "categorical"),
    ({"path": "t.csv", "sample_weight": [1]}, "sample_weight", "column name"),
    ({"path": "t.npz", "sample_weight": 3}, "sample_weight", "an array name"),
    ({"path": "t.npy", "sample_weight": 3}, "sample_weight", "a .npy file path"),
    ({"path": "t.npz", "header": False}, "header", "unknown key"),
])
def test_check_source_validates_the_new_keys_without_reading(source, where, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        check_source(source)   # none of these files exists: nothing is read
    assert e.value.where == where


# ---------------------------------------------------------------- scikit-learn datasets


@pytest.mark.parametrize("name, x_shape, y_shape, y_dtype", [
    ("iris", (150, 4), (150,), np.int32), ("digits", (1797, 64), (1797,), np.int32),
    ("wine", (178, 13), (178,), np.int32), ("breast_cancer", (569, 30), (569, 1), np.float32),
    ("diabetes", (442, 10), (442, 1), np.float32)])
def test_sklearn_builtins(tmp_path, name, x_shape, y_shape, y_dtype):
    ds = _load({"builtin": name}, tmp_path)
    assert ds.x.shape == x_shape and ds.x.dtype == np.float32
    assert ds.y.shape == y_shape and ds.y.dtype == y_dtype


def test_sklearn_builtin_rows_shuffled_by_seed_and_samples(tmp_path):
    a, b = (load_source({"builtin": "iris"}, seed=s, base_dir=tmp_path) for s in (0, 1))
    assert sorted(a.y.tolist()) == sorted(b.y.tolist()) == [0] * 50 + [1] * 50 + [2] * 50
    assert a.y.tolist() != b.y.tolist()
    assert len(set(a.y[-30:].tolist())) == 3   # the validation_split rows: every class
    first = _load({"builtin": "iris", "samples": 20}, tmp_path)
    np.testing.assert_array_equal(first.x, a.x[:20])
    assert len(_load({"builtin": "iris", "samples": 1000}, tmp_path)) == 150   # capped
    digits = _load({"builtin": "digits", "images": True, "samples": 5}, tmp_path)
    assert digits.x.shape == (5, 8, 8, 1) and 0 <= digits.x.min() and digits.x.max() <= 1
    assert _load({"builtin": "wine", "one_hot": True}, tmp_path).y.shape == (178, 3)
    with pytest.raises(ConfigError, match="option of dataset 'iris' 'noise'"):
        _load({"builtin": "iris", "noise": 0.1}, tmp_path)


def test_sklearn_missing_is_a_config_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install nnrun\[sklearn\]") as e:
        check_source({"builtin": "iris"})
    assert e.value.where == "builtin"


def test_check_imports_neither_jax_nor_sklearn(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: {train: {builtin: digits, images: true}}\nmodel:\n"
                      "  input_shape: [8, 8, 1]\n  layers: [Flatten, {Dense: 10}]\n"
                      "compile: {loss: sparse_categorical_crossentropy}\n")
    code = ("import sys; from nnrun.cli.main import main\n"
            "try: main(['check', sys.argv[1]])\nexcept SystemExit as e: assert e.code == 0\n"
            "assert 'jax' not in sys.modules and 'sklearn' not in sys.modules, 'imported'\n")
    done = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- prediction files


def test_top_k_and_h5_predictions(tmp_path):
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], np.float32)
    ids, p = top_k(probs, 2)
    assert ids.tolist() == [[1, 2], [0, 2]] and p.dtype == np.float32
    np.testing.assert_allclose(p, [[0.6, 0.3], [0.5, 0.3]])
    assert top_k(np.array([[0.8], [0.1]], np.float32), 2)[0].tolist() == [[1, 0], [0, 1]]
    write_predictions(tmp_path / "p.csv", probs, probs.argmax(1), ["a", "b", "c"], 2)
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "row,p_a,p_b,p_c,class,top1,top2,top1_p,top2_p"
    assert lines[1].split(",")[4:] == ["b", "b", "c", "0.600000024", "0.300000012"]
    write_predictions(tmp_path / "p.h5", probs, probs.argmax(1), ["a", "b", "c"], 3)
    with h5py.File(tmp_path / "p.h5") as f:
        np.testing.assert_array_equal(f["probs"][()], probs)
        assert f["classes"][()].tolist() == [1, 0]
        assert [n.decode() for n in f["class_names"][()]] == ["a", "b", "c"]
        assert f["top_k"][()].tolist() == [[1, 2, 0], [0, 2, 1]]
    with pytest.raises(ConfigError, match="classifiers"):
        write_predictions(tmp_path / "r.csv", probs, None, None, 1)
    with pytest.raises(ConfigError, match=r"\.csv, \.npz or \.h5"):
        write_predictions(tmp_path / "p.npy", probs, probs.argmax(1), None, 1)


# ---------------------------------------------------------------- through the CLI


@pytest.fixture
def runner():
    return CliRunner()


def _run(runner, tmp_path, *args):
    result = runner.invoke(main, [*args, "--runs-dir", str(tmp_path / "runs")])
    assert "Traceback" not in result.output
    return result


def _pets(tmp_path, rows: int = 60) -> None:
    rng = np.random.default_rng(0)
    names = {"red": "cat", "blue": "dog", "green": "bird"}
    lines = ["size,color,w,kind"]
    for i in range(rows):
        color = ["red", "blue", "green"][i % 3]
        lines.append(f"{rng.normal():.6f},{color},{1 + i % 2},{names[color]}")
    (tmp_path / "pets.csv").write_text("\n".join(lines) + "\n")


TABLE_CONFIG = """\
name: pets
data:
  train: {path: pets.csv, target: kind, categorical: [color], sample_weight: w%s}
  validation_split: 0.25
model:
  layers:
    - Dense: {units: 8, activation: relu}
    - Dense: {units: 3, activation: softmax}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
fit: {epochs: 2, batch_size: 8}
"""


def _train(runner, tmp_path, extra: str = "") -> pathlib.Path:
    (tmp_path / "c.yaml").write_text(TABLE_CONFIG % extra)
    result = _run(runner, tmp_path, "train", str(tmp_path / "c.yaml"))
    assert result.exit_code == 0, result.output
    return pathlib.Path(result.output.strip().splitlines()[-1])


def test_table_run_predicts_with_its_encoding(runner, tmp_path):
    _pets(tmp_path)
    run = _train(runner, tmp_path)
    encoding = json.loads((run / "data_encoding.json").read_text())
    assert encoding["class_names"] == ["bird", "cat", "dog"]
    assert encoding["categorical"]["color"]["vocabulary"] == ["blue", "green", "red"]
    # predict input without the target and sample_weight columns, columns reordered
    rows = (tmp_path / "pets.csv").read_text().splitlines()
    body = [r.split(",") for r in rows[1:]]
    (tmp_path / "in.csv").write_text("color,size\n" + "".join(f"{c},{s}\n" for s, c, *_ in body))
    x = load_features(tmp_path / "in.csv", encoding=encoding)
    assert x.shape == (60, 4)
    np.save(tmp_path / "in.npy", x)
    out = {}
    for name in ("in.csv", "in.npy"):
        result = _run(runner, tmp_path, "predict", str(run), "-i", str(tmp_path / name),
                      "-o", str(tmp_path / f"{name}.npz"))
        assert result.exit_code == 0, result.output
        with np.load(tmp_path / f"{name}.npz") as z:
            out[name] = z["probs"]
    np.testing.assert_array_equal(out["in.csv"], out["in.npy"])   # exact
    result = _run(runner, tmp_path, "predict", str(run), "-i", str(tmp_path / "in.csv"),
                  "-o", str(tmp_path / "p.csv"), "--top-k", "2")
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "row,p_bird,p_cat,p_dog,class,top1,top2,top1_p,top2_p"
    assert lines[1].split(",")[4] in ("bird", "cat", "dog")
    assert _run(runner, tmp_path, "evaluate", str(run)).exit_code == 0


@pytest.mark.parametrize("k, needle", [("0", "positive"), ("4", "expected 1 to 3")])
def test_top_k_out_of_range_exits_2(runner, tmp_path, k, needle):
    _pets(tmp_path, 12)
    run = _train(runner, tmp_path)
    result = _run(runner, tmp_path, "predict", str(run), "-i", str(tmp_path / "pets.csv"),
                  "-o", str(tmp_path / "p.csv"), "--top-k", k)
    assert result.exit_code == 2 and needle in result.output and "--top-k" in result.output
    assert not (tmp_path / "p.csv").exists()


def test_top_k_needs_a_classifier(runner, tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text("name: reg\ndata: {train: {builtin: sine, samples: 32}}\nmodel:\n"
                      "  input_shape: [1]\n  layers: [{Dense: 1}]\ncompile: {loss: mse}\n"
                      "fit: {epochs: 1}\n")
    assert _run(runner, tmp_path, "train", str(config)).exit_code == 0
    np.save(tmp_path / "x.npy", np.ones((3, 1), np.float32))
    result = _run(runner, tmp_path, "predict", str(config), "-i", str(tmp_path / "x.npy"),
                  "-o", str(tmp_path / "p.csv"), "--top-k", "1")
    assert result.exit_code == 2 and "classifier" in result.output


def test_header_less_predict_input_may_omit_the_target(runner, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 2))
    lines = [f"{a:.5f},{int(a + b > 0)},{b:.5f}" for a, b in x]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "in.csv").write_text("".join(f"{a:.5f},{b:.5f}\n" for a, b in x))
    (tmp_path / "c.yaml").write_text(
        "name: nohead\ndata: {train: {path: t.csv, header: false, target: 1}}\nmodel:\n"
        "  layers: [{Dense: {units: 1, activation: sigmoid}}]\n"
        "compile: {loss: binary_crossentropy}\nfit: {epochs: 1}\n")
    result = _run(runner, tmp_path, "train", str(tmp_path / "c.yaml"))
    assert result.exit_code == 0, result.output
    run = pathlib.Path(result.output.strip().splitlines()[-1])
    for name in ("t.csv", "in.csv"):
        result = _run(runner, tmp_path, "predict", str(run), "-i", str(tmp_path / name),
                      "-o", str(tmp_path / f"{name}.npy"))
        assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "t.csv.npy"),
                                  np.load(tmp_path / "in.csv.npy"))


BAD_TABLES = {
    "empty": ("", "empty file"),
    "header-only": ("size,color,w,kind\n", "no data rows"),
    "ragged": ("size,color,w,kind\n1,red,1,cat\n2,red\n", "line 3 has 2 cells"),
    "missing": ("size,color,w,kind\n1,red,1,cat\nNA,red,1,dog\n", "column 'size': missing"),
    "string": ("size,color,w,kind\nbig,red,1,cat\n", "column 'size': 'big' is not a number"),
    "negative-weight": ("size,color,w,kind\n1,red,-2,cat\n", "column 'w': sample weight -2"),
    "nan-weight": ("size,color,w,kind\n1,red,nan,cat\n", "column 'w': missing value"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_tables_exit_3_with_one_located_line(runner, tmp_path, case):
    text, needle = BAD_TABLES[case]
    (tmp_path / "pets.csv").write_text(text)
    (tmp_path / "c.yaml").write_text(TABLE_CONFIG % "")
    result = _run(runner, tmp_path, "train", str(tmp_path / "c.yaml"))
    assert result.exit_code == 3, result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "pets.csv" in message and needle in message


def test_unknown_category_in_validation_exits_3(runner, tmp_path):
    _pets(tmp_path, 12)
    (tmp_path / "val.csv").write_text("size,color,w,kind\n1,pink,1,cat\n")
    (tmp_path / "c.yaml").write_text((TABLE_CONFIG % "").replace(
        "validation_split: 0.25", "validation: {path: val.csv, target: kind}"))
    result = _run(runner, tmp_path, "train", str(tmp_path / "c.yaml"))
    assert result.exit_code == 3
    assert "val.csv" in result.output and "unknown category 'pink'" in result.output
    assert "'blue', 'green', 'red'" in result.output


def test_check_exits_2_on_a_bad_table_key(runner, tmp_path):
    (tmp_path / "c.yaml").write_text((TABLE_CONFIG % "").replace(
        "categorical: [color]", "categorical: {color: onehot}"))
    result = runner.invoke(main, ["check", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2
    assert "data.train.categorical.color" in result.output and "one_hot or index" in \
        result.output


def test_evaluate_reports_classes_by_their_names(runner, tmp_path):
    _pets(tmp_path)
    run = _train(runner, tmp_path)
    result = _run(runner, tmp_path, "evaluate", str(run), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads((run / "eval.json").read_text())["classification"]
    assert report["classes"] == ["bird", "cat", "dog"]
    assert [row["class"] for row in report["per_class"]] == ["bird", "cat", "dog"]
