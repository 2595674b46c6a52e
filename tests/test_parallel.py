"""Data parallelism over devices (fit.devices): 1 vs 4 forced CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from nnrun.cli.main import main

CONFIG = """\
name: dp
seed: 5
data:
  train: {builtin: blobs, samples: 500, classes: 4}
  validation_split: 0.2
model:
  input_shape: [2]
  layers:
    - Dense: {units: 32, activation: relu}
    - BatchNormalization: {}
    - Dropout: {rate: 0.1}
    - Dense: {units: 4, activation: softmax}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
fit: {batch_size: 32, epochs: 4}
"""

# Runs in a fresh interpreter: the device count is fixed when jax starts.
SCRIPT = textwrap.dedent("""\
    import io, json, sys
    from pathlib import Path
    import h5py, jax, numpy as np
    from nnrun import api
    from nnrun.train import streaming
    out = {"devices": len(jax.devices())}
    for name, sets in [("one", ["fit.devices=1"]), ("four", ["fit.devices=4"]),
                       ("all", []),
                       ("four_streamed", ["fit.devices=4", "data.stream=true",
                                          "data.train={path: d.h5}"]),
                       ("one_streamed", ["fit.devices=1", "data.stream=true",
                                         "data.train={path: d.h5}"])]:
        spec = api.load_checked(Path("dp.yaml"), sets)
        r = api.train(spec, runs_root=Path("runs"), quiet=True, stream=io.StringIO())
        info = json.loads((r.run_dir / "run.json").read_text())
        with h5py.File(r.run_dir / "checkpoints" / "last.h5") as f:
            w = {}
            f.visititems(lambda n, o: w.__setitem__(n, o[()].tolist())
                         if isinstance(o, h5py.Dataset) else None)
        out[name] = {"history": r.history, "weights": w,
                     "parallel": info["data_parallel"]}
    print("RESULT" + json.dumps(out))
    """)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    import numpy as np

    from nnrun.data.datasets import generate

    folder = tmp_path_factory.mktemp("dp")
    (folder / "dp.yaml").write_text(CONFIG)
    import h5py

    x, y = generate("blobs", 500, 5, classes=4)
    with h5py.File(folder / "d.h5", "w") as f:
        f["x"], f["y"] = x, y.astype(np.int32)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=folder, env=env, text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.rsplit("RESULT", 1)[1])


def _close(a, b, rtol=2e-5, atol=2e-6):
    import numpy as np

    for key in a["history"]:
        np.testing.assert_allclose(a["history"][key], b["history"][key], rtol=rtol,
                                   atol=atol, err_msg=key)
    assert a["weights"].keys() == b["weights"].keys()
    for key in a["weights"]:
        np.testing.assert_allclose(a["weights"][key], b["weights"][key], rtol=1e-4,
                                   atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_four_devices_give_the_one_device_curve(four_devices):
    assert four_devices["devices"] == 4
    assert four_devices["one"]["parallel"]["count"] == 1
    assert four_devices["four"]["parallel"]["count"] == 4
    assert four_devices["all"]["parallel"]["count"] == 4   # the default: every device
    _close(four_devices["four"], four_devices["one"])
    _close(four_devices["all"], four_devices["one"])


@pytest.mark.slow
def test_four_devices_streamed_give_the_one_device_curve(four_devices):
    assert four_devices["four_streamed"]["parallel"]["count"] == 4
    _close(four_devices["four_streamed"], four_devices["one_streamed"])
    _close(four_devices["one_streamed"], four_devices["one"], rtol=0, atol=0)


def _train(tmp_path, *sets):
    (tmp_path / "dp.yaml").write_text(CONFIG)
    args = ["train", str(tmp_path / "dp.yaml"), "--runs-dir", str(tmp_path / "runs")]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output
    return result


def test_more_devices_than_there_are_is_a_config_error(tmp_path):
    result = _train(tmp_path, "fit.devices=64")
    assert result.exit_code == 2, result.output
    assert "fit.devices: 64 devices asked" in result.output
    assert "xla_force_host_platform_device_count" in result.output
    assert not (tmp_path / "runs").exists()


def test_devices_must_be_all_or_a_positive_number(tmp_path):
    for bad in ("0", "two", "true"):
        result = _train(tmp_path, f"fit.devices={bad}")
        assert result.exit_code == 2 and "fit.devices" in result.output, result.output
