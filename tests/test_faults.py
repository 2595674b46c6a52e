"""Every exit is clean (issue 17): a process killed (SIGKILL) at any moment leaves a run
directory whose files all parse and that `--resume` finishes with the same checkpoints
and the same metrics.csv, byte for byte, as a run never stopped; SIGINT and SIGTERM at
start-up, mid-epoch and twice end with exit 130 and a run.json that says so; a failed
resume changes nothing; a full disk names the file; run files follow the umask.

The moments are named fault points (nnrun/config/faults.py, NNRUN_FAULT=POINT:N): the
process sends itself the signal the N-th time it passes the point. Checkpoints are
written after every epoch here (NNRUN_CHECKPOINT_SECONDS=0), so that each kill has a
checkpoint write of its own to interrupt.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from nnrun.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 8
CONFIG = f"""\
name: crash
seed: 3
data:
  train: {{builtin: xor, samples: 256}}
  validation_split: 0.25
model:
  input_shape: [2]
  layers:
    - Dense: {{units: 8, activation: tanh}}
    - Dense: {{units: 1, activation: sigmoid}}
compile: {{optimizer: adam, loss: binary_crossentropy, metrics: [accuracy]}}
fit:
  batch_size: 32
  epochs: {EPOCHS}
  callbacks: [{{ReduceLROnPlateau: {{patience: 1, factor: 0.5}}}}]
"""
# An epoch of seconds: for signals that must land inside one.
SLOW = """\
name: slow
data:
  train: {builtin: xor, samples: 60000}
model:
  input_shape: [2]
  layers:
    - Dense: {units: 512, activation: relu}
    - Dense: {units: 512, activation: relu}
    - Dense: {units: 1, activation: sigmoid}
compile: {optimizer: adam, loss: binary_crossentropy}
fit: {batch_size: 16, epochs: 50}
"""


@pytest.fixture(autouse=True)
def every_epoch(monkeypatch):
    monkeypatch.setenv("NNRUN_CHECKPOINT_SECONDS", "0")


def nnrun(folder: Path, *args: str, fault: str | None = None, config: str = CONFIG,
          wait: bool = True):
    """`nnrun train c.yaml --runs-dir runs ARGS` as its own process (a kill must not
    take the test with it); with `fault`, NNRUN_FAULT set."""
    (folder / "c.yaml").write_text(config)
    env = {**os.environ, "NNRUN_CHECKPOINT_SECONDS": "0"}
    env.pop("NNRUN_FAULT", None)
    if fault:
        env["NNRUN_FAULT"] = fault
    proc = subprocess.Popen(
        [sys.executable, "-m", "nnrun.cli", "train", *(args or ("c.yaml",)),
         "--runs-dir", "runs"], cwd=folder, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def resume(run: Path):
    """`nnrun train --resume RUN`, in this process: (exit code, output)."""
    result = CliRunner().invoke(main, ["train", "--resume", str(run), "--runs-dir",
                                       str(run.parent)])
    return result.exit_code, result.output


def runs_in(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "runs").glob("*") if p.name != "latest")


def the_run(folder: Path) -> Path:
    runs = runs_in(folder)
    assert len(runs) == 1, runs
    return runs[0]


def clean(output: str) -> None:
    assert "Traceback" not in output and "unexpected" not in output, output


def checkpoint(path: Path) -> dict:
    """Everything a checkpoint holds: each dataset and each attribute, by path."""
    out = {}
    with h5py.File(path, "r") as f:
        out.update({f"@{k}": f.attrs[k] for k in f.attrs})
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def same_checkpoint(a: Path, b: Path) -> None:
    left, right = checkpoint(a), checkpoint(b)
    assert sorted(left) == sorted(right), (a, b)
    for key in left:
        if isinstance(left[key], np.ndarray):
            assert left[key].dtype == right[key].dtype and \
                np.array_equal(left[key], right[key]), (b, key)
        else:
            assert left[key] == right[key], (b, key, left[key], right[key])


def every_file_opens(run: Path) -> list[str]:
    """Each file of the run parsed as what it is; returns the temporary files (the
    half-written `.NAME.XXXX.tmp` a kill may leave, which `--resume` removes)."""
    temporaries = []
    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            temporaries.append(path.name)
        elif path.suffix == ".json":
            assert isinstance(json.loads(path.read_text()), dict), path
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif path.suffix == ".csv":
            rows = list(csv.reader(path.open(newline="")))
            assert rows and all(len(r) == len(rows[0]) for r in rows), path
        elif path.suffix == ".yaml":
            assert isinstance(yaml.safe_load(path.read_text()), dict), path
        elif path.suffix == ".h5":
            checkpoint(path)
        elif path.suffix == ".png":
            import matplotlib.image
            assert matplotlib.image.imread(path).ndim == 3, path
        else:
            assert path.suffix == ".txt", path
            path.read_text()
    return temporaries


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The run never stopped."""
    folder = tmp_path_factory.mktemp("reference")
    code, out = nnrun(folder)
    assert code == 0, out
    return the_run(folder)


