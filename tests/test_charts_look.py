"""Issue 18 (items 11, 13): what the pictures and evaluate's lines look like. Learning
curves on a log axis when a quantity spans decades, the best epoch and an early stop
marked; model diagrams with activations and parameter counts that wrap a long model
into columns; titles and notes broken between words, never inside a path."""

import io
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from rich.console import Console

from nnrun.config.spec import spec_from_dict
from nnrun.nn.builder import build_model
from nnrun.runs import charts, diagram
from nnrun.runs.classify import classification_report
from nnrun.runs.report import classification_tables, data_line

# two_outputs.yaml's first epochs: cls_loss falls four decades, accuracy barely moves
METRICS = """epoch,loss,cls_loss,cls_accuracy,val_loss,val_cls_loss,val_cls_accuracy,lr
1,2.497,0.7914,0.856,0.156,0.00204,1.0,0.01
2,0.1188,0.000808,1.0,0.1011,0.000761,1.0,0.01
3,0.0973,0.000514,1.0,0.0907,0.00052,1.0,0.01
4,0.0872,0.000378,1.0,0.0806,0.000359,1.0,0.01
5,0.0790,0.000301,1.0,0.0810,0.000280,1.0,0.01
6,0.0720,0.000250,1.0,0.0820,0.000231,1.0,0.01
"""


def make_run(tmp_path: Path, info: dict | None = None, metrics: str = METRICS) -> Path:
    run = tmp_path / "run-1"
    run.mkdir()
    (run / "metrics.csv").write_text(metrics)
    if info is not None:
        (run / "run.json").write_text(json.dumps(info))
    return run


@pytest.fixture
def drawn(monkeypatch):
    """The figures plot_learning_curves / plot_confusion_matrix save (pyplot-free
    Figures: nothing to close)."""
    figures = []
    monkeypatch.setattr(charts, "save_figure", lambda fig, path: figures.append(fig))
    yield figures


def panels(fig) -> dict[str, object]:
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


def marks(ax) -> dict[str, float]:
    """label -> x of each vertical line of a panel."""
    return {line.get_label(): line.get_xdata()[0] for line in ax.get_lines()
            if len(set(line.get_xdata())) == 1 and not line.get_label().startswith("_")}


@pytest.mark.parametrize("values, log", [
    ([2.5, 0.12, 0.0001], True),
    ([0.23, 0.0015], True),              # xor-mlp's mse over 100 epochs
    ([0.31, 0.05], False),
    ([0.86, 1.0, 1.0], False),           # accuracy
    ([1.0, 0.0, 1e-5], False),           # a zero keeps the axis linear
    ([-1.0, 10.0, 1e3], False),
    ([math.nan, 1.0, math.inf, 1e-3], True),
    ([math.nan], False),
    ([], False),
])
def test_log_scale_when_the_positive_values_span_decades(values, log):
    assert charts.log_scale(values) is log


def test_a_quantity_spanning_decades_is_drawn_on_a_log_axis(tmp_path, drawn):
    charts.plot_learning_curves(make_run(tmp_path))
    axes = panels(drawn[0])
    assert axes["cls_loss"].get_yscale() == "log"
    assert "log scale" in axes["cls_loss"].get_ylabel()
    assert axes["loss"].get_yscale() == "log"
    assert axes["cls_accuracy"].get_yscale() == "linear"
    assert axes["cls_accuracy"].get_ylabel() == "cls_accuracy"


def test_zeros_and_nan_do_not_break_the_curves(tmp_path, drawn):
    metrics = "epoch,loss,val_loss\n1,1.0,nan\n2,0.0,0.5\n3,,0.001\n4,-0.5,inf\n"
    out = charts.plot_learning_curves(make_run(tmp_path, {}, metrics))
    assert out.name == "learning_curves.png"
    fig = drawn[0]
    fig.canvas.draw()
    assert panels(fig)["loss"].get_yscale() == "linear"   # a zero and a negative value


EARLY = {"status": "finished", "epochs_completed": 5,
         "stop_reason": "EarlyStopping: val_loss did not improve for 1 epochs "
                        "(best 0.0806 at epoch 4) (after epoch 5)",
         "best": {"epoch": 4, "monitor": "val_loss", "value": 0.0806}}


def test_the_best_epoch_and_the_early_stop_are_marked_on_every_panel(tmp_path, drawn):
    metrics = "\n".join(METRICS.splitlines()[:6]) + "\n"     # epochs 1-5
    charts.plot_learning_curves(make_run(tmp_path, EARLY, metrics))
    for ax in panels(drawn[0]).values():
        lines = marks(ax)
        assert lines == {"best: epoch 4, val_loss 0.0806": 4, "early stop: epoch 5": 5}
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend[-2:] == list(lines)


