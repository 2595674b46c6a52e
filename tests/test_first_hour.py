"""Issue 18, a new user's first hour: wrong answers found in it (items 1-4). A config's
runs are those of exactly its name; predict writes one prediction per row in or says
why not; errors point at the --set or the file's row; `nnrun check` finds a missing
data file and a table column that is not in its header."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nnrun import api
from nnrun.cli.main import main
from nnrun.runs.rundir import latest_run_of

ROOT = Path(__file__).resolve().parents[1]
MLP = str(ROOT / "configs" / "mlp.yaml")


def nnrun(tmp_path, *args):
    runs = [] if args[0] == "check" else ["--runs-dir", str(tmp_path / "runs")]
    result = CliRunner().invoke(main, [*args, *runs])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory):
    """configs/mlp.yaml (xor-mlp) trained for one epoch: (folder, run)."""
    folder = tmp_path_factory.mktemp("first-hour")
    result = nnrun(folder, "train", MLP, "--set", "fit.epochs=1", "-q")
    assert result.exit_code == 0, result.output
    return folder, Path(result.output.strip().splitlines()[-1])


# ---------------------------------------------------------------- 1: a config's own runs


def _fake_run(root: Path, dirname: str, name: str | None, age: int) -> Path:
    run = root / dirname
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"name: {name or 'x'}\n")
    if name is not None:
        (run / "run.json").write_text(json.dumps({"name": name}))
    stamp = 1_700_000_000 - age
    os.utime(run, (stamp, stamp))
    return run


def test_a_config_takes_runs_of_exactly_its_name(tmp_path):
    root = tmp_path / "runs"
    old_style = _fake_run(root, "xor-mlp-20260101-120000", None, age=100)   # no name field
    wide = _fake_run(root, "xor-mlp-16-20260101-120100", "xor-mlp-16", age=50)
    _fake_run(root, "xor-mlp-16-20260101-120200", None, age=10)   # an old run of -16
    assert latest_run_of(root, "xor-mlp") == old_style   # not the newer xor-mlp-16 runs
    assert latest_run_of(root, "xor-mlp-16").name == "xor-mlp-16-20260101-120200"
    _, run = api.resolve_target(MLP, runs_root=root, need_run=True)
    assert run == old_style
    # run.json's name wins over the directory's (a copied or renamed run)
    (wide / "run.json").write_text(json.dumps({"name": "xor-mlp"}))
    assert latest_run_of(root, "xor-mlp") == wide


def test_run_json_records_the_config_name(xor_run):
    _, run = xor_run
    assert json.loads((run / "run.json").read_text())["name"] == "xor-mlp"


# ---------------------------------------------------------------- 2: predict, rows in = out


def test_predict_refuses_a_header_line_of_numbers(xor_run, tmp_path):
    folder, run = xor_run
    data = tmp_path / "p4.csv"
    data.write_text("0.1,0.9\n0.9,0.1\n0.2,0.3\n0.8,0.7\n")
    out = tmp_path / "p.csv"
    result = nnrun(folder, "predict", str(run), "-i", str(data), "-o", str(out))
    assert result.exit_code == 3, result.output
    assert "line 1 (0.1,0.9) holds only numbers" in result.output
    assert "--no-header" in result.output and not out.exists()
    result = nnrun(folder, "predict", str(run), "-i", str(data), "-o", str(out), "--no-header")
    assert result.exit_code == 0, result.output
    assert "wrote 4 predictions (binary)" in result.output and "(no header line)" in result.output
    assert len(out.read_text().splitlines()) == 1 + 4   # its own header, then a row per row
    result = nnrun(folder, "predict", str(run), "-i", str(data), "-o", str(out), "--header")
    assert result.exit_code == 0 and "wrote 3 predictions" in result.output   # asked for


def test_a_numeric_first_line_with_repeated_values_says_it_is_data(xor_run, tmp_path):
    folder, run = xor_run
    data = tmp_path / "corners.csv"
    data.write_text("0,0\n0,1\n1,0\n1,1\n")   # line 1's "names" repeat: no header at all
    result = nnrun(folder, "predict", str(run), "-i", str(data), "-o", str(tmp_path / "p.csv"))
    assert result.exit_code == 3, result.output
    assert "line 1 holds only numbers: a row of data" in result.output
    assert "--no-header" in result.output


def test_predict_with_a_header_line_says_so(xor_run, tmp_path):
    folder, run = xor_run
    data = tmp_path / "h.csv"
    data.write_text("a,b\n0.1,0.9\n0.9,0.1\n")
    result = nnrun(folder, "predict", str(run), "-i", str(data), "-o", str(tmp_path / "p.npy"))
    assert result.exit_code == 0, result.output
    assert f"wrote 2 predictions (binary) to {tmp_path / 'p.npy'}, one per row of {data} " \
           "below its header line" in result.output
    np.save(tmp_path / "x.npy", np.zeros((2, 2), np.float32))
    result = nnrun(folder, "predict", str(run), "-i", str(tmp_path / "x.npy"), "-o",
                   str(tmp_path / "q.npy"), "--no-header")
    assert result.exit_code == 2 and "--header/--no-header is for a .csv" in result.output


def test_predict_header_of_a_table_trained_run(tmp_path):
    rows = "\n".join(f"{i / 10},{1 - i / 10},{'yes' if i % 2 else 'no'}" for i in range(20))
    (tmp_path / "t.csv").write_text("a,b,label\n" + rows + "\n")
    (tmp_path / "t.yaml").write_text(
        "name: tab\ndata: {train: {path: t.csv, target: label}}\n"
        "model: {input_shape: [2], layers: [{Dense: {units: 2, activation: softmax}}]}\n"
        "compile: {loss: sparse_categorical_crossentropy}\nfit: {epochs: 1}\n")
    result = nnrun(tmp_path, "train", str(tmp_path / "t.yaml"), "-q")
    assert result.exit_code == 0, result.output
    run = result.output.strip().splitlines()[-1]
    (tmp_path / "q.csv").write_text("0.1,0.9\n0.9,0.1\n")
    out = str(tmp_path / "o.csv")
    result = nnrun(tmp_path, "predict", run, "-i", str(tmp_path / "q.csv"), "-o", out)
    assert result.exit_code == 3 and "holds only numbers" in result.output
    result = nnrun(tmp_path, "predict", run, "-i", str(tmp_path / "q.csv"), "-o", out,
                   "--no-header")   # columns by position: a, b (the target left out)
    assert result.exit_code == 0 and "wrote 2 predictions" in result.output, result.output
    (tmp_path / "r.csv").write_text("b,a\n0.9,0.1\n")   # by name, in any order
    result = nnrun(tmp_path, "predict", run, "-i", str(tmp_path / "r.csv"), "-o", out)
    assert result.exit_code == 0 and "wrote 1 predictions" in result.output, result.output


# ---------------------------------------------------------------- 3: errors point right


def test_an_unknown_key_of_a_set_is_located_at_the_set(tmp_path):
    result = nnrun(tmp_path, "check", MLP, "--set", "fitt.epochs=5")
    assert result.exit_code == 2
    assert "--set fitt.epochs=5: fitt: unknown key in the config 'fitt' (did you mean 'fit'?)" \
        in result.output
    assert "mlp.yaml:6:1" not in result.output   # the file's first key, before
    allowed = result.output.split("allowed: ")[1].split()
    assert "extends," in allowed and "vars," in allowed


CLASSES = """\
name: cls
data:
  train: {path: c.csv, target: label}
  validation_split: 0.2
