"""`nnrun tune`: a seeded search is reproducible, resume after SIGINT gives the trials
of an uninterrupted search, pruning stops trials (counted), a trial trained in a group
equals its single run, and the tune directory's files and errors."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from test_sweep import assert_same_run, single_run

from nnrun.cli.main import main
from nnrun.config import faults
from nnrun.config.errors import EXIT_INTERRUPTED, ConfigError
from nnrun.tune.search import run_tune

CONFIG = """\
name: tn
seed: 0
data:
  train: {builtin: xor, samples: 160, seed: 5}
  validation_split: 0.25
model:
  layers:
    - Dense: {units: 6, input_dim: 2, activation: relu, name: hidden}
    - Dropout: 0.1
    - Dense: {units: 1, activation: sigmoid}
compile:
  optimizer: {name: sgd, learning_rate: 0.1, momentum: 0.9}
  loss: binary_crossentropy
  metrics: [accuracy]
fit:
  batch_size: 16
  epochs: 4
tune:
  metric: val_loss
  trials: 6
  batch: 3
  pruner: asha
  seed: 3
  space:
    compile.optimizer.learning_rate: {loguniform: [1.0e-3, 1.0]}
    model.layers[dropout].rate: {uniform: [0.05, 0.5]}
    model.layers[hidden].units: {choice: [6, 6, 8]}
"""


def write(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "tn.yaml"
    path.write_text(text.replace("[6, 6, 8]", "[6, 8]"), encoding="utf-8")
    return path


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted search, every finished trial's run directory kept."""
    tmp = tmp_path_factory.mktemp("tune")
    config = write(tmp)
    return config, run_tune(config, runs_root=tmp / "runs", keep=6, quiet=True)


