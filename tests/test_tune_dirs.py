"""Tune directories (`nnrun tune`'s runs/<name>-tune-<stamp>/) among runs: a row of
`nnrun runs` (trial counts, the best trial's values), and evaluate, predict, export...
(`resolve_target`) and diff given one use its best trial's run. Hand-made directories,
no training."""

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nnrun.api.training import resolve_target
from nnrun.cli.main import main
from nnrun.config.errors import ConfigError
from nnrun.runs import rundir
from nnrun.runs.runlist import list_runs, trials_text

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
HEADER = "epoch,loss,accuracy,val_loss,val_accuracy,lr"
ROWS = [(0.5, 0.6, 0.4, 0.7), (0.3, 0.8, 0.2, 0.93), (0.2, 0.9, 0.25, 0.85)]
COUNTS = {"total": 64, "complete": 40, "pruned": 20, "failed": 4, "running": 0}


def make_run(run, rows, *, name="xor-mlp", best=None):
    """A run directory as tests/test_runlist.py makes them; its config is configs/mlp.yaml
    (loadable: resolve_target checks it)."""
    (run / "checkpoints").mkdir(parents=True)
    config = yaml.safe_load((CONFIGS / "mlp.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "name": name}))
    (run / "run.json").write_text(json.dumps({
        "name": name, "status": "finished", "epochs_completed": len(rows),
        "started": "2026-12-05T10:00:00+0000", "finished": "2026-12-05T10:01:05+0000",
        **({"best": best} if best else {})}))
    lines = [HEADER] + [f"{i + 1},{','.join(map(str, r))},0.1" for i, r in enumerate(rows)]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


def make_tune(root, name="xor-mlp-tune-20261205-100000", *, best=True, status="finished",
              finished="2026-12-05T11:02:00+0000"):
    tune = root / name
    tune.mkdir(parents=True)
    record = {"kind": "tune", "name": "xor-mlp", "argv": ["nnrun", "tune", "x.yaml"],
              "config": "configs/x.yaml", "overrides": [], "metric": "val_accuracy",
              "mode": "max", "started": "2026-12-05T10:00:00+0000", "finished": finished,
              "status": status, "trials": COUNTS, "tune": {},
              "best": {"trial": 7, "run": "trials/trial-0007", "value": 0.93,
                       "params": {"compile.optimizer.learning_rate": 0.05}} if best else None}
    (tune / "tune.json").write_text(json.dumps(record))
    if best:
        make_run(tune / "trials" / "trial-0007", ROWS,
                 best={"epoch": 2, "monitor": "val_accuracy", "value": 0.93})
    return tune


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "runs"
    make_run(root / "xor-mlp-20261205-090000", ROWS[:2])
    make_tune(root)
    return root


def invoke(*args, env=None):
    result = CliRunner().invoke(main, list(map(str, args)), env=env)
    assert "Traceback" not in result.output, result.output
    return result


def test_a_tune_directory_is_a_row_with_its_trials_and_best_trial(root):
    rows = {r["name"]: r for r in list_runs(root)}
    tune = rows["xor-mlp-tune-20261205-100000"]
    assert tune["kind"] == "tune" and rows["xor-mlp-20261205-090000"]["kind"] == "run"
    assert tune["status"] == "tune finished"
    assert tune["trials"] == "64 (40 done, 20 pruned, 4 failed)"
    assert tune["monitor"] == "val_accuracy" and tune["best_value"] == 0.93
    assert tune["epochs"] == 3 and tune["best_epoch"] == 2   # the best trial's
    assert tune["val_loss"] == 0.2 and tune["final_loss"] == 0.2
    assert tune["wall_seconds"] == 3720 and tune["started"] == "2026-12-05T10:00:00+0000"
    assert tune["trial_counts"] == COUNTS and tune["best_trial"]["trial"] == 7
    assert "trials" not in rows["xor-mlp-20261205-090000"]


def test_trials_text_leaves_out_empty_states():
    assert trials_text({"total": 16, "complete": 3, "running": 2}) == "16 (3 done, 2 running)"
    assert trials_text({"total": 16, "complete": 0}) == "16 (none yet)"
    assert trials_text(None) is None


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"kind": "sweep"}', ""])
def test_a_corrupt_tune_json_is_a_row_of_status_unknown(tmp_path, text):
    make_run(tmp_path / "xor-mlp-20261205-090000", ROWS)
    (tmp_path / "xor-mlp-tune-20261205-100000").mkdir()
    (tmp_path / "xor-mlp-tune-20261205-100000" / "tune.json").write_text(text)
    rows = {r["name"]: r for r in list_runs(tmp_path)}
    bad = rows["xor-mlp-tune-20261205-100000"]
    assert bad["status"] == "unknown" and bad["kind"] == "tune"
    assert bad["trials"] is None and bad["best_value"] is None
    assert rows["xor-mlp-20261205-090000"]["status"] == "finished"
    result = invoke("runs", tmp_path, env={"COLUMNS": None})
    assert result.exit_code == 0 and "unknown" in result.output
    assert "trials" not in result.output   # no counts anywhere: no column


def test_runs_table_shows_the_tune_row_and_its_trials_column(root):
    result = invoke("runs", root, env={"COLUMNS": None})
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "name" in line).split()
    assert header[:3] == ["name", "status", "trials"]
    line = next(line for line in result.output.splitlines() if "-tune-" in line)
    assert "tune finished" in line and "64 (40 done, 20 pruned, 4 failed)" in line
    assert "0.93 (val_accuracy)" in line and "1h02m" in line
    narrow = invoke("runs", root, env={"COLUMNS": "80"}).output
    assert max(map(len, narrow.splitlines())) <= 80 and "…" not in narrow
    assert "trials" in narrow.split("columns hidden:")[1]   # left out, and named
    chosen = invoke("runs", root, "--columns", "name,trials", env={"COLUMNS": None}).output
    assert "64 (40 done" in chosen
    rows = json.loads(invoke("runs", root, "--json", "--sort", "-trial_counts").output)
    assert {r["kind"] for r in rows["runs"]} == {"run", "tune"}