def test_the_best_epoch_from_best_h5_then_from_the_metrics(tmp_path):
    h5py = pytest.importorskip("h5py")
    columns = charts.read_metrics(make_run(tmp_path) / "metrics.csv")
    run = tmp_path / "run-1"
    # no run.json, no best.h5: the lowest val_loss (epoch 4 of 6)
    assert charts.best_epoch(run, {}, columns) == (4, "val_loss", 0.0806)
    (run / "checkpoints").mkdir()
    with h5py.File(run / "checkpoints" / "best.h5", "w") as f:
        f.attrs.update({"epoch": 3, "monitor": "val_cls_loss", "value": 0.00052})
    assert charts.best_epoch(run, {}, columns) == (3, "val_cls_loss", 0.00052)
    # run.json's record first
    assert charts.best_epoch(run, EARLY, columns) == (4, "val_loss", 0.0806)
    labels = [m.label for m in charts.curve_marks(run, columns)]
    assert labels == ["best: epoch 3, val_cls_loss 0.00052"]    # finished: no stop mark


@pytest.mark.parametrize("info, mark", [
    ({"status": "interrupted", "stop_reason": "SIGINT after epoch 3"},
     "interrupted: epoch 3"),
    ({"status": "diverged", "stop_reason": "non-finite loss or metric at epoch 6"},
     "diverged: epoch 6"),
    ({"status": "interrupted", "epochs_completed": 5,
      "stop_reason": "aborted by a second SIGTERM during epoch 9 (resume continues ...)"},
     "interrupted: epoch 6"),     # no later than the last epoch drawn
    ({"status": "finished", "stop_reason": "completed 6 epochs"}, None),
    ({"status": "running", "stop_reason": None}, None),
])
def test_a_stop_before_the_last_epoch_is_marked(tmp_path, info, mark):
    run = make_run(tmp_path, info)
    labels = [m.label for m in charts.curve_marks(run, charts.read_metrics(
        run / "metrics.csv"))]
    assert labels[0].startswith("best: epoch 4")
    assert labels[1:] == ([mark] if mark else [])


# ---------------------------------------------------------------- model diagrams


def built(model: dict):
    spec = spec_from_dict({"data": {"train": {"builtin": "xor", "samples": 10}},
                           "model": model, "compile": {"optimizer": "sgd", "loss": "mse"},
                           "fit": {"epochs": 1}})
    return build_model(spec.model, where=spec.where)


def sequential(n: int):
    layers = []
    for i in range(n):
        layers.append({"Dense": {"units": 32, "activation": "relu"}} if i % 2 == 0 else
                      {"BatchNormalization": {}} if i % 4 == 1 else {"Dropout": 0.1})
    return built({"input_shape": [8], "layers": layers})


def test_a_40_layer_sequential_model_wraps_into_columns(tmp_path):
    out = diagram.plot_model(sequential(40), tmp_path / "deep.png")
    width, height = Image.open(out).size
    assert height <= 1600, (width, height)
    assert width / height <= 3.5, (width, height)
    # every box inside the picture, no two overlapping, all the same size
    fig = diagram.diagram_figure(diagram.graph_nodes(sequential(40)))
    w, h = fig.get_size_inches()
    boxes = [p.get_bbox() for p in fig.axes[0].patches]
    assert len(boxes) == 41
    for b in boxes:
        assert 0 <= b.x0 and b.x1 <= w and 0 <= b.y0 and b.y1 <= h
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0
    columns = {round(b.x0, 3) for b in boxes}
    assert 3 <= len(columns) <= 8
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_short_model_stays_one_column(tmp_path):
    fig = diagram.diagram_figure(diagram.graph_nodes(sequential(4)))
    assert len({round(p.get_bbox().x0, 3) for p in fig.axes[0].patches}) == 1
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_boxes_show_the_activation_and_the_parameter_count():
    model = built({"input_shape": [4], "layers": [
        {"Dense": {"name": "hidden", "units": 8, "activation": "relu"}},
        {"BatchNormalization": {"name": "norm"}},
        {"Dense": {"name": "leaky", "units": 8,
                   "activation": {"name": "leaky_relu", "negative_slope": 0.1}}},
        {"Dense": {"name": "plain", "units": 2}},
        {"Activation": {"name": "act", "activation": "softmax"}}]})
    nodes = {n.name: n for n in diagram.graph_nodes(model)}
    about = {name: node.label(False)[1:] for name, node in nodes.items()}
    assert about["hidden"] == ["activation: relu · 40 params"]
    assert about["norm"] == ["32 params (16 non-trainable)"]
    assert about["leaky"] == ["activation: leaky_relu · 72 params"]
    assert about["plain"] == ["18 params"]                   # linear: no activation shown
    assert about["act"] == ["activation: softmax"]           # no parameters: no count
    assert about["input"] == []
    assert nodes["hidden"].label(True) == ["hidden: Dense", "activation: relu · 40 params",
                                           "input: (None, 4)", "output: (None, 8)"]
    dot = diagram.to_dot(list(nodes.values()))
    assert 'label="hidden: Dense\\nactivation: relu · 40 params\\ninput: (None, 4)' in dot