def test_a_seeded_search_is_reproducible_and_its_files_agree(reference, tmp_path):
    config, ref = reference
    assert ref.exit_code == 0 and len(ref.rows) == 6
    again = run_tune(config, runs_root=tmp_path / "runs", keep=6, quiet=True)
    assert without_seconds(again.rows) == without_seconds(ref.rows)
    assert again.best == ref.best and ref.best is not None
    # the trials differ: a search, not one trial six times
    assert len({r["compile.optimizer.learning_rate"] for r in ref.rows}) == 6
    # trials.csv, tune.json, best.yaml and the study agree
    table = list(csv.DictReader(open(ref.tune_dir / "trials.csv")))
    assert [int(r["trial"]) for r in table] == list(range(6))
    assert [r["state"] for r in table] == [r["state"] for r in ref.rows]
    record = yaml.safe_load((ref.tune_dir / "tune.json").read_text())
    assert record["status"] == "finished" and record["best"] == ref.best
    import optuna

    study = optuna.load_study(study_name="nnrun-tune",
                              storage=f"sqlite:///{ref.tune_dir / 'study.db'}")
    assert study.best_trial.number == ref.best["trial"]
    assert study.best_value == pytest.approx(ref.best["value"])
    best = yaml.safe_load((ref.tune_dir / "best.yaml").read_text())
    assert "tune" not in best
    assert best["compile"]["optimizer"]["learning_rate"] == \
        ref.best["params"]["compile.optimizer.learning_rate"]
    assert best["model"]["layers"][1]["Dropout"]["rate"] == \
        ref.best["params"]["model.layers[dropout].rate"]
    for name in ("history.png", "importances.png", "parallel.png"):
        assert (ref.tune_dir / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pruning_stops_trials_and_they_are_counted(reference):
    _, ref = reference
    pruned = [r for r in ref.rows if r["state"] == "pruned"]
    assert pruned and ref.counts["pruned"] == len(pruned)
    assert all(r["epochs"] < 4 for r in pruned)
    assert all(r["epochs"] == 4 for r in ref.rows if r["state"] == "complete")
    assert sum(ref.counts[s] for s in ("complete", "pruned", "failed", "running")) == 6
    # a pruned trial's score is its last reported value, and its directory is gone
    assert all(r["val_loss"] is not None and r["run"] == "" for r in pruned)


def test_a_trial_of_a_group_equals_its_single_run(reference, tmp_path):
    config, ref = reference
    grouped = []
    for r in ref.rows:
        if r["state"] == "complete":
            info = yaml.safe_load((ref.tune_dir / r["run"] / "run.json").read_text())
            if info["sweep"]["group_size"] > 1:
                grouped.append(r)
    assert grouped, "no finished trial trained in a group of several"
    r = grouped[0]
    sets = (f"compile.optimizer.learning_rate={r['compile.optimizer.learning_rate']!r}",
            f"model.layers[dropout].rate={r['model.layers[dropout].rate']!r}",
            f"model.layers[hidden].units={r['model.layers[hidden].units']}")
    assert_same_run(ref.tune_dir / r["run"], single_run(config, sets, tmp_path / "single"))


def test_resume_after_sigint_gives_the_uninterrupted_trials(reference, tmp_path,
                                                             monkeypatch):
    config, ref = reference
    monkeypatch.setattr(faults, "_PLAN", ("epoch", 3, signal.SIGINT))
    monkeypatch.setattr(faults, "_seen", {})
    cut = run_tune(config, runs_root=tmp_path / "runs", keep=6, quiet=True)
    assert cut.exit_code == EXIT_INTERRUPTED
    assert cut.counts["running"] > 0
    assert yaml.safe_load((cut.tune_dir / "tune.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(faults, "_PLAN", None)
    done = run_tune(None, resume=cut.tune_dir, quiet=True)
    assert done.exit_code == 0 and done.tune_dir == cut.tune_dir
    assert without_seconds(done.rows) == without_seconds(
        [{**r, "run": r["run"]} for r in ref.rows])
    assert done.best == ref.best


def test_resume_refuses_a_changed_config_and_a_second_config(reference, tmp_path):
    config, ref = reference
    text = config.read_text()
    changed = tmp_path / "tn.yaml"
    changed.write_text(text)
    with pytest.raises(ConfigError, match="give only --resume DIR"):
        run_tune(changed, resume=ref.tune_dir)
    moved = tmp_path / "copy"
    shutil.copytree(ref.tune_dir, moved)
    record = yaml.safe_load((moved / "tune.json").read_text())
    record["config"] = str(changed)
    (moved / "tune.json").write_text(json.dumps(record))
    changed.write_text(text.replace("epochs: 4", "epochs: 5"))
    with pytest.raises(ConfigError, match=r"has changed since this search started \(at "
                                          r"fit.epochs\)"):
        run_tune(None, resume=moved)


def test_a_missing_optuna_is_a_config_error_saying_how_to_install_it(tmp_path, monkeypatch):
    config = write(tmp_path)
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ConfigError) as err:
        run_tune(config, runs_root=tmp_path / "runs")
    assert "pip install 'nnrun[tune]'" in err.value.message
    assert err.value.where.endswith("tn.yaml:18:1: tune")
    assert not (tmp_path / "runs").exists()


def test_cli_errors_and_json(tmp_path):
    runner = CliRunner()
    plain = tmp_path / "plain.yaml"
    plain.write_text(CONFIG.split("tune:")[0])
    out = runner.invoke(main, ["tune", str(plain), "--runs-dir", str(tmp_path / "runs")])
    assert out.exit_code == 2 and "has no tune: section" in out.output
    out = runner.invoke(main, ["tune"])
    assert out.exit_code == 2 and "give a CONFIG to search, or --resume DIR" in out.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(write(tmp_path).read_text().replace("metric: val_loss", "metric: val_acc"))
    out = runner.invoke(main, ["tune", str(bad), "--runs-dir", str(tmp_path / "runs"),
                               "--set", "tune.trials=1"])
    assert out.exit_code == 2, out.output
    assert "bad.yaml:19:11: tune.metric: " in out.output and "val_accuracy" in out.output
    assert not list((tmp_path / "runs").glob("*-tune-*"))   # nothing trained: nothing left


def test_grid_tries_every_combination_once_and_no_more(tmp_path):
    text = CONFIG.replace("trials: 6", "trials: 9").replace("pruner: asha", "pruner: none") \
        .replace("epochs: 4", "epochs: 1").replace("seed: 3\n", "seed: 3\n  sampler: grid\n") \
        .replace("{loguniform: [1.0e-3, 1.0]}", "{choice: [0.01, 0.1]}") \
        .replace("{uniform: [0.05, 0.5]}", "{choice: [0.1, 0.2]}")
    result = run_tune(write(tmp_path, text), runs_root=tmp_path / "runs", quiet=True)
    points = [(r["compile.optimizer.learning_rate"], r["model.layers[dropout].rate"],
               r["model.layers[hidden].units"]) for r in result.rows]
    assert sorted(points) == sorted((a, b, c) for a in (0.01, 0.1) for b in (0.1, 0.2)
                                    for c in (6, 8))
    assert result.counts == {"total": 8, "complete": 8, "pruned": 0, "failed": 0,
                             "running": 0}
