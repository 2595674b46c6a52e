"""How `nnrun train` ends and what it warns about first (issue 18, items 5-8): one best
epoch (best.h5's) in run.json, `nnrun runs`, `evaluate` and the finish lines; the
finish lines and their --json fields; the progress bar stopped where training stopped;
warnings of likely mistakes before epoch 1; the loss/target mismatch's fix."""

import io
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from nnrun.cli.main import main
from nnrun.data.arrays import Dataset
from nnrun.data.mistakes import likely_mistakes, shape_advice
from nnrun.runs.finish import finish_lines, next_commands
from nnrun.runs.report import EpochReporter

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def train(tmp_path, config, *args):
    result = CliRunner().invoke(main, ["train", str(config), "--runs-dir",
                                       str(tmp_path / "runs"), *args])
    assert "Traceback" not in result.output, result.output
    return result


def last_line(result) -> Path:
    return Path(result.output.strip().splitlines()[-1])


# ---------------------------------------------------------------- item 5: one best epoch

def test_early_stopped_run_has_one_best_epoch_everywhere(tmp_path):
    # EarlyStopping's min_delta makes its own reference epoch (47) differ from the
    # lowest val_loss (55): the run used to show 47 in run.json and 55 elsewhere.
    result = train(tmp_path, CONFIGS / "early_stopping.yaml")
    assert result.exit_code == 0, result.output
    run = last_line(result)
    info = json.loads((run / "run.json").read_text())
    with h5py.File(run / "checkpoints" / "best.h5") as f:
        h5_epoch, h5_value = int(f.attrs["epoch"]), float(f.attrs["value"])
    assert info["best"] == {"epoch": h5_epoch, "monitor": "val_loss", "value": h5_value}
    assert info["epochs_completed"] > h5_epoch   # it stopped early, after its best
    runs = CliRunner().invoke(main, ["runs", str(tmp_path / "runs"), "--json"])
    assert json.loads(runs.output)["runs"][0]["best_epoch"] == h5_epoch
    evaluated = CliRunner().invoke(main, ["evaluate", str(run), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["checkpoint_epoch"] == h5_epoch
    table = CliRunner().invoke(main, ["evaluate", str(run)])
    assert f"best (epoch {h5_epoch})" in table.output
    assert f"best epoch {h5_epoch} (by val_loss" in result.output
    # no other epoch is called "best": EarlyStopping's is its last improvement by min_delta
    assert not re.search(r"\bbest\b", info["stop_reason"].replace("restore_best_weights", ""))
    assert re.search(r"did not improve by more than min_delta=0\.0001 for the 10 epochs "
                     r"after epoch \d+", info["stop_reason"])


# ---------------------------------------------------------------- item 6: finish lines

def test_finish_lines_say_how_training_ended(tmp_path):
    result = train(tmp_path, CONFIGS / "early_stopping.yaml")
    lines = result.output.strip().splitlines()
    run = lines[-1]
    assert lines[-4].startswith("stopped early by EarlyStopping at epoch ")
    assert " of 200: val_loss did not improve" in lines[-4]
    assert "stopped after epoch" not in lines[-4]   # said once
    assert re.fullmatch(r"best epoch \d+ \(by val_loss, in checkpoints/best\.h5\): "
                        r"val_loss: \d\.\d{4} - val_mae: \d\.\d{4}", lines[-3])
    assert lines[-2] == f"next: nnrun evaluate {run}"


def test_finish_fields_with_json(tmp_path):
    result = train(tmp_path, CONFIGS / "early_stopping.yaml", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    run = Path(out["run_dir"])
    info = json.loads((run / "run.json").read_text())
    assert out["status"] == "finished" and out["outcome"] == "stopped_early"
    assert out["stopped_by"] == "EarlyStopping" and out["epochs"] == 200
    assert out["epochs_completed"] == info["epochs_completed"] < 200
    assert {k: out["best"][k] for k in ("epoch", "monitor", "value")} == info["best"]
    assert out["best"]["metrics"]["val_loss"] == pytest.approx(info["best"]["value"])
    assert set(out["best"]["metrics"]) == {"loss", "mae", "val_loss", "val_mae"}
    assert out["next"] == [f"nnrun evaluate {run}"] and out["warnings"] == []


def test_finish_lines_of_a_diverged_run(tmp_path):
    result = train(tmp_path, CONFIGS / "regression.yaml", "--set", "fit.epochs=30",
                   "--set", "fit.shuffle=false", "--set",
                   "compile.optimizer={name: sgd, learning_rate: 0.2, momentum: 0.9}")
    assert result.exit_code == 4, result.output
    lines = result.output.strip().splitlines()
    assert lines[-4] == "diverged: non-finite loss or metric at epoch 2; training stopped"
    assert lines[-3].startswith("best epoch 1 (by val_loss, in checkpoints/best.h5): ")
    assert lines[-2] == f"next: nnrun evaluate {lines[-1]}"
    info = json.loads((Path(lines[-1]) / "run.json").read_text())
    assert info["best"]["epoch"] == 1


def test_finish_lines_of_an_interrupted_run():
    summary = {"run_dir": "runs/a b", "status": "interrupted", "outcome": "interrupted",
               "stop_reason": "SIGINT after epoch 4", "stopped_by": None, "epochs": 10,
               "epochs_completed": 4, "best": {"epoch": 3, "monitor": "loss", "value": 0.5,
                                               "metrics": {"loss": 0.5, "acc": 0.75}},
               "next": ["nnrun train --resume 'runs/a b'", "nnrun evaluate 'runs/a b'"]}
    assert finish_lines(summary) == [
        "interrupted by SIGINT after epoch 4 of 10",
        "best epoch 3 (by loss, in checkpoints/best.h5): loss: 0.5000 - acc: 0.7500",
        "next: nnrun train --resume 'runs/a b' (or nnrun evaluate 'runs/a b')"]
    summary.update(stop_reason="SIGTERM before epoch 1", epochs_completed=0, best=None)
    assert finish_lines(summary)[:2] == ["interrupted by SIGTERM before epoch 1",
                                         "no epoch completed: no checkpoints/best.h5"]
    assert next_commands(Path("runs/a b"), "interrupted", None) == [
        "nnrun train --resume 'runs/a b'"]


def test_quiet_prints_the_run_directory_only(tmp_path):
    result = train(tmp_path, CONFIGS / "mlp.yaml", "--quiet", "--set", "fit.epochs=1")
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_progress_bar_ends_at_the_epoch_it_stopped():
    out = io.StringIO()
    reporter = EpochReporter(200, out, force_terminal=True)
    for epoch in (1, 2, 3):
        reporter.epoch_end(epoch, {"loss": 0.5}, 0.01)
    reporter.close("stopped_early", 3)
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())
    final = text.replace("\r", "\n").strip().splitlines()[-1]
    assert "3/200" in final and "stopped early" in final and "eta" not in final


# ---------------------------------------------------------------- item 7: warnings

def ds(x, y, **kw):
    return Dataset(np.asarray(x, np.float32), None if y is None else np.asarray(y), "t",
                   **kw)


def warn(train_ds, val_ds=None, loss="sparse_categorical_crossentropy", width=3,
         split="last", preprocess_x=False):
    return likely_mistakes(train_ds, val_ds, loss=loss, width=width, split=split,
                           preprocess_x=preprocess_x)


def test_warns_of_a_validation_split_of_a_file_sorted_by_class():
    x = np.random.default_rng(0).normal(size=(12, 2))
    notes = warn(ds(x[:9], [0, 0, 0, 0, 1, 1, 1, 1, 2]), ds(x[9:], [2, 2, 2]))
    assert notes == ["warning: validation_split took the last rows of the training data, "
                     "which are sorted by class: the validation rows hold only class 2; set "
                     "data.shuffle_split: true (or data.stratify: true)"]
    notes = warn(ds(x[:9], [0, 0, 0, 0, 1, 1, 1, 1, 1]), ds(x[9:], [2, 2, 2],),
                 split=None)
    assert notes[0].startswith("warning: the validation rows hold class 2 that no "
                               "training row has")
    # classes in every split, or a regression: nothing to say
    assert warn(ds(x[:9], [0, 1, 2] * 3), ds(x[9:], [2, 1, 0])) == []
    assert warn(ds(x[:9], np.arange(9) * 0.5), ds(x[9:], [9, 9, 9]), loss="mse",
                width=1) == []


def test_warns_of_features_on_different_scales():
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(0, 5000, 50), rng.normal(0, 1, 50)], axis=1)
    y = np.arange(50) % 3
    (note,) = warn(ds(x, y, encoding={"feature_names": ["income", "age"]}), split=None)
    assert note.startswith("warning: features have very different scales (column "
                           "'income' spreads")
    assert note.endswith("add data.preprocess: {x: standardize}")
    assert warn(ds(x, y), split=None, preprocess_x=True) == []
    assert warn(ds(x[:, 1:] * [[1.0]], y), split=None) == []
    assert warn(ds(np.stack([x[:, 1], x[:, 1] * 20], axis=1), y), split=None) == []