# ---------------------------------------------------------------- titles and notes

PATH = "/home/someone/projects/fruit-classifier/data/own/fruit_test.csv"


@pytest.mark.parametrize("width, short", [
    (80, PATH),
    (42, "…/fruit-classifier/data/own/fruit_test.csv"),
    (41, "…/data/own/fruit_test.csv"),
    (24, "…/own/fruit_test.csv"),
    (14, "…ruit_test.csv"),     # a last part alone too long: its end
])
def test_a_long_path_keeps_its_last_parts(width, short):
    assert charts.shorten_path(PATH, width) == short
    assert len(charts.shorten_path(PATH, width)) <= width


def test_titles_break_between_words_only():
    title = f"xor-mlp: test data, {PATH} checkpoint"
    lines = charts.wrap_title(title, 42).splitlines()
    assert lines == ["xor-mlp: test data,", "…/fruit-classifier/data/own/fruit_test.csv",
                     "checkpoint"]
    assert charts.wrap_title("two-outputs-20261205-075057: learning curves", 80) == \
        "two-outputs-20261205-075057: learning curves"


def test_the_confusion_matrix_title_fits_its_picture(tmp_path, drawn):
    charts.plot_confusion_matrix([[95, 5], [4, 96]], ["0", "1"], tmp_path / "cm.png",
                                 title=f"xor-mlp: test data, {PATH} checkpoint")
    fig = drawn[0]
    fig.canvas.draw()
    title = fig.axes[0].title
    box = title.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1
    assert "fruit_test.csv" in title.get_text()


def render(*parts, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False,
                      color_system=None)
    for part in parts:
        console.print(part)
    return console.file.getvalue()


def test_evaluate_names_its_data_on_one_line_and_the_matrix_note_whole(monkeypatch,
                                                                       tmp_path):
    import numpy as np

    from nnrun import api
    from nnrun.cli import main as cli

    report = classification_report(np.array([0, 1, 1, 0]), np.array([[0.2], [0.9], [0.4],
                                                                      [0.1]]), "binary")
    result = {"run": "/r", "data": "test", "source": PATH, "samples": 4,
              "checkpoint": "best", "loss": 0.25, "accuracy": 0.75,
              "classification": report}
    monkeypatch.setattr(api, "resolve_target", lambda *a, **k: (None, Path("/r")))
    monkeypatch.setattr(api, "evaluate", lambda *a, **k: dict(result))
    monkeypatch.setattr(cli, "configure_jax", lambda: None)
    out = CliRunner(env={"COLUMNS": "50"}).invoke(cli.main, ["evaluate", str(tmp_path)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == "test data: …/data/own/fruit_test.csv"
    assert "rows: true class, columns: predicted class" in lines
    # the note stays one phrase even where the matrix is narrow
    assert "rows: true class, columns: predicted class" in \
        render(*classification_tables(report), width=60).splitlines()
    assert render(data_line(result, 100), width=100).strip() == f"test data: {PATH}"


def test_learning_curves_and_confusion_matrix_draw_without_pyplot(tmp_path):
    """The run's pictures use matplotlib's object API: drawing them imports no pyplot
    (about 0.5 s of every nnrun train), checked in a fresh interpreter."""
    import subprocess
    import sys

    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,loss,val_loss,lr\n1,1.0,1.1,0.1\n2,0.5,0.7,0.1\n")
    code = ("import sys; from nnrun.runs import charts; "
            f"charts.plot_learning_curves({str(run)!r}); "
            f"charts.plot_confusion_matrix([[3, 1], [0, 4]], ['a', 'b'], {str(run / 'c.png')!r}); "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
    assert (run / "plots" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "c.png").read_bytes()[:4] == b"\x89PNG"