model:
  input_shape: [2]
  layers: [{Dense: {units: 3, activation: softmax}}]
compile: {loss: sparse_categorical_crossentropy}
fit: {epochs: 1}
"""


@pytest.mark.parametrize("options, split", [
    (["--set", "data.shuffle_split=true"], "training"),
    (["--set", "data.shuffle_split=true", "--set", "data.stratify=true"], "training"),
    ([], "validation"),   # the last 40 rows
])
def test_a_bad_class_id_is_located_at_the_files_row(tmp_path, options, split):
    labels = np.arange(200) % 3
    labels[196] = 7   # the file's row 197, on line 198 (below the header)
    lines = [f"{i / 200},{i % 7},{c}" for i, c in enumerate(labels)]
    (tmp_path / "c.csv").write_text("a,b,label\n" + "\n".join(lines) + "\n")
    (tmp_path / "c.yaml").write_text(CLASSES)
    result = nnrun(tmp_path, "train", str(tmp_path / "c.yaml"), *options)
    assert result.exit_code == 3, result.output
    assert f"{split} targets: class id 7 at row 197 (line 198) is not an integer" \
        in result.output


# ---------------------------------------------------------------- 4: check finds data problems


def test_check_finds_a_missing_data_file(tmp_path):
    (tmp_path / "c.yaml").write_text(CLASSES)
    result = nnrun(tmp_path, "check", str(tmp_path / "c.yaml"))
    assert result.exit_code == 3, result.output
    assert f"c.yaml:3:17: data.train.path: file not found: {tmp_path / 'c.csv'}" \
        in result.output
    result = nnrun(tmp_path, "train", str(tmp_path / "c.yaml"))
    assert result.exit_code == 3 and "data.train.path: file not found" in result.output


def test_check_finds_a_column_not_in_the_header(tmp_path):
    (tmp_path / "c.csv").write_text("a,b,label\n1,2,0\n")
    (tmp_path / "c.yaml").write_text(CLASSES.replace("target: label", "target: lable"))
    result = nnrun(tmp_path, "check", str(tmp_path / "c.yaml"))
    assert result.exit_code == 3, result.output
    assert "c.yaml:3:32: data.train.target: no column 'lable' in the header of c.csv " \
           "(did you mean 'label'?); its columns: a, b, label" in result.output
    result = nnrun(tmp_path, "check", str(tmp_path / "c.yaml"), "--set",
                   "data.train={path: c.csv, target: 3, header: false}")
    assert result.exit_code == 3
    assert "data.train.target: no column 3 in c.csv: its first line has 3 cells" \
        in result.output
    fixed = nnrun(tmp_path, "check", str(tmp_path / "c.yaml"), "--set",
                  "data.train.target=label")
    assert fixed.exit_code == 0, fixed.output
