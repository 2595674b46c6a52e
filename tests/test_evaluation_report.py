"""Issue 7's evaluation report and pictures: per-class precision/recall/F1 and the
confusion matrix against hand-computed values; eval.json, confusion_matrix.png and
learning_curves.png through the command line."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from nnrun.cli.main import main
from nnrun.runs.charts import curve_quantities, read_metrics
from nnrun.runs.classify import class_ids, classification_report, confusion_matrix, per_class

ROOT = Path(__file__).resolve().parents[1]


def test_binary_report_equals_hand_computed_values():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1], np.float32)
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.1, 0.2, 0.4, 0.7], np.float32).reshape(-1, 1)
    # predicted: 1 1 0 1 0 0 0 1 -> TP(1)=3, FN(1)=1, FP(1)=1, TN=3
    report = classification_report(y, p, "binary")
    assert report["confusion_matrix"] == [[3, 1], [1, 3]]
    for row in report["per_class"]:
        assert row["precision"] == pytest.approx(3 / 4)
        assert row["recall"] == pytest.approx(3 / 4)
        assert row["f1"] == pytest.approx(3 / 4)
        assert row["support"] == 4
    assert report["accuracy"] == pytest.approx(6 / 8)


def test_multiclass_report_equals_hand_computed_values():
    true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 1, 0, 1, 2, 2, 2, 0, 2])
    probs = np.eye(3, dtype=np.float32)[pred] * 0.8 + 0.05
    m = confusion_matrix(true, pred, 3)
    assert m.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    stats = per_class(m)
    # precision: column sums 3, 2, 4; recall: row sums 3, 2, 4
    np.testing.assert_allclose(stats["precision"], [2 / 3, 1 / 2, 3 / 4])
    np.testing.assert_allclose(stats["recall"], [2 / 3, 1 / 2, 3 / 4])
    f1 = [2 * p * r / (p + r) for p, r in zip([2 / 3, 1 / 2, 3 / 4], [2 / 3, 1 / 2, 3 / 4])]
    np.testing.assert_allclose(stats["f1"], f1)
    # sparse ids, sparse ids of shape (n, 1) and one-hot rows give the same report
    sparse = classification_report(true, probs, "multiclass")
    column = classification_report(true.reshape(-1, 1), probs, "multiclass")
    onehot = classification_report(np.eye(3)[true], probs, "multiclass")
    assert sparse == column == onehot
    assert sparse["confusion_matrix"] == m.tolist()
    assert sparse["averages"]["macro"]["f1"] == pytest.approx(np.mean(f1))
    weighted = (f1[0] * 3 + f1[1] * 2 + f1[2] * 4) / 9
    assert sparse["averages"]["weighted"]["f1"] == pytest.approx(weighted)


def test_a_class_never_predicted_scores_zero_not_nan():
    stats = per_class(confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 0]), 2))
    assert stats["precision"].tolist() == [1 / 3, 0.0]
    assert stats["recall"].tolist() == [1.0, 0.0]
    assert stats["f1"][1] == 0.0


def test_binary_ids_threshold_at_one_half():
    true, pred, n = class_ids(np.array([[0.0], [1.0]]), np.array([[0.5], [0.51]]), "binary")
    assert (true.tolist(), pred.tolist(), n) == ([0, 1], [0, 1], 2)


def test_curve_quantities_put_loss_first_and_pair_validation():
    cols = {"epoch": [1], "loss": [1], "accuracy": [1], "val_loss": [1],
            "val_accuracy": [1], "lr": [0.1]}
    assert curve_quantities(cols) == ["loss", "accuracy"]


def nnrun(runner, tmp_path, *args):
    result = runner.invoke(main, [*args, "--runs-dir", str(tmp_path / "runs")])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.mark.parametrize("config", ["mlp.yaml", "multiclass.yaml"])
def test_train_draws_curves_and_evaluate_writes_the_report(tmp_path, config):
    runner = CliRunner()
    result = nnrun(runner, tmp_path, "train", str(ROOT / "configs" / config),
                   "--set", "fit.epochs=2")
    assert result.exit_code == 0, result.output
    run = Path(result.output.strip().splitlines()[-1])
    curves = run / "plots" / "learning_curves.png"
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_metrics(run / "metrics.csv")["epoch"] == [1.0, 2.0]

    out = tmp_path / "again.png"
    result = nnrun(runner, tmp_path, "plot", str(run), "--curves", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000

    result = nnrun(runner, tmp_path, "evaluate", str(run), "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    saved = json.loads((run / "eval.json").read_text())
    assert printed == saved
    report = saved["classification"]
    classes = 2 if config == "mlp.yaml" else 3
    assert report["task"] == ("binary" if classes == 2 else "multiclass")
    assert np.array(report["confusion_matrix"]).shape == (classes, classes)
    assert np.sum(report["confusion_matrix"]) == saved["samples"]
    assert report["accuracy"] == pytest.approx(saved["accuracy"], abs=1e-6)
    assert (run / "plots" / "confusion_matrix.png").is_file()

    result = nnrun(runner, tmp_path, "evaluate", str(run))
    assert result.exit_code == 0, result.output
    assert "confusion matrix" in result.output and "precision" in result.output


def test_plot_without_output_or_curves_is_a_usage_error(tmp_path):
    result = nnrun(CliRunner(), tmp_path, "plot", str(ROOT / "configs" / "mlp.yaml"))
    assert result.exit_code == 2
    assert "--curves" in result.output


def test_regression_has_no_classification_report(tmp_path):
    runner = CliRunner()
    result = nnrun(runner, tmp_path, "train", str(ROOT / "configs" / "regression.yaml"),
                   "--set", "fit.epochs=1")
    assert result.exit_code == 0, result.output
    run = Path(result.output.strip().splitlines()[-1])
    result = nnrun(runner, tmp_path, "evaluate", str(run), "--json")
    assert result.exit_code == 0, result.output
    assert "classification" not in json.loads(result.output)
    assert not (run / "plots" / "confusion_matrix.png").exists()