def test_warns_of_an_output_wider_than_the_classes():
    x = np.zeros((6, 2))
    (note,) = warn(ds(x, [0, 1, 0, 1, 0, 1]), width=10, split=None)
    assert note == ("warning: the output layer has 10 units but the targets have class ids "
                    "0..1; set the last layer's units to 2 (one per class)")
    assert warn(ds(x, [0, 1, 0, 1, 0, 1]), ds(x[:2], [2, 2]), width=3, split="shuffled") \
        == ["warning: the validation rows hold class 2 that no training row has: too few "
            "rows of that class to share; set data.stratify: true"]


def test_warnings_come_before_epoch_1_and_stay_in_run_json(tmp_path):
    rows = ["a,b,label"] + [f"{i * 1000.0},{i % 2}.5,{i // 10}" for i in range(30)]
    (tmp_path / "sorted.csv").write_text("\n".join(rows) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text("name: sorted\ndata:\n  train: {path: sorted.csv, target: label}\n"
                      "  validation_split: 0.2\nmodel:\n  layers:\n"
                      "    - Dense: {units: 3, activation: softmax}\n"
                      "compile: {optimizer: adam, loss: sparse_categorical_crossentropy}\n"
                      "fit: {epochs: 1, batch_size: 8}\n")
    result = train(tmp_path, config)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["warning:", "warning:", "Epoch"]
    assert "hold only class 2" in lines[0] and "column 'a'" in lines[1]
    info = json.loads((last_line(result) / "run.json").read_text())
    assert info["warnings"] == lines[:2]
    quiet = train(tmp_path, config, "--quiet")
    assert quiet.exit_code == 0 and "warning:" not in quiet.output


# ---------------------------------------------------------------- item 8: the fix

def test_class_ids_with_categorical_crossentropy_say_the_fix(tmp_path):
    result = train(tmp_path, CONFIGS / "multiclass.yaml", "--set",
                   "compile.loss=categorical_crossentropy")
    assert result.exit_code == 3, result.output
    assert "targets of shape (None,) do not fit the model output (None, 3) with loss " \
           "'categorical_crossentropy'" in result.output
    assert "use loss: sparse_categorical_crossentropy, or one-hot the targets with data: " \
           "{preprocess: {y: one_hot}}" in result.output
    assert "(2," not in result.output and "shapes=" not in result.output


@pytest.mark.parametrize("y_dims, out, loss, fix", [
    ((), (3,), "mean_squared_error", "for 3 classes use loss: sparse_categorical"),
    ((1,), (3,), "binary_crossentropy", "make the last layer 1 unit with sigmoid"),
    ((3,), (3,), "sparse_categorical_crossentropy", "use loss: categorical_crossentropy"),
    ((4,), (3,), "categorical_crossentropy", "make the last layer's units 4"),
    ((2, 2), (3,), "mean_squared_error", "expected targets of shape (None, 3)"),
])
def test_shape_advice(y_dims, out, loss, fix):
    advice = shape_advice(y_dims, out, loss)
    assert fix in advice and "(2," not in advice
