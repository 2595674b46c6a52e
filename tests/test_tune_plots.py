"""nnrun tune's pictures (nnrun/tune/plots.py) from synthetic trials, no training and no
optuna: the three PNGs are written whole, with no complete trial and without
importances too; the best-so-far line and the parallel axes' positions by hand."""

import math
import random
from pathlib import Path

import pytest
from PIL import Image

from nnrun.tune import plots
from nnrun.tune.plots import axis_position, axis_ticks, best_so_far, draw_plots, short_names

PNG = b"\x89PNG\r\n\x1a\n"
LR = {"key": "compile.optimizer.learning_rate", "kind": "loguniform", "values": [1e-4, 1e-1]}
UNITS = {"key": "layers.1.units", "kind": "int", "values": [16, 256]}
ACT = {"key": "layers.1.activation", "kind": "choice",
       "values": ["relu", "tanh", "a_very_long_activation_name"]}
SPACE = [LR, UNITS, ACT]
IMPORTANCES = {LR["key"]: 0.6, UNITS["key"]: 0.3, ACT["key"]: 0.1}
STATES = ["complete"] * 5 + ["pruned"] * 3 + ["failed"]


def trials(n: int = 30, seed: int = 0) -> list[dict]:
    """`n` trials of SPACE in mixed states (the last one still running, one complete
    trial with a NaN value), val_loss lowest near learning rate 3e-3 and many units."""
    rnd = random.Random(seed)
    rows = []
    for t in range(n):
        lr, units = 10 ** rnd.uniform(-4, -1), rnd.randint(16, 256)
        state = "running" if t == n - 1 else rnd.choice(STATES)
        value = abs(math.log10(lr) + 2.5) * 0.2 + 20 / units + rnd.random() * 0.05
        rows.append({"trial": t, "state": state,
                     "value": None if state in ("failed", "running") else value,
                     "params": {LR["key"]: lr, UNITS["key"]: units,
                                ACT["key"]: rnd.choice(ACT["values"])}})
    rows[1] = {**rows[1], "state": "complete", "value": math.nan}
    return rows


def assert_pngs(paths: list[Path], folder: Path) -> None:
    assert [p.name for p in paths] == ["history.png", "importances.png", "parallel.png"]
    for path in paths:
        assert path.parent == folder and path.is_file()
        data = path.read_bytes()
        assert data[:8] == PNG and len(data) > 5_000, path.name
        with Image.open(path) as image:
            image.verify()
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths)  # no
    # temporaries left behind


def test_three_pngs_of_a_search(tmp_path):
    paths = draw_plots(tmp_path, trials(), SPACE, "val_loss", "min", IMPORTANCES)
    assert_pngs(paths, tmp_path / "plots")
    again = draw_plots(tmp_path, trials(seed=1), SPACE, "val_loss", "min", IMPORTANCES)
    assert again == paths                     # drawn again over the old pictures


@pytest.mark.parametrize("rows", [[], [r for r in trials() if r["state"] != "complete"]],
                         ids=["no-trials", "none-complete"])
def test_no_complete_trial_and_no_importances(tmp_path, rows):
    paths = draw_plots(tmp_path, rows, SPACE, "val_accuracy", "max", None)
    assert_pngs(paths, tmp_path / "plots")


def test_one_dimension_one_complete_trial(tmp_path):
    rows = [{"trial": 0, "state": "complete", "value": 0.5, "params": {UNITS["key"]: 32}},
            {"trial": 1, "state": "pruned", "value": None, "params": {UNITS["key"]: 64}}]
    assert_pngs(draw_plots(tmp_path, rows, [UNITS], "loss", "min", {}), tmp_path / "plots")


def test_history_draws_the_best_so_far(tmp_path):
    fig = plots.history_figure(trials(), "val_loss", "min")
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    done = [r for r in trials() if r["state"] == "complete" and not math.isnan(r["value"])]
    best = min(r["value"] for r in done)
    assert f"complete ({len(done) + 1})" in labels              # the NaN one counted
    assert any(label.startswith("pruned (") for label in labels)
    assert f"best so far ({best:.4g})" in labels
    step = next(line for line in ax.get_lines() if line.get_label().startswith("best"))
    assert list(step.get_xdata())[-1] == 29 and list(step.get_ydata())[-1] == best


@pytest.mark.parametrize("mode, expected", [
    ("min", [math.nan, 3.0, 3.0, 1.0, 1.0, 1.0]),
    ("max", [math.nan, 3.0, 5.0, 5.0, 5.0, 5.0]),
])
def test_best_so_far(mode, expected):
    got = best_so_far([None, 3.0, 5.0, 1.0, math.nan, float("inf")], mode)
    assert len(got) == len(expected)
    assert all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(got, expected))


def test_best_so_far_of_nothing():
    assert best_so_far([], "min") == []
    assert all(math.isnan(v) for v in best_so_far([None, math.nan], "max"))


@pytest.mark.parametrize("dim, value, expected", [
    (LR, 1e-4, 0.0), (LR, 1e-1, 1.0), (LR, math.sqrt(1e-5), 0.5),   # log scale
    (UNITS, 136, 0.5), (UNITS, 16, 0.0), (UNITS, None, None), (UNITS, math.nan, None),
    (ACT, "relu", 0.0), (ACT, "tanh", 0.5), (ACT, "a_very_long_activation_name", 1.0),
    (ACT, "gelu", None),
    ({"key": "k", "kind": "choice", "values": [[64, 32], [128]]}, [128], 1.0),
    ({"key": "k", "kind": "choice", "values": ["only"]}, "only", 0.5),
])
def test_axis_position(dim, value, expected):
    got = axis_position(dim, value)
    assert got == expected if expected is None else got == pytest.approx(expected)


def test_axis_ticks_in_real_units():
    assert axis_ticks(LR) == [(0.0, "0.0001"), (0.5, "0.00316"), (1.0, "0.1")]
    assert axis_ticks(UNITS) == [(0.0, "16"), (0.5, "136"), (1.0, "256")]
    assert axis_ticks(ACT) == [(0.0, "relu"), (0.5, "tanh"), (1.0, "a_very_long…")]


def test_short_names():
    assert short_names([LR["key"], UNITS["key"]]) == ["learning_rate", "units"]
    assert short_names(["a.dense_1.units", "a.dense_2.units", "b.rate"]) == \
        ["dense_1.units", "dense_2.units", "rate"]