def test_runs_of_a_tune_directory_lists_its_kept_trials(root):
    rows = json.loads(invoke("runs", root / "xor-mlp-tune-20261205-100000",
                             "--json").output)["runs"]
    assert [r["name"] for r in rows] == ["trial-0007"]


def test_resolve_target_of_a_tune_directory_is_its_best_trial(root):
    tune = root / "xor-mlp-tune-20261205-100000"
    spec, run = resolve_target(tune, need_run=True)
    assert run == (tune / "trials" / "trial-0007").resolve() and spec.name == "xor-mlp"
    assert rundir.tune_best_run(tune) == tune / "trials" / "trial-0007"
    # the tune directory is no run of xor-mlp (its name begins with the config's)
    assert rundir.latest_run_of(root, "xor-mlp").name == "xor-mlp-20261205-090000"
    assert rundir.latest_run_of(root, "xor-mlp-tune") is None


@pytest.mark.parametrize("status,hint", [("running", "wait"), ("interrupted", "--resume"),
                                         ("finished", "failed or was pruned")])
def test_a_tune_directory_without_a_finished_trial_is_a_config_error(tmp_path, status,
                                                                      hint):
    tune = make_tune(tmp_path, best=False, status=status, finished=None)
    with pytest.raises(ConfigError) as info:
        resolve_target(tune, need_run=True)
    assert info.value.exit_code == 2 and info.value.where == str(tune)
    assert "no finished trial in this tune directory" in info.value.message
    assert hint in info.value.message
    result = invoke("evaluate", tune)
    assert result.exit_code == 2 and "no finished trial" in result.output


def test_a_tune_directory_whose_best_trial_was_deleted_is_a_config_error(root):
    tune = root / "xor-mlp-tune-20261205-100000"
    import shutil

    shutil.rmtree(tune / "trials" / "trial-0007")
    with pytest.raises(ConfigError) as info:
        resolve_target(tune, need_run=True)
    assert info.value.exit_code == 2 and "trials/trial-0007 is gone" in info.value.message
    assert "best.yaml" in info.value.message
    row = next(r for r in list_runs(root) if r["kind"] == "tune")
    assert row["best_value"] == 0.93 and row["epochs"] is None   # the counts still show
    (tune / "tune.json").write_text("{")
    with pytest.raises(ConfigError, match="not a tune directory"):
        resolve_target(tune)


def test_diff_of_a_tune_directory_is_its_best_trials(root):
    result = invoke("diff", "--runs-dir", root, "xor-mlp-tune-20261205-100000",
                    "xor-mlp-20261205-090000", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["metrics"]["loss"]["a"] == 0.2   # the trial's final
