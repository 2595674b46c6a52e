"""Data parallelism over devices (fit.devices): 1 vs 4 forced CPU devices; recurrent
layers run per device (nnrun/nn/rows.py); `nnrun train` makes CPU devices."""

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

# Recurrences, each run per device under data parallelism (shard_map): a masked
# Bidirectional GRU and an LSTM with recurrent dropout (the general lax.scan path),
# then two LSTMs without mask (the custom-gradient path, with and without sequences).
RNN_CONFIGS = {
    "masked": """\
name: dp-masked
seed: 5
data:
  train: {builtin: tokens, samples: 256, vocab: 20, length: 12, min_length: 3}
  validation_split: 0.25
model:
  layers:
    - Embedding: {input_dim: 20, output_dim: 8, input_length: 12, mask_zero: true}
    - Bidirectional: {layer: {GRU: {units: 6, return_sequences: true}}}
    - LSTM: {units: 6, recurrent_dropout: 0.2}
    - Dense: {units: 1, activation: sigmoid}
compile: {optimizer: adam, loss: binary_crossentropy, metrics: [accuracy]}
fit: {batch_size: 32, epochs: 3}
""",
    "plain": """\
name: dp-plain
seed: 5
data:
  train: {builtin: sequences, samples: 200, steps: 10}
  validation_split: 0.2
model:
  input_shape: [10, 1]
  layers:
    - LSTM: {units: 8, return_sequences: true}
    - SimpleRNN: {units: 4, return_sequences: true}
    - LSTM: {units: 8}
    - Dense: {units: 1, activation: sigmoid}
compile: {optimizer: rmsprop, loss: binary_crossentropy, metrics: [accuracy]}
fit: {batch_size: 16, epochs: 3}
""",
}

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
    from nnrun.nn import rows
    split_calls = []
    plain_shard_map = rows._shard_map
    def counted(*args):
        split_calls.append(1)
        return plain_shard_map(*args)
    rows._shard_map = counted
    for kind in ("masked", "plain"):
        for devices in (1, 4):
            del split_calls[:]
            spec = api.load_checked(Path(f"{kind}.yaml"), [f"fit.devices={devices}"])
            r = api.train(spec, runs_root=Path("runs"), quiet=True, stream=io.StringIO())
            with h5py.File(r.run_dir / "checkpoints" / "last.h5") as f:
                w = {}
                f.visititems(lambda n, o: w.__setitem__(n, o[()].tolist())
                             if isinstance(o, h5py.Dataset) else None)
            out[f"{kind}_{devices}"] = {"history": r.history, "weights": w,
                                        "split_calls": len(split_calls)}
    # what a layer's function sees inside the split: its device's rows only
    import jax.numpy as jnp
    from jax.sharding import Mesh
    mesh = Mesh(np.array(jax.devices()), ("data",))
    seen = []
    def fn(shared, x, m):
        seen.append([x.shape, m.shape])
        return x * shared, m.sum(-1)
    run = jax.jit(lambda x, m: rows.by_rows(fn, 2.0, (x, m), (1, 0), (1, 0)))
    with rows.split_over(mesh, "data"):
        y, s = run(jnp.arange(24.0).reshape(3, 8, 1), jnp.ones((8, 5)))
    y0, s0 = rows.by_rows(fn, 2.0, (jnp.arange(24.0).reshape(3, 8, 1), jnp.ones((8, 5))),
                          (1, 0), (1, 0))
    out["split"] = {"seen": seen, "y": y.tolist(), "s": s.tolist(), "y0": y0.tolist(),
                    "s0": s0.tolist()}
    print("RESULT" + json.dumps(out))
    """)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    import numpy as np

    from nnrun.data.datasets import generate

    folder = tmp_path_factory.mktemp("dp")
    (folder / "dp.yaml").write_text(CONFIG)
    for kind, text in RNN_CONFIGS.items():
        (folder / f"{kind}.yaml").write_text(text)
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


def _dense(r):
    assert r["devices"] == 4
    assert r["one"]["parallel"]["count"] == 1
    assert r["four"]["parallel"]["count"] == 4
    assert r["all"]["parallel"]["count"] == 4   # the default: every device
    _close(r["four"], r["one"])
    _close(r["all"], r["one"])


def _streamed(r):
    assert r["four_streamed"]["parallel"]["count"] == 4
    _close(r["four_streamed"], r["one_streamed"])
    _close(r["one_streamed"], r["one"], rtol=0, atol=0)


def _recurrences(r, kind):
    """Recurrences run per device (nnrun/nn/rows.py) and give the one-device curve."""
    one, four = r[f"{kind}_1"], r[f"{kind}_4"]
    assert one["split_calls"] == 0            # one device: the programs as before
    # three recurrences each (a Bidirectional is two), split in the training program
    # and in the validation program
    assert four["split_calls"] == 2 * 3, four["split_calls"]
    _close(four, one)


def _by_rows(r):
    """by_rows gives each device its rows."""
    split = r["split"]
    # traced once inside the split (8 rows over 4 devices: 2 each), once outside
    assert split["seen"] == [[[3, 2, 1], [2, 5]], [[3, 8, 1], [8, 5]]]
    assert split["y"] == split["y0"] and split["s"] == split["s0"]
    assert split["s"] == [5.0] * 8


@pytest.mark.slow
def test_four_devices_give_the_one_device_results(four_devices):
    """Every check of the 4-device subprocess, in one test: tests sharing the fixture
    could run on two xdist workers, each starting the subprocess (about 25 s). Each
    check runs; the failures are reported together, by name."""
    checks = {"dense": lambda: _dense(four_devices),
              "dense, streamed": lambda: _streamed(four_devices),
              **{f"recurrent, {kind}": (lambda kind=kind: _recurrences(four_devices, kind))
                 for kind in RNN_CONFIGS},
              "by_rows": lambda: _by_rows(four_devices)}
    failures = []
    for name, check in checks.items():
        try:
            check()
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n\n".join(failures)


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


def test_train_makes_the_cpu_devices_it_asks_for(tmp_path):
    """`nnrun train` with fit.devices: 2 and no XLA_FLAGS: JAX's CPU backend as 2
    devices where there are 2 cores (a process-level setting: a fresh process)."""
    (tmp_path / "dp.yaml").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-m", "nnrun.cli", "train", "dp.yaml", "--set", "fit.devices=2",
         "--set", "fit.epochs=1", "--runs-dir", "runs", "--json"],
        cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300)
    if (os.cpu_count() or 1) < 2:   # one core: not made; the check says how
        assert proc.returncode == 2, proc.stderr
        assert "xla_force_host_platform_device_count" in proc.stderr
        return
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = json.loads(proc.stdout)["run_dir"]
    info = json.loads((tmp_path / run_dir / "run.json").read_text())
    assert info["data_parallel"]["count"] == 2
    assert len(info["devices"]) == 2


def test_cpu_devices_are_made_only_where_they_can_be(monkeypatch):
    """`nnrun train`'s CPU devices: 2 up to the cores, not over an XLA_FLAGS count, and
    no error where JAX has started (the devices check then says how)."""
    from types import SimpleNamespace

    from nnrun.train import devices

    made = []

    def update(name, value):
        if fail:
            raise RuntimeError("jax_num_cpu_devices config should be updated before "
                               "backends are initialized")
        made.append((name, value))

    monkeypatch.setattr(devices, "jax", SimpleNamespace(config=SimpleNamespace(update=update)))
    cpu_devices = devices.make_cpu_devices
    fail = False
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    for n in (1, 2, 4, 5, 64):
        cpu_devices(n)
    assert made == [("jax_num_cpu_devices", 2), ("jax_num_cpu_devices", 4)]
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")
    cpu_devices(2)
    assert len(made) == 2
    monkeypatch.delenv("XLA_FLAGS")
    fail = True
    cpu_devices(2)   # a backend already started: left to the devices check
    assert len(made) == 2


def test_devices_must_be_all_or_a_positive_number(tmp_path):
    for bad in ("0", "two", "true"):
        result = _train(tmp_path, f"fit.devices={bad}")
        assert result.exit_code == 2 and "fit.devices" in result.output, result.output
