"""`nnrun runs` and `nnrun diff` through click's runner, on hand-made run directories."""

import json

import pytest
import yaml
from click.testing import CliRunner

from nnrun.cli.main import main
from nnrun.runs.config_diff import diff_configs


def make_run(root, name, *, lr, epochs, rows, status="finished"):
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    config = {"name": "xor", "seed": 0, "compile": {"optimizer": {"name": "sgd",
                                                                  "learning_rate": lr}},
              "model": {"layers": [{"Dense": {"units": 5}}, {"Dense": {"units": 1}}]},
              "fit": {"epochs": epochs}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "run.json").write_text(json.dumps({
        "status": status, "epochs_completed": len(rows),
        "started": "2026-01-01T10:00:00+0000", "finished": f"2026-01-01T10:0{len(rows)}:30+0000"}))
    lines = ["epoch,loss,accuracy,val_loss,val_accuracy,lr"]
    lines += [f"{i + 1},{r[0]},{r[1]},{r[2]},{r[3]},{lr}" for i, r in enumerate(rows)]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    a = make_run(root, "xor-a", lr=0.1, epochs=3,
                 rows=[(0.5, 0.6, 0.4, 0.7), (0.3, 0.8, 0.2, 0.9), (0.2, 0.9, 0.25, 0.85)])
    b = make_run(root, "xor-b", lr=0.5, epochs=2, rows=[(0.4, 0.7, 0.1, 0.95),
                                                        (0.35, 0.75, "nan", "nan")],
                 status="diverged")
    (root / "latest").symlink_to("xor-b")
    return root, a, b


def invoke(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    assert "Traceback" not in result.output, result.output
    return result


def test_runs_lists_best_epoch_and_sorts(runs):
    root, _, _ = runs
    result = invoke("runs", root, "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)["runs"]}
    assert set(rows) == {"xor-a", "xor-b"}   # latest is not listed twice
    assert rows["xor-a"]["best_epoch"] == 2 and rows["xor-a"]["val_loss"] == 0.2
    assert rows["xor-a"]["val_accuracy"] == 0.9 and rows["xor-a"]["epochs"] == 3
    assert rows["xor-a"]["wall_seconds"] == 3 * 60 + 30
    assert rows["xor-b"]["status"] == "diverged" and rows["xor-b"]["best_epoch"] == 1
    names = [r["name"] for r in json.loads(invoke("runs", root, "--json", "--sort",
                                                  "val_loss").output)["runs"]]
    assert names == ["xor-b", "xor-a"]
    names = [r["name"] for r in json.loads(invoke("runs", root, "--json", "--sort",
                                                  "-val_loss").output)["runs"]]
    assert names == ["xor-a", "xor-b"]
    table = invoke("runs", root)
    assert table.exit_code == 0
    assert "xor-a" in table.output and "diverged" in table.output and "3m30s" in table.output


def test_runs_errors(runs, tmp_path):
    root, _, _ = runs
    result = invoke("runs", root, "--sort", "val_los")
    assert result.exit_code == 2 and "val_loss" in result.output
    assert invoke("runs", tmp_path / "nowhere").exit_code == 2


def test_diff_shows_config_and_final_metric_differences(runs):
    _, a, b = runs
    result = invoke("diff", a, b, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    changes = {c["path"]: (c["old"], c["new"]) for c in out["config"]}
    assert changes == {"compile.optimizer.learning_rate": (0.1, 0.5), "fit.epochs": (3, 2)}
    assert out["metrics"]["loss"]["a"] == 0.2 and out["metrics"]["loss"]["b"] == 0.35
    assert out["metrics"]["loss"]["delta"] == pytest.approx(0.15)
    assert out["metrics"]["val_loss"]["b"] == "nan"   # JSON-safe
    text = invoke("diff", a, b).output
    assert "compile.optimizer.learning_rate" in text and "→ 0.5" in text
    assert invoke("diff", a, a).output.startswith("config: identical")


def test_diff_of_a_folder_that_is_no_run_is_a_usage_error(runs, tmp_path):
    _, a, _ = runs
    (tmp_path / "empty").mkdir()
    result = invoke("diff", a, tmp_path / "empty")
    assert result.exit_code == 2 and "not a run directory" in result.output


def test_config_diff_gives_dotted_paths_layers_by_name():
    old = {"model": {"layers": [{"Dense": {"units": 5}}]}, "seed": 0}
    new = {"model": {"layers": [{"Dense": {"units": 8}}]}, "seed": 0}
    assert diff_configs(old, new) == [{"path": "model.layers[dense].units", "old": 5,
                                       "new": 8, "change": "changed"}]
