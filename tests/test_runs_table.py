"""`nnrun runs` fitted to a width (columns left out and named, never cut), its columns
and their order, the best epoch (`best_of`), `--runs-dir` on runs and diff, and
`nnrun diff`'s config rows (layers matched by name, defaults left out)."""

import json
from pathlib import Path

import h5py
import pytest
import yaml
from click.testing import CliRunner

from nnrun.cli.main import main
from nnrun.runs.config_diff import diff_configs
from nnrun.runs.runlist import best_of

HEADER = "epoch,loss,mae,val_loss,val_mae,lr"
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def make_run(root, name, rows, *, info=None, config=None, best_h5=None):
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config or {"name": name.split("-2")[0]}))
    (run / "run.json").write_text(json.dumps({
        "status": "finished", "epochs_completed": len(rows),
        "started": "2026-01-01T10:00:00+0000", "finished": "2026-01-01T10:01:05+0000",
        **(info or {})}))
    lines = [HEADER] + [f"{i + 1},{','.join(map(str, r))},0.01" for i, r in enumerate(rows)]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    if best_h5 is not None:
        with h5py.File(run / "checkpoints" / "best.h5", "w") as f:
            for key, value in best_h5.items():
                f.attrs[key] = value
    return run


ROWS = [(0.5, 0.6, 0.4, 0.7), (0.3, 0.5, 0.2, 0.45), (0.2, 0.4, 0.25, 0.5)]


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "sine-early-stopping-20261205-075104", ROWS)
    make_run(root, "xor-mlp-16-20261205-075101", ROWS[:2])
    return root


def invoke(*args, env=None):
    result = CliRunner().invoke(main, list(map(str, args)), env=env)
    assert "Traceback" not in result.output, result.output
    return result