def same_as_reference(run: Path, reference: Path) -> None:
    for name in ("last.h5", "best.h5"):
        same_checkpoint(reference / "checkpoints" / name, run / "checkpoints" / name)
    assert (run / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["epochs_completed"] == EPOCHS
    assert not every_file_opens(run)   # no temporary file left behind


# ---------------------------------------------------------------- SIGKILL at any moment

# metrics.csv is written when the log opens (its header) and after each epoch;
# last.h5 before epoch 1 (the initial weights) and after each epoch; run.json when the
# run starts, when a resume starts and when training ends.
KILLS = [
    "write run.json:1",      # the run's files written, run.json half: no checkpoint yet
    "h5 last.h5:1",          # the initial weights half-written
    "compile:1",             # everything written, before the first epoch
    "epoch:3",               # between epochs
    "write metrics.csv:4",   # epoch 3's row about to be appended
    "write metrics.jsonl:2",
    "h5 last.h5:5",          # epoch 4's checkpoint half-written
    "h5 best.h5:3",
    "write run.json:2",      # training ended, its run.json half-written
]


@pytest.mark.parametrize("fault", KILLS)
def test_a_kill_at_any_moment_resumes_to_the_same_run(tmp_path, reference, fault):
    code, out = nnrun(tmp_path, fault=fault)
    assert code == -signal.SIGKILL, out
    run = the_run(tmp_path)
    every_file_opens(run)
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() \
        else None
    assert info is None or info["status"] == "running"
    code, out = resume(run)
    clean(out)
    assert code == 0, out
    same_as_reference(run, reference)
    assert json.loads((run / "run.json").read_text())["resumed"][0]["from_epoch"] >= 0


def test_a_kill_while_the_curves_are_drawn_leaves_a_finished_run(tmp_path, reference):
    code, out = nnrun(tmp_path, fault="write learning_curves.png:1")
    assert code == -signal.SIGKILL, out
    run = the_run(tmp_path)
    assert every_file_opens(run) == [next((run / "plots").glob(".*.tmp")).name]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    for name in ("last.h5", "best.h5"):
        same_checkpoint(reference / "checkpoints" / name, run / "checkpoints" / name)
    result = CliRunner().invoke(main, ["plot", str(run), "--curves"])
    assert result.exit_code == 0, result.output
    every_file_opens(run)
    assert (run / "plots" / "learning_curves.png").is_file()


@pytest.mark.parametrize("fault", ["start:1", "run-dir:1", "write config.yaml:1"])
def test_a_kill_before_the_run_has_its_config_leaves_no_run_to_point_at(tmp_path, fault):
    code, out = nnrun(tmp_path, fault=fault)
    assert code == -signal.SIGKILL, out
    assert not (tmp_path / "runs" / "latest").exists()   # nothing points at it
    for run in runs_in(tmp_path):   # at most an empty directory (and a temporary file)
        assert every_file_opens(run) == [p.name for p in run.rglob("*") if p.is_file()]
        code, out = resume(run)
        clean(out)
        assert code == 2 and "not a run directory (no config.yaml in it)" in out, out


def test_two_kills_and_two_resumes(tmp_path, reference):
    nnrun(tmp_path, fault="h5 last.h5:3")
    run = the_run(tmp_path)
    env = {**os.environ, "NNRUN_FAULT": "write metrics.csv:3"}
    proc = subprocess.run([sys.executable, "-m", "nnrun.cli", "train", "--resume", str(run)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    every_file_opens(run)
    code, out = resume(run)
    assert code == 0, out
    same_as_reference(run, reference)
    assert [r["from_epoch"] for r in json.loads((run / "run.json").read_text())["resumed"]] \
        == [1, 2]


# ---------------------------------------------------------------- SIGINT / SIGTERM

@pytest.mark.parametrize("sig", ["INT", "TERM"])
def test_a_signal_before_the_run_exists_exits_130_at_once(tmp_path, sig):
    code, out = nnrun(tmp_path, fault=f"start:1:{sig}")
    assert code == 130, out
    assert f"SIG{sig} received before the run started: stopping" in out
    assert not runs_in(tmp_path)


@pytest.mark.parametrize("fault, stopped_after", [
    ("compile:1:TERM", 0),   # start-up: the run exists, no epoch trained yet
    ("epoch:4:INT", 4),      # while epoch 4 trains: it ends, then training stops
])
def test_a_signal_stops_at_an_epoch_boundary_and_resumes(tmp_path, reference, fault,
                                                         stopped_after):
    code, out = nnrun(tmp_path, fault=fault)
    assert code == 130, out
    clean(out)
    run = the_run(tmp_path)
    info = json.loads((run / "run.json").read_text())
    name = "SIG" + fault.rsplit(":", 1)[1]
    assert info["status"] == "interrupted" and info["epochs_completed"] == stopped_after
    assert info["stop_reason"] == (f"{name} before epoch 1" if stopped_after == 0
                                   else f"{name} after epoch {stopped_after}")
    assert not every_file_opens(run)
    code, out = resume(run)
    assert code == 0, out
    same_as_reference(run, reference)


def _started(proc, run_folder: Path, timeout: float = 120) -> Path:
    """The run directory, once the process is inside its first epoch (metrics.csv has
    its header: the log is open, training has begun)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        runs = [p for p in run_folder.glob("slow-*") if (p / "metrics.csv").exists()]
        if runs:
            return runs[0]
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    raise AssertionError("training did not start")


@pytest.mark.parametrize("second", ["INT", "TERM"])
def test_a_second_signal_aborts_mid_epoch_within_a_second(tmp_path, second):
    proc = nnrun(tmp_path, config=SLOW, wait=False)
    try:
        run = _started(proc, tmp_path / "runs")
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert proc.poll() is None   # the first one waits for the epoch to end
        proc.send_signal(getattr(signal, f"SIG{second}"))
        sent = time.monotonic()
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert took < 1.0, took
    clean(out)
    assert "stopping after this epoch" in out
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted", info
    assert info["stop_reason"].startswith(f"aborted by a second SIG{second} during epoch 1")
    every_file_opens(run)
    with h5py.File(run / "checkpoints" / "last.h5") as f:   # the initial weights
        assert f.attrs["epoch"] == 0


# ---------------------------------------------------------------- item 1: never exit 134

def _damaged(run: Path, how: str) -> None:
    path = run / "checkpoints" / "last.h5"
    if how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(4096))
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    else:
        (run / "run.json").write_text(how)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run stopped by SIGINT after epoch 3 (each test damages its own copy)."""
    folder = tmp_path_factory.mktemp("interrupted")
    code, out = nnrun(folder, fault="epoch:3:INT")
    assert code == 130, out
    return the_run(folder)


@pytest.mark.parametrize("how, code_wanted", [
    ("empty", 3), ("garbage", 3), ("truncated", 3), ("{not json", 2), ("[1, 2]", 2)])
def test_a_failed_resume_exits_cleanly_and_changes_nothing(tmp_path, interrupted, how,
                                                           code_wanted):
    import shutil

    run = tmp_path / "runs" / interrupted.name
    shutil.copytree(interrupted, run)
    _damaged(run, how)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    # its own process, as a user runs it: exit 134 (an abort) came from background
    # compile threads alive at exit, which a test process would not show
    code, out = nnrun(tmp_path, "--resume", str(run))
    clean(out)
    assert code == code_wanted, out
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resuming_a_finished_run_with_a_cold_cache_exits_2(tmp_path, reference):
    import shutil

    run = tmp_path / "runs" / reference.name
    shutil.copytree(reference, run)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}   # cold
    proc = subprocess.run([sys.executable, "-m", "nnrun.cli", "train", "--resume", str(run)],
                          env={**env, "NNRUN_NO_COMPILE_CACHE": "1"}, capture_output=True,
                          text=True, timeout=300)
    clean(proc.stdout + proc.stderr)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "the run finished (" in proc.stderr


# ---------------------------------------------------------------- item 8: a full disk

class DiskFull:
    """Writing `name` failing with ENOSPC from its n-th write on (a file replaced whole,
    or a row appended)."""

    def __init__(self, monkeypatch, name: str, n: int):
        import nnrun.config.files as files

        self.left = n
        real, real_write = files.os.replace, files._write

        def full(path) -> bool:
            if Path(path).name == name:
                self.left -= 1
                return self.left <= 0
            return False

        def replace(src, dst):
            if full(dst):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
            return real(src, dst)

        def write(path, fd, data):
            if full(path):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real_write(path, fd, data)

        monkeypatch.setattr(files.os, "replace", replace)
        monkeypatch.setattr(files, "_write", write)


@pytest.mark.parametrize("name, n", [("last.h5", 4), ("metrics.csv", 3)])
def test_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch,
                                                                  name, n):
    (tmp_path / "c.yaml").write_text(CONFIG)
    DiskFull(monkeypatch, name, n)
    result = CliRunner().invoke(main, ["train", str(tmp_path / "c.yaml"), "--runs-dir",
                                       str(tmp_path / "runs")])
    clean(result.output)
    assert result.exit_code == 3, result.output
    run = the_run(tmp_path)
    assert f"{run / ('checkpoints' if name.endswith('.h5') else '') / name}" in result.output
    assert "the disk is full (no space left on device)" in result.output
    with h5py.File(run / "checkpoints" / "last.h5") as f:   # the last good one, whole
        assert f.attrs["epoch"] == n - 2   # metrics.csv is written before last.h5
    assert not every_file_opens(run)


# ---------------------------------------------------------------- item 10: the umask

@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_run_files_follow_the_umask(tmp_path, umask):
    (tmp_path / "c.yaml").write_text(CONFIG)
    old = os.umask(umask)
    try:
        import nnrun.config.files as files
        files._MODE = None
        result = CliRunner().invoke(main, ["train", str(tmp_path / "c.yaml"), "--runs-dir",
                                           str(tmp_path / "runs")])
    finally:
        os.umask(old)
        files._MODE = None
    assert result.exit_code == 0, result.output
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777
             for p in the_run(tmp_path).rglob("*")}
    assert len(modes) > 10
    for path, mode in modes.items():
        wanted = (0o777 if (tmp_path / path).is_dir() else 0o666) & ~umask
        assert mode == wanted, (path, oct(mode))


# ---------------------------------------------------------------- a reader that goes away

def test_a_closed_pipe_drops_the_output_and_training_finishes(tmp_path):
    # `nnrun train c.yaml | head -1`: was "unexpected BrokenPipeError", exit 1, run failed
    (tmp_path / "c.yaml").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if k != "NNRUN_CHECKPOINT_SECONDS"}
    proc = subprocess.Popen([sys.executable, "-m", "nnrun.cli", "train", "c.yaml",
                             "--runs-dir", "runs", "--set", "fit.epochs=400"],
                            cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().startswith("Epoch 1/")
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and err == "", err
    info = json.loads((the_run(tmp_path) / "run.json").read_text())
    assert info["status"] == "finished" and info["epochs_completed"] == 400
