"""The learning curves' helper process (nnrun/runs/curves_helper.py): the picture it
renders is the one drawn in-process, byte for byte; a helper that is gone or refuses
leaves the drawing to the main process; before the first epoch there is nothing to
draw, as in-process."""

from __future__ import annotations

import pytest

from nnrun.config.errors import ConfigError
from nnrun.runs import charts, curves_helper

METRICS = "epoch,loss,accuracy,val_loss,val_accuracy,lr\n" + "".join(
    f"{e},{1 / e:.6f},{0.5 + e / 40:.4f},{1.2 / e:.6f},{0.45 + e / 40:.4f},0.01\n"
    for e in range(1, 21))


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "r-20261206-000000"
    folder.mkdir()
    (folder / "metrics.csv").write_text(METRICS)
    return folder


@pytest.fixture(autouse=True)
def no_helper_left(monkeypatch):
    monkeypatch.setattr(curves_helper, "_helper", None)
    yield
    proc = curves_helper._helper
    if proc is not None:
        proc.kill()
        proc.wait()


def test_the_helpers_picture_is_the_one_drawn_here(run, tmp_path):
    curves_helper.start()
    written = curves_helper.plot_learning_curves(run)
    assert curves_helper._helper is None   # used, and ended
    here = charts.plot_learning_curves(run, tmp_path / "here.png")
    assert written.read_bytes() == here.read_bytes()
    assert written.read_bytes().startswith(b"\x89PNG")


def test_a_helper_that_is_gone_leaves_the_drawing_here(run, tmp_path):
    curves_helper.start()
    curves_helper._helper.kill()
    curves_helper._helper.wait()
    written = curves_helper.plot_learning_curves(run)
    here = charts.plot_learning_curves(run, tmp_path / "here.png")
    assert written.read_bytes() == here.read_bytes()


def test_before_the_first_epoch_the_helper_has_nothing_to_draw(run):
    (run / "metrics.csv").write_text(METRICS.splitlines()[0] + "\n")
    curves_helper.start()
    with pytest.raises(ConfigError, match="no epochs in metrics.csv yet"):
        curves_helper.plot_learning_curves(run)
    assert not (run / "plots" / charts.CURVES).exists()
