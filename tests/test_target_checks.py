"""Target values checked against the model's output before training: exit 3, one line."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from nnrun.cli.main import main

CONFIG = """\
name: labels
data:
  train: {path: x.npy, target: y.npy}
  validation: {path: x.npy, target: yv.npy}
model:
  layers:
    - Dense: {units: 3, activation: softmax}
compile: {loss: sparse_categorical_crossentropy}
fit: {epochs: 1}
"""


@pytest.fixture
def folder(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((40, 4), np.float32))
    np.save(tmp_path / "yv.npy", np.zeros(40, np.int32))
    (tmp_path / "c.yaml").write_text(CONFIG)
    return tmp_path


def _train(folder, *sets):
    args = ["train", str(folder / "c.yaml"), "--runs-dir", str(folder / "runs")]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("bad, needle", [
    (3, "class id 3 at row 7 is not an integer in 0..2 (the model's output has 3 classes)"),
    (-1, "class id -1 at row 7"),
    (1.5, "class id 1.5 at row 7"),
])
def test_sparse_class_ids_outside_the_output_exit_3(folder, bad, needle):
    y = np.zeros(40, np.float32 if isinstance(bad, float) else np.int32)
    y[7] = bad
    np.save(folder / "y.npy", y)
    result = _train(folder)
    assert result.exit_code == 3, result.output
    assert needle in result.output and "training targets" in result.output
    assert not (folder / "runs").exists()


def test_validation_targets_are_checked_too(folder):
    np.save(folder / "y.npy", np.zeros(40, np.int32))
    np.save(folder / "yv.npy", np.full(40, 9, np.int32))
    result = _train(folder)
    assert result.exit_code == 3 and "validation targets: class id 9 at row 0" in result.output


def test_binary_labels_outside_0_1_exit_3(folder):
    y = np.zeros((40, 1), np.float32)
    y[5] = 2.0
    np.save(folder / "y.npy", y)
    np.save(folder / "yv.npy", np.zeros((40, 1), np.float32))
    result = _train(folder, "model.layers=[{Dense: {units: 1, activation: sigmoid}}]",
                    "compile.loss=binary_crossentropy")
    assert result.exit_code == 3
    assert "2 at row 5 is outside 0..1" in result.output


def test_good_targets_train(folder):
    np.save(folder / "y.npy", np.arange(40, dtype=np.int32) % 3)
    result = _train(folder)
    assert result.exit_code == 0, result.output
