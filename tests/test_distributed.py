"""Two processes on localhost (loopback only), 2 forced CPU devices each, join one
distributed system (`distributed:`) and train one run: one run directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from nnrun.cli.main import main

CONFIG = """\
name: two
seed: 2
distributed:
  coordinator_address: localhost:{port}
  num_processes: 2
  process_id: ${{env:NNRUN_PROCESS_ID}}
data:
  train: {{builtin: moons, samples: 400}}
  validation_split: 0.25
model:
  input_shape: [2]
  layers:
    - Dense: {{units: 16, activation: tanh}}
    - Dense: {{units: 1, activation: sigmoid}}
compile: {{optimizer: adam, loss: binary_crossentropy, metrics: [accuracy]}}
fit: {{batch_size: 16, epochs: 3}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_one_run(tmp_path):
    (tmp_path / "two.yaml").write_text(CONFIG.format(port=_free_port()))
    procs = []
    for pid in (0, 1):
        env = {**os.environ, "NNRUN_PROCESS_ID": str(pid),
               "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "nnrun.cli", "train", "two.yaml", "--runs-dir", "runs"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("the two processes did not finish in 300 s")
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out
    assert "Epoch 3/3" in outputs[0] and "Epoch" not in outputs[1]   # process 0 prints
    runs = [p for p in (tmp_path / "runs").iterdir() if not p.is_symlink()]
    assert len(runs) == 1, runs
    info = json.loads((runs[0] / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["data_parallel"] == {"count": 4, "platform": "cpu", "processes": 2,
                                     "mesh": {"data": 4}}
    # the same config in one process on one device: the same curve (float32 rounding)
    text = (tmp_path / "two.yaml").read_text()
    head, rest = text.split("distributed:", 1)
    (tmp_path / "one.yaml").write_text(head + "data:" + rest.split("data:", 1)[1])
    result = CliRunner().invoke(main, ["train", str(tmp_path / "one.yaml"), "--runs-dir",
                                       str(tmp_path / "single")])
    assert result.exit_code == 0, result.output
    single = (tmp_path / "single" / "latest").resolve()
    rows = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    alone = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose([r[key] for r in rows], [r[key] for r in alone],
                                   rtol=2e-5, err_msg=key)


def test_distributed_section_is_checked(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "distributed: {coordinator_address: nohost, num_processes: 0, process_id: 3,"
        " rank: 1}\nmodel: {input_shape: [2], layers: [Dense: {units: 1}]}\n"
        "compile: {loss: mse}\n")
    result = CliRunner().invoke(main, ["check", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2, result.output
    for needle in ("distributed.coordinator_address: expected 'host:port'",
                   "distributed.num_processes: expected an integer >= 1",
                   "unknown key in distributed 'rank'"):
        assert needle in result.output, result.output