def test_runs_at_80_columns_leaves_columns_out_and_names_them(root):
    result = invoke("runs", "--runs-dir", root, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 80
    assert "…" not in result.output
    assert "sine-early-stopping-20261205-075104" in result.output   # whole
    assert "finished" in result.output and "best val_loss" in result.output
    note = lines[-1]
    assert note.startswith("3 columns hidden: epochs, final_loss, time;"), note
    assert "--columns" in note
    assert "final loss" not in result.output


def test_runs_at_120_columns_shows_the_default_columns_in_order(root):
    result = invoke("runs", root, env={"COLUMNS": "120"})
    header = next(line for line in result.output.splitlines() if "name" in line)
    labels = ["name", "status", "epochs", "best epoch", "best val_loss", "final loss", "time"]
    positions = [header.index(label) for label in labels]
    assert positions == sorted(positions), header
    assert "hidden" not in result.output and "accuracy" not in result.output
    assert "1m05s" in result.output


def test_runs_piped_prints_every_chosen_column_whatever_the_width(root):
    result = invoke("runs", root, "--columns", "all", env={"COLUMNS": None})
    assert "hidden" not in result.output and "…" not in result.output
    header = next(line for line in result.output.splitlines() if "name" in line).split()
    at_best = header[header.index("best", header.index("epoch")) + 2:header.index("final")]
    metrics = [h for h in at_best if h in ("loss", "mae", "val_loss", "val_mae")]
    assert metrics == ["loss", "mae", "val_loss", "val_mae"]   # loss before val_loss


def test_columns_chosen_added_and_unknown(root):
    out = invoke("runs", root, "--columns", "name,val_mae,time", env={"COLUMNS": None}).output
    header = next(line for line in out.splitlines() if "name" in line).split()
    assert header == ["name", "val_mae", "time"]
    out = invoke("runs", root, "--columns", "+final_val_mae", env={"COLUMNS": None}).output
    assert "final val_mae" in out and "best val_loss" in out
    narrow = invoke("runs", root, "--columns", "name,val_mae,final_mae,monitor",
                    env={"COLUMNS": "60"}).output
    assert narrow.splitlines()[-1].startswith("2 columns hidden: final_mae, monitor")
    result = invoke("runs", root, "--columns", "val_maee")
    assert result.exit_code == 2 and "val_mae" in result.output
    rows = json.loads(invoke("runs", root, "--json", "--sort", "-time").output)["runs"]
    assert rows[0]["wall_seconds"] == 65   # `time` and `best` sort like their columns


def test_runs_takes_runs_dir_and_refuses_two_different_ones(root, tmp_path):
    result = invoke("runs", "--runs-dir", root, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["runs"]) == 2
    result = invoke("runs", root, "--runs-dir", tmp_path)
    assert result.exit_code == 2 and "--runs-dir" in result.output


def test_runs_json_has_every_field(root):
    row = json.loads(invoke("runs", root, "--json").output)["runs"][0]
    assert {"name", "status", "epochs", "best_epoch", "monitor", "best_value", "loss",
            "val_loss", "final_loss", "final_val_mae", "wall_seconds", "started"} <= set(row)


def test_best_of_reads_run_json_then_best_h5_then_metrics(tmp_path):
    recorded = make_run(tmp_path, "a", ROWS, best_h5={"epoch": 3},
                        info={"best": {"epoch": 1, "monitor": "val_mae", "value": 0.7}})
    assert best_of(recorded) == {"epoch": 1, "monitor": "val_mae", "value": 0.7}
    from_h5 = make_run(tmp_path, "b", ROWS, best_h5={"epoch": 3, "monitor": "val_mae",
                                                      "value": 0.49})
    assert best_of(from_h5) == {"epoch": 3, "monitor": "val_mae", "value": 0.5}  # the csv's
    plain = make_run(tmp_path, "c", ROWS)
    assert best_of(plain) == {"epoch": 2, "monitor": "val_loss", "value": 0.2}
    row = json.loads(invoke("runs", tmp_path, "--json").output)["runs"]
    by_name = {r["name"]: r for r in row}
    assert by_name["b"]["best_epoch"] == 3 and by_name["b"]["val_loss"] == 0.25
    assert by_name["b"]["final_loss"] == 0.2


def test_runs_with_different_monitors_say_which(tmp_path):
    make_run(tmp_path, "a", ROWS, best_h5={"epoch": 3, "monitor": "val_mae", "value": 0.5})
    make_run(tmp_path, "b", ROWS)
    out = invoke("runs", tmp_path, env={"COLUMNS": None}).output
    assert "0.5 (val_mae)" in out and "0.2 (val_loss)" in out


DENSE_DEFAULTS = {"activation": None, "use_bias": True, "kernel_initializer": "glorot_uniform",
                  "bias_initializer": "zeros", "kernel_regularizer": None,
                  "kernel_constraint": None, "bias_regularizer": None,
                  "bias_constraint": None, "activity_regularizer": None}


def test_diff_of_mlp_and_mlp_wide_shows_what_a_person_changed():
    mlp, wide = CONFIGS / "mlp.yaml", CONFIGS / "mlp_wide.yaml"
    result = invoke("diff", mlp, wide, "--json", env={"EPOCHS": None})
    assert result.exit_code == 0, result.output
    rows = {r["path"]: (r["old"], r["new"]) for r in json.loads(result.output)["config"]}
    assert rows == {
        "name": ("xor-mlp", "xor-mlp-16"),
        "model.layers[dense].units": (5, 16),
        "model.layers[dense].activation": (None, "relu"),
        "model.layers[activation]": ({"Activation": {"activation": "relu"}}, None),
        "model.layers[dense_1].activation": (None, "sigmoid"),
        "model.layers[activation_1]": ({"Activation": {"activation": "sigmoid"}}, None),
        "compile.optimizer.name": ("sgd", "adam"),
        "compile.optimizer.learning_rate": (0.1, 0.01),
        "fit.epochs": (100, 30)}
    text = invoke("diff", mlp, wide, env={"COLUMNS": "200"}).output
    assert "model.layers[dense].units" in text
    assert 'Activation(activation="relu")' in text and "final metrics" not in text


def test_diff_leaves_defaults_out_and_matches_layers_by_name():
    old = {"model": {"layers": [{"Dense": {"name": "hidden", "units": 8, **DENSE_DEFAULTS}},
                                {"Dense": {"name": "out", "units": 1}}]}}
    new = {"model": {"layers": [{"Dense": {"name": "hidden", "units": 8}},
                                {"Dropout": {"rate": 0.5}},
                                {"Dense": {"name": "out", "units": 1, "use_bias": True,
                                           "kernel_regularizer": "l2"}}]}}
    assert diff_configs(old, new) == [
        {"path": "model.layers[dropout]", "old": None, "new": {"Dropout": {"rate": 0.5}},
         "change": "added", "layer": True},
        {"path": "model.layers[out].kernel_regularizer", "old": None, "new": "l2",
         "change": "changed"}]


def test_diff_of_reordered_layers_and_a_changed_type():
    old = {"layers": [{"Dense": {"name": "a", "units": 2}}, {"Dense": {"name": "b", "units": 3}}]}
    new = {"layers": [{"Dense": {"name": "b", "units": 3}}, {"Conv1D": {"name": "a",
                                                                         "filters": 2,
                                                                         "kernel_size": 3}}]}
    rows = diff_configs(old, new)
    assert [r["path"] for r in rows] == ["layers[a]", "layers (order)"]
    assert rows[0]["old"] == {"Dense": {"units": 2}} and rows[1]["new"] == ["b", "a"]


def test_diff_takes_runs_dir_and_run_names(root, tmp_path):
    result = invoke("diff", "--runs-dir", root, "sine-early-stopping-20261205-075104",
                    "xor-mlp-16-20261205-075101", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["config"][0]["path"] == "name"
    assert out["metrics"]["loss"]["delta"] == pytest.approx(0.1)
    result = invoke("diff", "--runs-dir", root, "xor-mlp-16-20261205-075101",
                    CONFIGS / "mlp.yaml", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["metrics"] == {}   # a config has none to compare
    result = invoke("diff", "--runs-dir", root, "nope", "xor-mlp-16-20261205-075101")
    assert result.exit_code == 2 and "no such run" in result.output


def test_diff_reads_keras_1_names_and_shorthands_as_the_spec_does():
    old = {"layers": [{"Embedding": {"input_dim": 50, "output_dim": 16}},
                      {"Dense": {"output_dim": 3, "init": "glorot_uniform"}}, "Flatten",
                      {"Activation": "relu"}]}
    new = {"layers": [{"Embedding": {"input_dim": 50, "output_dim": 8}},
                      {"Dense": {"units": 3}}, {"Flatten": {}},
                      {"Activation": {"activation": "relu"}}]}
    assert diff_configs(old, new) == [{"path": "layers[embedding].output_dim", "old": 16,
                                       "new": 8, "change": "changed"}]
